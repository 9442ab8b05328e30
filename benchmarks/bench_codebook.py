"""codebook (MORPHEUS) costs (issue 13): training step time against finetune at the same decoder
size, batch and data, and the codebook initialisation's time on 10,000 segments.

Step time: `finetune/tiny` (persona in the prompt, as the demo's baseline, and without) and the
codebook's joint stage (`codebook/tiny`, no persona in the prompt; its extra work is the persona
segments' pass through the frozen encoder copy, the prefix-free history pass for code prediction,
and the quantiser), each for the same number of steps on the demo corpus, seconds per step after
the first 10. EM / k-means: synthetic encodings (clusters in D = 128, the tiny decoder's width, and
D = 768, GPT-2 small's) with N = 100 codes.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

STEPS = 60


def _step_seconds(run_dir: Path) -> float:
    """Seconds per optimizer step between the first and the last train log record."""
    recs = [
        json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()
    ]
    train = [r for r in recs if r.get("split") == "train"]
    first, last = train[0], train[-1]
    return (last["elapsed_s"] - first["elapsed_s"]) / max(last["step"] - first["step"], 1)


def _steps(quick: bool) -> dict[str, Any]:
    from personadlg.config import load_recipe
    from personadlg.training.trainer import train

    steps = 20 if quick else STEPS
    common = [f"train.max_steps={steps}", "train.log_every=10", "train.eval_every=0"]
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pdlg-bench-codebook-") as tmp:
        d = Path(tmp)
        for name, recipe, extra in (
            ("finetune (persona in prompt)", "finetune/tiny", []),
            ("finetune (no persona)", "finetune/tiny", ["model.persona_in_prompt=false"]),
            (
                "codebook joint stage",
                "codebook/tiny",
                ["model.stages=[joint]", f"model.stage_train.joint.max_steps={steps}"],
            ),
        ):
            run = d / name.split()[0] / str(len(out))
            t = time.perf_counter()
            train(load_recipe(recipe, [f"train.output_dir={run}", *common, *extra]))
            out[name] = {"s_per_step": _step_seconds(run), "wall_s": time.perf_counter() - t}
    base = out["finetune (no persona)"]["s_per_step"]
    for v in out.values():
        v["ratio"] = v["s_per_step"] / base
    return out


def _init_times(quick: bool) -> list[dict[str, Any]]:
    import torch

    from personadlg.models.codebook.init import init_codebook

    rows = []
    g = torch.Generator().manual_seed(0)
    for d in (128, 768):
        centres = torch.randn(50, d, generator=g) * 3
        x = centres[torch.randint(0, 50, (10_000,), generator=g)] + torch.randn(
            10_000, d, generator=g
        )
        for method in ("em", "kmeans"):
            if quick and d == 768 and method == "kmeans":
                continue
            t = time.perf_counter()
            _, rep = init_codebook(x, 100, method=method, seed=0)
            rows.append(
                {
                    "dim": d,
                    "method": method,
                    "seconds": time.perf_counter() - t,
                    "iterations": rep.iterations,
                    "converged": rep.converged,
                    "used": rep.used,
                    "usage_ppl": rep.usage_perplexity,
                }
            )
    return rows


def _probe_demo(quick: bool) -> dict[str, Any] | None:
    """The code-prediction probe (`_code_probe.py`) on the demo corpus: the demo's split (seed 0),
    its MiniLM chain (finetune/minilm, then codebook/minilm starting from that decoder), probed on
    the train split's examples and scored on the test split's."""
    from benchmarks._code_probe import probe
    from personadlg.assets import demo_corpus
    from personadlg.config import load_recipe
    from personadlg.data.split import split
    from personadlg.demo import DEMO_STEPS, MINILM, minilm_chain
    from personadlg.models.loading import bundled_dir
    from personadlg.training.trainer import train

    if bundled_dir(MINILM) is None:
        return None
    with tempfile.TemporaryDirectory(prefix="pdlg-bench-codebook-probe-") as tmp:
        d = Path(tmp)
        split(demo_corpus(), out_dir=d / "data", valid=0.1, test=0.1, by="dialogue", seed=0)
        tr, va, te = (d / "data" / f"{s}.jsonl" for s in ("train", "valid", "test"))
        data = [f"data.train={tr}", f"data.valid={va}"]
        chain = minilm_chain(d / "finetune")
        if quick:
            chain = {k: [*v, "train.max_steps=4"] for k, v in chain.items()}
        train(
            load_recipe(
                "finetune/minilm", [*data, f"train.output_dir={d / 'finetune'}", *chain["finetune"]]
            )
        )
        res = train(
            load_recipe(
                "codebook/minilm", [*data, f"train.output_dir={d / 'codebook'}", *chain["codebook"]]
            )
        )
        out = probe(res.final_dir, tr, te)
        out["steps"] = {
            "finetune": DEMO_STEPS["finetune"],
            "codebook per stage": DEMO_STEPS["codebook"],
        }
        out["own_predictor_valid"] = {
            k: res.last_valid.get(k) for k in ("code_acc", "code_acc_majority", "codes_used")
        }
        return out


def run(quick: bool = False) -> dict[str, Any]:
    return {
        "steps": _steps(quick),
        "init": _init_times(quick),
        "threads": _threads(),
        "probe_demo": _probe_demo(quick),
    }


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def render(results: dict) -> list[tuple[str, list[str], list[list[object]]]]:
    s = results["steps"]
    return [
        (
            f"training step time, tiny decoder (2 layers, 128 dims), batch 8, demo corpus ({results['threads']} threads)",
            ["system", "s / step", "× finetune (no persona)"],
            [[k, f"{v['s_per_step']:.3f}", f"{v['ratio']:.2f}"] for k, v in s.items()],
        ),
        *(
            [
                (
                    "code prediction probe on the demo corpus (codebook-minilm of the demo's chain): the "
                    "same per-slot predictor on the decoder's history states or on all-MiniLM-L6-v2's "
                    "sentence embedding, accuracy % on the test split",
                    [
                        "decoder states",
                        "MiniLM embedding",
                        "best constant",
                        "train majority",
                        "train / test",
                        "the model's own predictor on valid (majority)",
                    ],
                    [
                        [
                            f"{p['acc_decoder_states']:.2f}",
                            f"{p['acc_minilm']:.2f}",
                            f"{p['best_constant']:.2f}",
                            f"{p['train_majority']:.2f}",
                            f"{p['train_examples']} / {p['test_examples']}",
                            f"{p['own_predictor_valid']['code_acc']:.1f} ({p['own_predictor_valid']['code_acc_majority']:.1f})",
                        ]
                    ],
                )
            ]
            if (p := results.get("probe_demo"))
            else []
        ),
        (
            "codebook initialisation: 10,000 segments (50 clusters) → 100 codes",
            ["dim", "method", "seconds", "iterations", "converged", "codes used", "usage ppl"],
            [
                [
                    r["dim"],
                    r["method"],
                    f"{r['seconds']:.2f}",
                    r["iterations"],
                    r["converged"],
                    r["used"],
                    f"{r['usage_ppl']:.1f}",
                ]
                for r in results["init"]
            ],
        ),
    ]


if __name__ == "__main__":
    print(json.dumps(run(quick=True), indent=2, default=str))
