"""Unseen roles on ConvAI2 (issues 13, 23): codebook (MORPHEUS) against finetune, same size and steps,
with a decoder from scratch and with all-MiniLM-L6-v2 warm-started.

Train on RCDG's 10,000 ConvAI2 training pairs (../shared/data/rcdg), test on the first 250 ConvAI2 (cpu-short: 100)
validation dialogues (../shared/data/convai2), after checking that no validation persona's sentence
set occurs in training. Two arms, each its own decoder for every system, the same data, seed and
number of training examples:
  - `scratch`: `codebook/small`'s decoder (a 4-layer, 256-dim GPT-2 from scratch, its own 8k
    tokenizer), 1,200 optimizer steps of batch 8 per system;
  - `minilm`: all-MiniLM-L6-v2 warm-started as the decoder (`*/minilm` recipes; the codebook's persona
    and history encoders are the frozen MiniLM), 600 steps of batch 16 per system (cpu-short: 150).
Systems: finetune without persona; finetune with the persona in the prompt (the oracle with text);
codebook (no persona text at inference: codes predicted from the history; its steps split between
role awareness, a third, and joint training); codebook with oracle codes. Every system decodes the
test turns greedily (no repeated trigrams) and with top-p sampling (0.9, temperature 0.8,
per-example seeds). Metrics with 95% intervals, `eval --compare` paired intervals against finetune
without persona, and the code-prediction probe (`_code_probe.py`: the decoder's states against
MiniLM's sentence embeddings as what the predictor reads) on each arm's codebook.

    python benchmarks/run.py --only convai2                 # both arms
    PDLG_BENCH_ARMS=minilm python benchmarks/run.py --only convai2
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from benchmarks._profile import DECODINGS, PROFILES, SHARED, Profile, current

METRICS = ["bleu-1", "bleu-2", "rouge-l", "dist-1", "dist-2", "sbleu", "p-co", "p-co-lift"]
PAPER = {"MORPHEUS": {"bleu-1": 12.67, "p-co": 11.64}, "GPT-2": {"bleu-1": 6.50, "p-co": 4.59}}
ARMS = ("scratch", "minilm")


def _decoder_overrides(recipe_cfg: Any) -> str:
    conf = recipe_cfg.model.decoder_from_config
    return "{" + ", ".join(f"{k}: {v}" for k, v in conf.items()) + "}"


def _arm_recipes(arm: str, tr: Path, prof: Profile) -> dict[str, Any]:
    """(recipe, overrides) of finetune and codebook in ARM, and the arm's step count."""
    from personadlg.config import load_recipe

    if arm == "scratch":
        small = load_recipe("codebook/small", [f"data.train={tr}"])
        shape = [
            f"model.from_config={_decoder_overrides(small)}",
            f"model.tokenizer.vocab_size={small.model.tokenizer.vocab_size}",
            f"model.max_length={small.model.max_length}",
            f"model.max_response_tokens={small.model.max_response_tokens}",
            f"train.batch_size={small.train.batch_size}",
            f"train.lr={small.train.lr}",
            f"train.warmup_ratio={small.train.warmup_ratio}",
        ]
        return {
            "finetune": ("finetune/tiny", shape),
            "codebook": ("codebook/small", []),
            "steps": prof.scratch_steps,
        }
    # minilm (cpu: half the steps at twice the batch, the same examples); ConvAI2 is lowercase
    common = [
        "model.tokenizer.truecase=false",
        "model.max_length=128",
        "model.max_response_tokens=48",
        f"train.batch_size={prof.minilm_batch}",
        "train.lr=3.0e-4",
        "train.warmup_ratio=0.05",
        *prof.train,
    ]
    return {
        "finetune": ("finetune/minilm", common),
        "codebook": ("codebook/minilm", [*common, "model.n_codes=100", "model.slots=5"]),
        "steps": prof.minilm_steps,
    }


