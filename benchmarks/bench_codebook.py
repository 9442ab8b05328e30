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


def run(quick: bool = False) -> dict[str, Any]:
    return {"steps": _steps(quick), "init": _init_times(quick), "threads": _threads()}


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
