"""Persona numbers on real data (issue 11): ConvAI2's validation set in ../shared/data.

- `split --by persona`: persona sentence sets, and the groups of personas that share sentences
  (overlap 1 = connected components, and overlap 2 for comparison), with the overlap of persona
  sentences between the resulting train and test splits;
- P-Co (stop words left out, and the papers' variant) and P-Co lift (own persona minus a seeded
  derangement of the other personas, 10 draws), with 95% bootstrap intervals, of
  (a) the constant reply "i .", (b) the gold replies, (c) a finetune baseline: the tiny GPT-2
  recipe with the persona in the prompt, trained from scratch on RCDG's 10,000 ConvAI2 training
  pairs (no pretrained LM installs offline), greedy, for every ConvAI2 validation response;
  plus the paired difference of the baseline from the gold replies.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from benchmarks._profile import SHARED


def run(quick: bool = False) -> dict[str, Any]:
    from personadlg.config import load_recipe
    from personadlg.data.convert import convert
    from personadlg.data.formats import FormatOptions
    from personadlg.data.formats.native import iter_examples
    from personadlg.data.jsonl import write_jsonl
    from personadlg.data.persona import normalize_sentence
    from personadlg.data.split import split
    from personadlg.generation.generate import generate_file
    from personadlg.metrics.compare import compare_files
    from personadlg.metrics.evaluate import evaluate_file
    from personadlg.metrics.options import EvalOptions
    from personadlg.training.trainer import train

    def read_jsonl(path: Path) -> list[dict[str, Any]]:
        return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]

    valid_txt = SHARED / "convai2" / "valid_self_original_no_cands.txt"
    if not valid_txt.is_file():
        return {"skipped": f"{valid_txt} is not present"}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pdlg-bench-persona-") as tmp:
        d = Path(tmp)
        valid = d / "convai2-valid.jsonl"
        convert(valid_txt, valid, fmt="parlai")
        groups = {}
        for k in (1, 2):
            rep = split(
                valid,
                out_dir=d / f"split-k{k}",
                by="persona",
                persona_overlap=k,
                valid=0.1,
                test=0.1,
            )
            sentences = {
                s: {
                    normalize_sentence(x)
                    for r in read_jsonl(d / f"split-k{k}" / f"{s}.jsonl")
                    for x in r["persona"]
                }
                for s in ("train", "test")
            }
            groups[k] = {
                "persona_sets": rep.persona_sets,
                "groups": rep.persona_sets - rep.groups_merged,
                "merged": rep.groups_merged,
                "dialogues": rep.dialogues,
                "shared_sentences_train_test": len(sentences["train"] & sentences["test"]),
            }
        results["split"] = groups

        examples = [ex for _, ex in iter_examples(valid)]
        if quick:
            examples = examples[:1500]
        base = [ex.to_dict() for ex in examples]

        def gen_file(name: str, texts: list[str]) -> Path:
            path = d / f"{name}.jsonl"
            write_jsonl(path, [{**r, "generation": t} for r, t in zip(base, texts)])
            return path

        files = {
            "constant 'i .'": gen_file("constant", ["i ." for _ in base]),
            "gold replies": gen_file("gold", [r["reference"] for r in base]),
        }

        rcdg = d / "rcdg-train.jsonl"
        convert(SHARED / "rcdg" / "per-train.txt", rcdg, fmt="rcdg", options=FormatOptions())
        steps = ["train.max_steps=300"] if quick else ["train.epochs=3"]
        res = train(
            load_recipe(
                "finetune/tiny",
                [
                    f"data.train={rcdg}",
                    "data.valid_fraction=0.05",
                    f"train.output_dir={d / 'baseline'}",
                    "train.batch_size=16",
                    "train.eval_every=0",
                    "model.tokenizer.vocab_size=4000",
                    *steps,
                ],
            )
        )
        results["baseline_train"] = {
            "steps": res.steps,
            "seconds": res.seconds,
            "valid_ppl": res.last_valid.get("ppl"),
        }
        inputs = d / "inputs.jsonl"
        write_jsonl(inputs, base)
        out = d / "baseline-gen.jsonl"
        g = generate_file(
            res.final_dir, inputs, out, overrides=["max_new_tokens=32", "batch_size=64"]
        )
        results["baseline_generate"] = {
            "responses": g["generated"],
            "responses_per_s": g["responses_per_s"],
        }
        files["finetune baseline (tiny GPT-2, persona in prompt)"] = out

        rows = {}
        for name, path in files.items():
            rep = evaluate_file(
                path,
                metrics=["p-co", "p-co-lift", "persona-copy", "dist-2", "bleu-1"],
                opts=EvalOptions(bootstrap=1000),
            )
            papers = evaluate_file(
                path,
                metrics=["p-co", "p-co-lift"],
                opts=EvalOptions(bootstrap=1000, p_co_stopwords="none"),
            )
            rows[name] = {
                **{
                    m: {"value": v["value"], "ci95": v.get("ci95")}
                    for m, v in rep["metrics"].items()
                },
                "p-co (papers)": {
                    "value": papers["metrics"]["p-co"]["value"],
                    "ci95": papers["metrics"]["p-co"].get("ci95"),
                },
                "p-co-lift (papers)": {
                    "value": papers["metrics"]["p-co-lift"]["value"],
                    "ci95": papers["metrics"]["p-co-lift"].get("ci95"),
                },
            }
        results["n"] = len(base)
        results["rows"] = rows
        comp = compare_files(
            [files["gold replies"], out],
            metrics=["p-co", "p-co-lift", "dist-2", "bleu-1"],
            opts=EvalOptions(bootstrap=1000),
        )
        results["baseline_vs_gold"] = next(iter(comp["comparisons"]["vs_base"].values()))
    return results


def _ci(m: dict[str, Any]) -> str:
    ci = m.get("ci95")
    return f"{m['value']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{m['value']:.2f}"


def render(results: dict) -> list[tuple[str, list[str], list[list[object]]]]:
    if "skipped" in results:
        return [("persona (ConvAI2)", ["skipped"], [[results["skipped"]]])]
    tables = []
    tables.append(
        (
            "ConvAI2 validation: split --by persona (valid 0.1, test 0.1, seed 0)",
            [
                "--persona-overlap",
                "persona sets",
                "groups",
                "merged",
                "dialogues train/valid/test",
                "persona sentences shared train/test",
            ],
            [
                [
                    k,
                    g["persona_sets"],
                    g["groups"],
                    g["merged"],
                    "/".join(str(g["dialogues"][s]) for s in ("train", "valid", "test")),
                    g["shared_sentences_train_test"],
                ]
                for k, g in results["split"].items()
            ],
        )
    )
    cols = [
        "p-co",
        "p-co-lift",
        "p-co (papers)",
        "p-co-lift (papers)",
        "persona-copy",
        "dist-2",
        "bleu-1",
    ]
    tables.append(
        (
            f"P-Co and its lift on the {results['n']:,} ConvAI2 validation responses (value [95% CI])",
            ["system", *cols],
            [[name, *[_ci(r[c]) for c in cols]] for name, r in results["rows"].items()],
        )
    )
    comp = results["baseline_vs_gold"]
    tables.append(
        (
            "finetune baseline minus gold replies (paired, same examples)",
            ["metric", "difference", "95% CI", "p"],
            [
                [
                    m,
                    f"{d['diff']:+.2f}",
                    f"[{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]",
                    f"{d['p']:.4f}",
                ]
                for m, d in comp.items()
            ],
        )
    )
    t = results["baseline_train"]
    tables.append(
        (
            "the baseline",
            ["steps", "train seconds", "valid ppl", "responses/s"],
            [
                [
                    t["steps"],
                    f"{t['seconds']:.0f}",
                    f"{t['valid_ppl']:.1f}",
                    f"{results['baseline_generate']['responses_per_s']:.0f}",
                ]
            ],
        )
    )
    return tables