def _run_arm(arm: str, d: Path, tr: Path, inputs: Path, prof: Profile) -> dict[str, Any]:
    from benchmarks._code_probe import probe
    from personadlg.config import load_recipe
    from personadlg.generation.generate import generate_file
    from personadlg.metrics.compare import compare_files
    from personadlg.metrics.evaluate import evaluate_file
    from personadlg.metrics.options import EvalOptions
    from personadlg.training.trainer import train

    spec = _arm_recipes(arm, tr, prof)
    n = spec["steps"]
    # validation = the test inputs (unseen personas): perplexity and code accuracy on them
    common = [
        f"data.train={tr}",
        f"data.valid={inputs}",
        "train.eval_every=0",
        "train.log_every=50",
    ]
    runs: dict[str, Any] = {}
    ft_recipe, ft_over = spec["finetune"]
    for name, extra in (
        ("finetune (no persona)", ["model.persona_in_prompt=false"]),
        ("finetune (persona in prompt)", ["model.persona_in_prompt=true"]),
    ):
        runs[name] = train(
            load_recipe(
                ft_recipe,
                [
                    *common,
                    *ft_over,
                    *extra,
                    f"train.max_steps={n}",
                    f"train.output_dir={d / 'finetune' / str(len(runs))}",
                ],
            )
        )
    cb_recipe, cb_over = spec["codebook"]
    role = n // 3
    cres = train(
        load_recipe(
            cb_recipe,
            [
                *common,
                *cb_over,
                f"model.stage_train={{role: {{max_steps: {role}}}, joint: {{max_steps: {n - role}}}}}",
                f"train.output_dir={d / 'codebook'}",
            ],
        )
    )
    runs["codebook"] = cres
    out: dict[str, Any] = {"steps": n}
    train_info = {
        k: {"steps": r.steps, "seconds": r.seconds, "valid": r.last_valid} for k, r in runs.items()
    }
    train_info["codebook"]["stage_seconds"] = [s.seconds for s in cres.stages]
    train_info["codebook"]["stage_steps"] = [s.steps for s in cres.stages]
    out["train"] = train_info
    opts = EvalOptions(bootstrap=1000)
    out["decodings"] = {}
    for dec_name, decoding in DECODINGS.items():
        dec = [*decoding, f"batch_size={prof.gen_batch}"]
        files: dict[str, Path] = {}
        for name, r in runs.items():
            path = d / f"{arm}-{dec_name}-{len(files)}.jsonl"
            generate_file(r.final_dir, inputs, path, overrides=dec)
            files[name] = path
        oracle = d / f"{arm}-{dec_name}-oracle.jsonl"
        generate_file(cres.final_dir, inputs, oracle, overrides=[*dec, "model.persona_mode=oracle"])
        files["codebook (oracle codes)"] = oracle
        rows = {
            name: {
                m: {"value": v["value"], "ci95": v.get("ci95")}
                for m, v in evaluate_file(path, metrics=METRICS, opts=opts)["metrics"].items()
            }
            for name, path in files.items()
        }
        distinct = {}
        for name, path in files.items():
            gens = [json.loads(x)["generation"] for x in path.read_text().splitlines() if x]
            distinct[name] = len(set(gens)) / max(1, len(gens))
        base = files["finetune (no persona)"]
        comp = compare_files(
            [base, *[p for name, p in files.items() if p != base]], metrics=METRICS, opts=opts
        )
        vs = comp["comparisons"]["vs_base"]
        oracle_vs = compare_files([files["codebook"], oracle], metrics=METRICS, opts=opts)
        out["decodings"][dec_name] = {
            "rows": rows,
            "distinct_generations": distinct,
            "vs_finetune_no_persona": {
                name: vs[str(p)] for name, p in files.items() if str(p) in vs
            },
            "oracle_vs_predicted": oracle_vs["comparisons"]["vs_base"][str(oracle)],
            "n": sum(1 for x in base.read_text().splitlines() if x),
        }
    out["probe"] = probe(cres.final_dir, tr, inputs, max_train=200 if prof.name == "tiny" else 4000)
    return out


def run(quick: bool = False) -> dict[str, Any]:
    from personadlg.data.convert import convert
    from personadlg.data.formats import FormatOptions
    from personadlg.data.formats.native import iter_examples
    from personadlg.data.persona import persona_identity
    from personadlg.models.loading import bundled_dir

    valid_txt = SHARED / "convai2" / "valid_self_original_no_cands.txt"
    train_txt = SHARED / "rcdg" / "per-train.txt"
    if not valid_txt.is_file() or not train_txt.is_file():
        return {"skipped": f"{valid_txt} or {train_txt} is not present"}
    arms = [a for a in os.environ.get("PDLG_BENCH_ARMS", ",".join(ARMS)).split(",") if a]
    if "minilm" in arms and bundled_dir("sentence-transformers/all-MiniLM-L6-v2") is None:
        arms.remove("minilm")  # the code probe and the minilm arm need the model
    prof = PROFILES["tiny"] if quick else current()
    results: dict[str, Any] = {"profile": prof.name, "arms": {}}
    with tempfile.TemporaryDirectory(prefix="pdlg-bench-convai2-") as tmp:
        d = Path(tmp)
        tr, va = d / "train.jsonl", d / "valid.jsonl"
        convert(train_txt, tr, fmt="rcdg", options=FormatOptions())
        convert(valid_txt, va, fmt="parlai")
        if prof.max_train_examples:
            kept = tr.read_text(encoding="utf-8").splitlines()[: prof.max_train_examples]
            tr.write_text("\n".join(kept) + "\n", encoding="utf-8")
        seen = {persona_identity(ex.persona) for _, ex in iter_examples(tr) if ex.persona}
        valid_sets = {persona_identity(ex.persona) for _, ex in iter_examples(va) if ex.persona}
        results["unseen_check"] = {
            "train_persona_sets": len(seen),
            "valid_persona_sets": len(valid_sets),
            "valid_sets_in_train": len(valid_sets & seen),
        }
        # the first DIALOGUES validation dialogues (all their turns): generation and validation
        lines = va.read_text(encoding="utf-8").splitlines()[: prof.dialogues]
        inputs = d / "valid-subset.jsonl"
        inputs.write_text("\n".join(lines) + "\n", encoding="utf-8")
        results["dialogues"] = len(lines)
        for arm in arms:
            results["arms"][arm] = _run_arm(arm, d / arm, tr, inputs, prof)
    return results


