"""The cvae method (issue 6) on the demo corpus: controllability, the guidance-scale sweep, the
ODE's cost, and training step time against finetune.

Split by dialogue (80/10/10, seed 0, as `make demo`); three tiny attribute classifiers trained on
the train split only; `cvae/tiny` trained on the train split (valid for diagnostics); every
generation on the test split (126 examples):
  - single-attribute targets (each of the 6 aspects alone) and all 8 three-attribute combinations,
    ODE-guided and `--no-guidance`; personalization accuracy per attribute;
  - a guidance_scale sweep over all 8 combinations on the valid split (where defaults are chosen;
    the test split is scored once): accuracy, Dist-2, self-BLEU, NFE, ODE share;
  - seconds per optimizer step of cvae/tiny and finetune/tiny (the same 2-layer GPT-2 decoder,
    batch 8) over the same steps.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

ATTRS = ("language_style", "attitude", "mental_characteristics")
SCALES = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def _seconds_per_step(run_dir: Path) -> float:
    """Mean seconds per optimizer step between the first and the last log line (start-up excluded)."""
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    train = [r for r in rows if r.get("split") == "train"]
    a, b = train[0], train[-1]
    return (b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"])


def _accuracy(path: Path, classifiers: dict[str, str], lm: str | None = None) -> dict[str, Any]:
    from personadlg.metrics.evaluate import evaluate_file
    from personadlg.metrics.options import EvalOptions

    rep = evaluate_file(
        path,
        metrics=["personalization-acc", "dist-2", "sbleu", *(["ppl"] if lm else [])],
        opts=EvalOptions(classifiers=classifiers, lm=lm),
        by_target=True,
    )
    m = rep["metrics"]
    return {
        "acc": m["personalization-acc"]["value"],
        "by_attribute": m["personalization-acc"]["by_attribute"],
        "dist2": m["dist-2"]["value"],
        "sbleu": m["sbleu"]["value"],
        "ppl": m["ppl"]["value"] if lm else None,
        "report": rep,
    }


def _generate(loaded: Any, ck: Path, test: Path, out: Path, **kw: Any) -> dict[str, Any]:
    from personadlg.generation.generate import generate_file

    out.unlink(missing_ok=True)
    s = generate_file(ck, test, out, loaded=loaded, **kw)
    stages = s.get("stage_seconds", {})
    return {
        "generated": s["generated"],
        "seconds": s["seconds"],
        "responses_per_s": s["responses_per_s"],
        "nfe": s["decoding"].get("latent", {}).get("nfe", 0),
        "stage_seconds": stages,
        "ode_share": stages.get("ode", 0.0) / max(sum(stages.values()), 1e-9),
    }


def run(quick: bool = False) -> dict[str, Any]:
    from personadlg.assets import demo_corpus
    from personadlg.config import load_recipe
    from personadlg.data.split import split
    from personadlg.training.checkpoint import load_checkpoint
    from personadlg.training.trainer import train

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pdlg-bench-cvae-") as tmp:
        d = Path(tmp)
        split(demo_corpus(), out_dir=d / "data", valid=0.1, test=0.1, by="dialogue", seed=0)
        tr, va, te = (d / "data" / f"{s}.jsonl" for s in ("train", "valid", "test"))

        classifiers = {}
        for attr in ATTRS:
            cres = train(
                load_recipe(
                    "classifier/attribute-tiny",
                    [
                        f"data.train={tr}",
                        f"data.attribute={attr}",
                        f"train.output_dir={d / 'cls' / attr}",
                    ],
                )
            )
            classifiers[attr] = str(cres.final_dir)
            results.setdefault("classifiers", {})[attr] = cres.last_valid.get("accuracy")

        extra = ["train.max_steps=150"] if quick else []
        # The fluency judge: finetune/tiny (the same decoder, trained as a plain LM on the train split).
        judge = train(
            load_recipe(
                "finetune/tiny",
                [f"data.train={tr}", f"data.valid={va}", f"train.output_dir={d / 'judge'}", *extra],
            )
        )
        lm = str(judge.final_dir)
        results["judge"] = {"valid_ppl": judge.last_valid.get("ppl")}
        cres = train(
            load_recipe(
                "cvae/tiny",
                [f"data.train={tr}", f"data.valid={va}", f"train.output_dir={d / 'cvae'}", *extra],
            )
        )
        results["train"] = {
            "steps": cres.steps,
            "seconds": cres.seconds,
            "valid": {k: v for k, v in cres.last_valid.items() if isinstance(v, float)},
        }

        steps = 60 if quick else 150
        timing = {}
        runs = {
            "finetune": ("finetune/tiny", []),
            "cvae": ("cvae/tiny", []),
            "cvae_ctx": ("cvae/tiny", ["model.decoder_sees_context=true"]),
        }
        for name, (recipe, extra_over) in runs.items():
            run_dir = d / f"steps-{name}"
            train(
                load_recipe(
                    recipe,
                    [
                        f"data.train={tr}",
                        "data.valid=null",
                        "data.valid_fraction=0",
                        f"train.output_dir={run_dir}",
                        f"train.max_steps={steps}",
                        "train.batch_size=8",
                        "train.log_every=10",
                        *extra_over,
                    ],
                )
            )
            timing[name] = _seconds_per_step(run_dir)
        results["step_time"] = {
            "steps": steps,
            "batch_size": 8,
            "finetune_s": timing["finetune"],
            "cvae_s": timing["cvae"],
            "cvae_ctx_s": timing["cvae_ctx"],
            "ratio": timing["cvae"] / timing["finetune"],
            "ratio_ctx": timing["cvae_ctx"] / timing["finetune"],
        }

        ck = cres.final_dir
        loaded = load_checkpoint(ck)
        cfg = loaded[0]
        space = cfg.data.attributes
        default_scale = cfg.model.ode.guidance_scale
        singles: dict[str, Any] = {}
        for mode, over in (("guided", []), ("unguided", ["model.ode.guidance_scale=0"])):
            rows = {}
            for attr in ATTRS:
                for aspect in space[attr]:
                    out = d / f"single-{mode}-{attr}-{aspect}.jsonl"
                    g = _generate(loaded, ck, te, out, targets={attr: aspect}, overrides=over)
                    a = _accuracy(out, classifiers)
                    rows[f"{attr}={aspect}"] = {"acc": a["acc"], **g}
            singles[mode] = rows
        results["single"] = {
            mode: {k: v["acc"] for k, v in rows.items()} for mode, rows in singles.items()
        }
        results["single_mean"] = {
            mode: statistics.mean(v["acc"] for v in rows.values()) for mode, rows in singles.items()
        }

        from personadlg.metrics.matrix import controllability_matrix

        combos = {}
        for mode, over in (("guided", []), ("unguided", ["model.ode.guidance_scale=0"])):
            out = d / f"combos-{mode}.jsonl"
            g = _generate(loaded, ck, te, out, combinations=True, overrides=over)
            a = _accuracy(out, classifiers, lm)
            _attrs, rows = controllability_matrix(a["report"])
            combos[mode] = {
                "acc": a["acc"],
                "by_attribute": a["by_attribute"],
                "dist2": a["dist2"],
                "sbleu": a["sbleu"],
                "ppl": a["ppl"],
                "matrix": [
                    {"target": key, **{k: v for k, v in vals.items()}, "mean": mean}
                    for key, _, vals, mean in rows
                ],
                **g,
            }
        results["combinations"] = combos

        sweep = []  # on the valid split: a default is chosen there, the test split is scored once
        for scale in SCALES[:4] if quick else SCALES:
            out = d / f"sweep-{scale}.jsonl"
            g = _generate(
                loaded,
                ck,
                va,
                out,
                combinations=True,
                overrides=[f"model.ode.guidance_scale={scale}"],
            )
            a = _accuracy(out, classifiers, lm)
            sweep.append(
                {
                    "guidance_scale": scale,
                    "acc": a["acc"],
                    "by_attribute": a["by_attribute"],
                    "dist2": a["dist2"],
                    "sbleu": a["sbleu"],
                    "ppl": a["ppl"],
                    "nfe": g["nfe"],
                    "ode_share": g["ode_share"],
                    "responses_per_s": g["responses_per_s"],
                }
            )
        results["sweep"] = {"default": default_scale, "rows": sweep}
    return results


def render(results: dict) -> list[tuple[str, list[str], list[list[object]]]]:
    tables = []
    t = results["train"]
    v = t["valid"]
    tables.append(
        (
            "cvae/tiny on the demo train split",
            [
                "steps",
                "seconds",
                "ppl (posterior z)",
                "ppl (prior mean)",
                "active units",
                *[f"head acc {a}" for a in ATTRS],
            ],
            [
                [
                    t["steps"],
                    f"{t['seconds']:.0f}",
                    f"{v.get('ppl', float('nan')):.1f}",
                    f"{v.get('ppl_prior', float('nan')):.1f}",
                    int(v.get("active_units", 0)),
                    *[f"{v.get('acc_' + a, float('nan')):.1f}" for a in ATTRS],
                ]
            ],
        )
    )
    s = results["single"]
    tables.append(
        (
            "personalization-acc, single-attribute targets (test split; classifiers trained on train)",
            ["target", "ODE-guided", "--no-guidance"],
            [[k, f"{s['guided'][k]:.1f}", f"{s['unguided'][k]:.1f}"] for k in s["guided"]]
            + [
                [
                    "mean",
                    f"{results['single_mean']['guided']:.1f}",
                    f"{results['single_mean']['unguided']:.1f}",
                ]
            ],
        )
    )
    c = results["combinations"]
    rows = []
    for g, u in zip(c["guided"]["matrix"], c["unguided"]["matrix"]):
        rows.append(
            [
                g["target"],
                *[f"{g[a]:.1f} / {u[a]:.1f}" for a in ATTRS],
                f"{g['mean']:.1f} / {u['mean']:.1f}",
            ]
        )
    rows.append(
        [
            "all 8",
            *[
                f"{c['guided']['by_attribute'][a]:.1f} / {c['unguided']['by_attribute'][a]:.1f}"
                for a in ATTRS
            ],
            f"{c['guided']['acc']:.1f} / {c['unguided']['acc']:.1f}",
        ]
    )
    tables.append(
        (
            "personalization-acc per attribute, 3-attribute combinations (guided / unguided)",
            ["target", *ATTRS, "mean"],
            rows,
        )
    )
    tables.append(
        (
            "all 8 combinations x test split: guided vs unguided (seconds: encode / ODE / decode)",
            ["run", "acc", "Dist-2", "self-BLEU", "judge ppl", "NFE", "stage seconds", "ODE share"],
            [
                [
                    mode,
                    f"{r['acc']:.1f}",
                    f"{r['dist2']:.2f}",
                    f"{r['sbleu']:.2f}",
                    f"{r['ppl']:.1f}",
                    r["nfe"],
                    " / ".join(
                        f"{r['stage_seconds'].get(k, 0.0):.2f}" for k in ("encode", "ode", "decode")
                    ),
                    f"{100 * r['ode_share']:.1f}%",
                ]
                for mode, r in c.items()
            ],
        )
    )
    sw = results["sweep"]
    tables.append(
        (
            f"guidance_scale sweep over the 8 combinations, valid split (default {sw['default']})",
            [
                "scale",
                "acc",
                *ATTRS,
                "Dist-2",
                "self-BLEU",
                "judge ppl",
                "NFE",
                "ODE share",
                "resp/s",
            ],
            [
                [
                    r["guidance_scale"],
                    f"{r['acc']:.1f}",
                    *[f"{r['by_attribute'].get(a, float('nan')):.1f}" for a in ATTRS],
                    f"{r['dist2']:.2f}",
                    f"{r['sbleu']:.2f}",
                    f"{r['ppl']:.1f}",
                    r["nfe"],
                    f"{100 * r['ode_share']:.1f}%",
                    f"{r['responses_per_s']:.0f}",
                ]
                for r in sw["rows"]
            ],
        )
    )
    st = results["step_time"]
    tables.append(
        (
            "seconds per optimizer step, same 2-layer GPT-2 decoder, batch 8",
            ["run", "s/step", "vs finetune"],
            [
                [
                    "finetune/tiny (decoder reads persona + context + reply)",
                    f"{st['finetune_s']:.3f}",
                    "1.00x",
                ],
                [
                    "cvae/tiny (encoders read the context; decoder z + reply)",
                    f"{st['cvae_s']:.3f}",
                    f"{st['ratio']:.2f}x",
                ],
                [
                    "cvae/tiny, decoder_sees_context",
                    f"{st['cvae_ctx_s']:.3f}",
                    f"{st['ratio_ctx']:.2f}x",
                ],
            ],
        )
    )
    return tables
