"""cvae controllability over three seeds of the split (issue 11), with judges whose accuracy is known.

For each split seed (by dialogue: valid 0.1, test 0.2 of the demo corpus):
  - one attribute classifier per attribute, fine-tuned from all-MiniLM-L6-v2 when it is installed
    (else the tiny ones), trained on the train split; their accuracy is measured on the valid
    split's dialogues, which they never saw;
  - `cvae/tiny` trained on the train split;
  - guidance_scale chosen on the valid split (all 8 combinations; the scale with the best
    personalization accuracy), then the test split scored once with it: the 6 single-attribute
    targets and the 8 three-attribute combinations, ODE-guided and `--no-guidance`.
Reported: per seed, and mean ± standard deviation over the seeds.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

ATTRS = ("language_style", "attitude", "mental_characteristics")
SEEDS = (0, 1, 2)
SCALES = (1.0, 2.0, 4.0, 8.0)


def _acc(path: Path, classifiers: dict[str, str]) -> dict[str, Any]:
    from personadlg.metrics.catalog import EvalOptions
    from personadlg.metrics.evaluate import evaluate_file

    m = evaluate_file(
        path, metrics=["personalization-acc"], opts=EvalOptions(classifiers=classifiers)
    )
    acc = m["metrics"]["personalization-acc"]
    return {"acc": acc["value"], "ci95": acc.get("ci95"), "by_attribute": acc["by_attribute"]}


def _one_seed(seed: int, d: Path, quick: bool) -> dict[str, Any]:
    from personadlg.assets import demo_corpus
    from personadlg.config import load_recipe
    from personadlg.data.split import split
    from personadlg.demo import default_classifier_recipe
    from personadlg.generation.generate import generate_file
    from personadlg.training.checkpoint import load_checkpoint
    from personadlg.training.trainer import train

    split(demo_corpus(), out_dir=d / "data", valid=0.1, test=0.2, by="dialogue", seed=seed)
    tr, va, te = (d / "data" / f"{s}.jsonl" for s in ("train", "valid", "test"))
    judge_recipe = default_classifier_recipe()
    steps = ["train.max_steps=30"] if quick else []
    classifiers, judges = {}, {}
    for attr in ATTRS:
        c = train(
            load_recipe(
                judge_recipe,
                [
                    f"data.train={tr}",
                    f"data.valid={va}",
                    "data.valid_fraction=0",
                    f"data.attribute={attr}",
                    f"train.output_dir={d / 'cls' / attr}",
                    *steps,
                ],
            )
        )
        classifiers[attr] = str(c.final_dir)
        judges[attr] = {
            k: c.last_valid.get(k)
            for k in ("accuracy", "n", "accuracy_ci95_lo", "accuracy_ci95_hi")
        }
    cres = train(
        load_recipe(
            "cvae/tiny",
            [
                f"data.train={tr}",
                f"data.valid={va}",
                f"train.output_dir={d / 'cvae'}",
                *(["train.max_steps=60"] if quick else []),
            ],
        )
    )
    ck = cres.final_dir
    loaded = load_checkpoint(ck)

    def gen(inp: Path, name: str, **kw: Any) -> Path:
        out = d / f"{name}.jsonl"
        generate_file(ck, inp, out, loaded=loaded, overwrite=True, **kw)
        return out

    sweep = {}
    for scale in SCALES[:2] if quick else SCALES:
        out = gen(
            va, f"valid-{scale}", combinations=True, overrides=[f"model.ode.guidance_scale={scale}"]
        )
        sweep[scale] = _acc(out, classifiers)["acc"]
    best = max(sweep, key=lambda s: sweep[s])
    space = loaded[0].data.attributes
    test: dict[str, Any] = {}
    for mode, over in (
        ("guided", [f"model.ode.guidance_scale={best}"]),
        ("unguided", ["model.ode.guidance_scale=0"]),
    ):
        singles = {}
        for attr in ATTRS:
            for aspect in space[attr]:
                out = gen(
                    te, f"single-{mode}-{attr}-{aspect}", targets={attr: aspect}, overrides=over
                )
                singles[f"{attr}={aspect}"] = _acc(out, classifiers)["acc"]
        combos = _acc(gen(te, f"combos-{mode}", combinations=True, overrides=over), classifiers)
        test[mode] = {
            "single": singles,
            "single_mean": statistics.mean(singles.values()),
            "combos": combos,
        }
    return {
        "seed": seed,
        "judges": judges,
        "judge_recipe": judge_recipe,
        "sweep_valid": sweep,
        "chosen_scale": best,
        "test": test,
        "test_examples": sum(1 for _ in te.read_text().splitlines()),
    }


def run(quick: bool = False) -> dict[str, Any]:
    runs = []
    for seed in SEEDS[:1] if quick else SEEDS:
        with tempfile.TemporaryDirectory(prefix=f"pdlg-bench-cvae-seed{seed}-") as tmp:
            runs.append(_one_seed(seed, Path(tmp), quick))

    def spread(values: list[float]) -> dict[str, float]:
        return {
            "mean": statistics.mean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values),
            "max": max(values),
        }

    summary: dict[str, Any] = {}
    for mode in ("guided", "unguided"):
        summary[mode] = {
            "single": spread([r["test"][mode]["single_mean"] for r in runs]),
            "combos": spread([r["test"][mode]["combos"]["acc"] for r in runs]),
            **{
                f"combos_{a}": spread([r["test"][mode]["combos"]["by_attribute"][a] for r in runs])
                for a in ATTRS
            },
        }
    summary["judges"] = {a: spread([r["judges"][a]["accuracy"] for r in runs]) for a in ATTRS}
    return {"runs": runs, "summary": summary}


def render(results: dict) -> list[tuple[str, list[str], list[list[object]]]]:
    runs, s = results["runs"], results["summary"]
    tables = []
    tables.append(
        (
            f"judges ({runs[0]['judge_recipe']}): accuracy on the valid split's dialogues [95% CI] (n)",
            ["seed", *ATTRS],
            [
                [
                    r["seed"],
                    *[
                        f"{r['judges'][a]['accuracy']:.1f} [{r['judges'][a]['accuracy_ci95_lo']:.1f}, {r['judges'][a]['accuracy_ci95_hi']:.1f}] ({r['judges'][a]['n']})"
                        for a in ATTRS
                    ],
                ]
                for r in runs
            ],
        )
    )
    tables.append(
        (
            "cvae/tiny personalization-acc on the test split (guidance_scale chosen on valid)",
            [
                "seed",
                "scale (valid acc)",
                "single: guided",
                "single: unguided",
                "8 combos: guided",
                "8 combos: unguided",
                "test dialogues",
            ],
            [
                [
                    r["seed"],
                    f"{r['chosen_scale']:g} ({r['sweep_valid'][r['chosen_scale']]:.1f})",
                    f"{r['test']['guided']['single_mean']:.1f}",
                    f"{r['test']['unguided']['single_mean']:.1f}",
                    f"{r['test']['guided']['combos']['acc']:.1f}",
                    f"{r['test']['unguided']['combos']['acc']:.1f}",
                    r["test_examples"],
                ]
                for r in runs
            ]
            + [
                [
                    "mean ± sd",
                    "",
                    f"{s['guided']['single']['mean']:.1f} ± {s['guided']['single']['sd']:.1f}",
                    f"{s['unguided']['single']['mean']:.1f} ± {s['unguided']['single']['sd']:.1f}",
                    f"{s['guided']['combos']['mean']:.1f} ± {s['guided']['combos']['sd']:.1f}",
                    f"{s['unguided']['combos']['mean']:.1f} ± {s['unguided']['combos']['sd']:.1f}",
                    "",
                ]
            ],
        )
    )
    tables.append(
        (
            "8 combinations, accuracy per attribute (mean ± sd over seeds): guided / unguided",
            list(ATTRS),
            [
                [
                    f"{s['guided'][f'combos_{a}']['mean']:.1f} ± {s['guided'][f'combos_{a}']['sd']:.1f} / {s['unguided'][f'combos_{a}']['mean']:.1f} ± {s['unguided'][f'combos_{a}']['sd']:.1f}"
                    for a in ATTRS
                ]
            ],
        )
    )
    return tables
