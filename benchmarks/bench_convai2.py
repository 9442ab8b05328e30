"""Unseen roles on ConvAI2 (issue 13): codebook (MORPHEUS) against finetune, same size and steps.

Train on RCDG's 10,000 ConvAI2 training pairs (../shared/data/rcdg), test on the ConvAI2
validation dialogues (../shared/data/convai2), after checking that no validation persona's sentence
set occurs in training. Every system uses the decoder of `codebook/small` (a 4-layer, 256-dim GPT-2
from scratch, its own 8k tokenizer) and the same number of optimizer steps on the same data:
  - finetune without persona; finetune with the persona in the prompt (the oracle with text);
  - codebook (no persona text at inference: codes predicted from the history), its steps split
    between role awareness (a third) and joint training; codebook with oracle codes.
Metrics with 95% intervals, and `eval --compare` paired intervals of each system against finetune
without persona.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
METRICS = ["bleu-1", "bleu-2", "rouge-l", "dist-1", "dist-2", "sbleu", "p-co", "p-co-lift"]
PAPER = {"MORPHEUS": {"bleu-1": 12.67, "p-co": 11.64}, "GPT-2": {"bleu-1": 6.50, "p-co": 4.59}}


def _decoder_overrides(recipe_cfg: Any) -> str:
    conf = recipe_cfg.model.decoder_from_config
    return "{" + ", ".join(f"{k}: {v}" for k, v in conf.items()) + "}"


def run(quick: bool = False, steps: int = 1200, dialogues: int = 250) -> dict[str, Any]:
    from personadlg.config import load_recipe
    from personadlg.data.convert import convert
    from personadlg.data.formats import FormatOptions
    from personadlg.data.formats.native import iter_examples
    from personadlg.data.persona import persona_identity
    from personadlg.generation.generate import generate_file
    from personadlg.metrics.catalog import EvalOptions
    from personadlg.metrics.evaluate import compare_files, evaluate_file
    from personadlg.training.trainer import train

    valid_txt = SHARED / "convai2" / "valid_self_original_no_cands.txt"
    train_txt = SHARED / "rcdg" / "per-train.txt"
    if not valid_txt.is_file() or not train_txt.is_file():
        return {"skipped": f"{valid_txt} or {train_txt} is not present"}
    steps, dialogues = (60, 30) if quick else (steps, dialogues)
    results: dict[str, Any] = {"steps": steps}
    with tempfile.TemporaryDirectory(prefix="pdlg-bench-convai2-") as tmp:
        d = Path(tmp)
        tr, va = d / "train.jsonl", d / "valid.jsonl"
        convert(train_txt, tr, fmt="rcdg", options=FormatOptions())
        convert(valid_txt, va, fmt="parlai")
        seen = {persona_identity(ex.persona) for _, ex in iter_examples(tr) if ex.persona}
        valid_sets = {persona_identity(ex.persona) for _, ex in iter_examples(va) if ex.persona}
        results["unseen_check"] = {
            "train_persona_sets": len(seen),
            "valid_persona_sets": len(valid_sets),
            "valid_sets_in_train": len(valid_sets & seen),
        }
        # the first DIALOGUES validation dialogues (all their turns): generation and validation
        lines = va.read_text(encoding="utf-8").splitlines()[:dialogues]
        inputs = d / "valid-subset.jsonl"
        inputs.write_text("\n".join(lines) + "\n", encoding="utf-8")
        results["dialogues"] = len(lines)
        small = load_recipe("codebook/small", [f"data.train={tr}"])
        decoder = _decoder_overrides(small)
        # validation = the test inputs (unseen personas): perplexity and code accuracy on them
        common = [f"data.train={tr}", f"data.valid={inputs}", "train.eval_every=0"]
        shape = [
            f"model.from_config={decoder}",
            f"model.tokenizer.vocab_size={small.model.tokenizer.vocab_size}",
            f"model.max_length={small.model.max_length}",
            f"model.max_response_tokens={small.model.max_response_tokens}",
            f"train.batch_size={small.train.batch_size}",
            f"train.lr={small.train.lr}",
            f"train.warmup_ratio={small.train.warmup_ratio}",
        ]
        runs: dict[str, Any] = {}
        for name, extra in (
            ("finetune (no persona)", ["model.persona_in_prompt=false"]),
            ("finetune (persona in prompt)", ["model.persona_in_prompt=true"]),
        ):
            res = train(
                load_recipe(
                    "finetune/tiny",
                    [
                        *common,
                        *shape,
                        *extra,
                        f"train.max_steps={steps}",
                        f"train.output_dir={d / name.split()[0] / str(len(runs))}",
                    ],
                )
            )
            runs[name] = res
        role = steps // 3
        cres = train(
            load_recipe(
                "codebook/small",
                [
                    *common,
                    f"model.stage_train={{role: {{max_steps: {role}}}, joint: {{max_steps: {steps - role}}}}}",
                    f"train.output_dir={d / 'codebook'}",
                ],
            )
        )
        runs["codebook"] = cres
        train_info = {
            k: {"steps": r.steps, "seconds": r.seconds, "valid": r.last_valid}
            for k, r in runs.items()
        }
        train_info["codebook"]["stage_seconds"] = [s.seconds for s in cres.stages]
        train_info["codebook"]["stage_steps"] = [s.steps for s in cres.stages]
        results["train"] = train_info
        dec = [
            "max_new_tokens=32",
            "batch_size=64",
            "no_repeat_ngram_size=3",
        ]  # greedy, as the recipe
        files: dict[str, Path] = {}
        for name, r in runs.items():
            out = d / f"{name.split()[0]}-{len(files)}.jsonl"
            generate_file(r.final_dir, inputs, out, overrides=dec)
            files[name] = out
        oracle = d / "codebook-oracle.jsonl"
        generate_file(cres.final_dir, inputs, oracle, overrides=[*dec, "model.persona_mode=oracle"])
        files["codebook (oracle codes)"] = oracle
        opts = EvalOptions(bootstrap=1000)
        results["rows"] = {
            name: {
                m: {"value": v["value"], "ci95": v.get("ci95")}
                for m, v in evaluate_file(path, metrics=METRICS, opts=opts)["metrics"].items()
            }
            for name, path in files.items()
        }
        results["distinct_generations"] = {
            name: len({json.loads(x)["generation"] for x in path.read_text().splitlines() if x})
            / max(1, sum(1 for x in path.read_text().splitlines() if x))
            for name, path in files.items()
        }
        base = files["finetune (no persona)"]
        comp = compare_files(
            [base, *[p for n, p in files.items() if p != base]], metrics=METRICS, opts=opts
        )
        vs = comp["comparisons"]["vs_base"]
        results["vs_finetune_no_persona"] = {
            name: vs[str(p)] for name, p in files.items() if str(p) in vs
        }
        results["n"] = sum(1 for x in base.read_text().splitlines() if x)
    return results


def _ci(m: dict[str, Any] | None) -> str:
    if not m or m.get("value") is None:
        return "-"
    ci = m.get("ci95")
    return f"{m['value']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{m['value']:.2f}"


DIAG = ["ppl", "code_acc", "code_acc_majority", "codes_used", "usage_ppl", "dead_codes", "vq_dist"]


def _num(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, float) else ("-" if v is None else str(v))


def render(results: dict) -> list[tuple[str, list[str], list[list[object]]]]:
    if "skipped" in results:
        return [("ConvAI2 unseen roles", ["skipped"], [[results["skipped"]]])]
    u = results["unseen_check"]
    tables = [
        (
            "unseen roles: ConvAI2 validation persona sets found in the RCDG training data",
            ["train persona sets", "valid persona sets", "valid sets in train"],
            [[u["train_persona_sets"], u["valid_persona_sets"], u["valid_sets_in_train"]]],
        ),
        (
            f"ConvAI2 validation ({results['n']:,} responses of the first {results['dialogues']} dialogues), "
            f"{results['steps']:,} steps per system, greedy, 95% CI",
            ["system", *METRICS, "distinct gens"],
            [
                [
                    name,
                    *[_ci(row.get(m)) for m in METRICS],
                    f"{100 * results['distinct_generations'][name]:.1f}%",
                ]
                for name, row in results["rows"].items()
            ]
            + [
                [f"paper: {k}", *[f"{v[m]:.2f}" if m in v else "" for m in METRICS], ""]
                for k, v in PAPER.items()
            ],
        ),
        (
            "training: steps, seconds and validation diagnostics on the ConvAI2 validation inputs",
            ["system", "steps", "seconds", "s/step", *DIAG],
            [
                [
                    name,
                    t["steps"],
                    f"{t['seconds']:.0f}",
                    f"{t['seconds'] / max(1, t['steps']):.2f}",
                    *[_num(t["valid"].get(k)) for k in DIAG],
                ]
                for name, t in results["train"].items()
            ],
        ),
        (
            "paired differences against finetune (no persona): mean [95% CI], paired bootstrap",
            ["system", *METRICS],
            [
                [name, *[_diff(row.get(m)) for m in METRICS]]
                for name, row in results["vs_finetune_no_persona"].items()
            ],
        ),
    ]
    return tables


def _diff(m: dict[str, Any] | None) -> str:
    if not m or m.get("diff") is None:
        return "-"
    ci = m.get("ci95")
    return f"{m['diff']:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else f"{m['diff']:+.2f}"