def _ci(m: dict[str, Any] | None) -> str:
    if not m or m.get("value") is None:
        return "-"
    ci = m.get("ci95")
    return f"{m['value']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{m['value']:.2f}"


DIAG = ["ppl", "code_acc", "code_acc_majority", "codes_used", "usage_ppl", "dead_codes", "vq_dist"]


def _num(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, float) else ("-" if v is None else str(v))


def _diff(m: dict[str, Any] | None) -> str:
    if not m or m.get("diff") is None:
        return "-"
    ci = m.get("ci95")
    return f"{m['diff']:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else f"{m['diff']:+.2f}"


def render(results: dict) -> list[tuple[str, list[str], list[list[object]]]]:
    if "skipped" in results:
        return [("ConvAI2 unseen roles", ["skipped"], [[results["skipped"]]])]
    u = results["unseen_check"]
    tables = [
        (
            "unseen roles: ConvAI2 validation persona sets found in the RCDG training data",
            ["train persona sets", "valid persona sets", "valid sets in train"],
            [[u["train_persona_sets"], u["valid_persona_sets"], u["valid_sets_in_train"]]],
        )
    ]
    arms = results["arms"]
    for dec_name in DECODINGS:
        rows: list[list[object]] = []
        diffs: list[list[object]] = []
        n = 0
        for arm, a in arms.items():
            r = a["decodings"][dec_name]
            n = r["n"]
            for name, row in r["rows"].items():
                rows.append(
                    [
                        f"{arm}: {name}",
                        *[_ci(row.get(m)) for m in METRICS],
                        f"{100 * r['distinct_generations'][name]:.1f}%",
                    ]
                )
            for name, row in r["vs_finetune_no_persona"].items():
                diffs.append([f"{arm}: {name}", *[_diff(row.get(m)) for m in METRICS]])
            diffs.append(
                [
                    f"{arm}: oracle codes vs predicted codes",
                    *[_diff(r["oracle_vs_predicted"].get(m)) for m in METRICS],
                ]
            )
        rows += [
            [f"paper: {k}", *[f"{v[m]:.2f}" if m in v else "" for m in METRICS], ""]
            for k, v in PAPER.items()
        ]
        tables.append(
            (
                f"ConvAI2 validation ({n:,} responses of the first {results['dialogues']} dialogues), "
                f"{dec_name}, 95% CI",
                ["system", *METRICS, "distinct gens"],
                rows,
            )
        )
        tables.append(
            (
                f"{dec_name}: paired differences against finetune (no persona) of the same arm, and "
                "oracle against predicted codes: mean [95% CI], paired bootstrap",
                ["system", *METRICS],
                diffs,
            )
        )
    tables.append(
        (
            "training: steps, seconds and validation diagnostics on the ConvAI2 validation inputs",
            ["system", "steps", "seconds", "s/step", *DIAG],
            [
                [
                    f"{arm}: {name}",
                    t["steps"],
                    f"{t['seconds']:.0f}",
                    f"{t['seconds'] / max(1, t['steps']):.2f}",
                    *[_num(t["valid"].get(k)) for k in DIAG],
                ]
                for arm, a in arms.items()
                for name, t in a["train"].items()
            ],
        )
    )
    tables.append(
        (
            "code prediction probe: the same per-slot predictor trained on the decoder's history "
            "states or on all-MiniLM-L6-v2's sentence embedding, accuracy % on the test turns",
            [
                "codebook of",
                "decoder states",
                "MiniLM embedding",
                "best constant",
                "train majority",
                "train / test",
            ],
            [
                [
                    arm,
                    f"{p['acc_decoder_states']:.2f}",
                    f"{p['acc_minilm']:.2f}",
                    f"{p['best_constant']:.2f}",
                    f"{p['train_majority']:.2f}",
                    f"{p['train_examples']} / {p['test_examples']}",
                ]
                for arm, a in arms.items()
                if (p := a.get("probe"))
            ],
        )
    )
    return tables
