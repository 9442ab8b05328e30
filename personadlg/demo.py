"""The embedded default: the whole pipeline on the bundled demo corpus, offline, on a CPU."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from personadlg.assets import DEMO_ATTRIBUTES, demo_corpus
from personadlg.data.clean import CleanConfig, clean
from personadlg.data.split import split
from personadlg.data.stats import stats

logger = logging.getLogger(__name__)


def run_demo(
    out_dir: str | Path,
    *,
    on_event: Any = None,
    on_generate: Any = None,
    train_overrides: tuple[str, ...] = (),
    classifier_overrides: tuple[str, ...] = (),
    classifier_recipe: str | None = None,
    cvae_overrides: tuple[str, ...] = (),
    codebook_overrides: tuple[str, ...] = (),
    lora_overrides: tuple[str, ...] = (),
    lora_users: int = 4,
    backbone: str = "auto",
) -> dict[str, Any]:
    """stats → clean → split → train the baseline → generate for the test split → train
    attribute classifiers on the train split (fine-tuned all-MiniLM-L6-v2 when installed, else tiny
    ones; CLASSIFIER_RECIPE chooses) → evaluate the generations → train the MIRACLE
    cvae → generate every aspect combination for the test split, ODE-guided and unguided →
    evaluate both (the controllability matrix) → train the MORPHEUS codebook (three stages)
    → generate for the test split without persona text → P-Co and P-Co lift against the baseline,
    and what two codes stand for → train the lora method (profile-aware base, then adapters
    for LORA_USERS users) → generate for those users' held-out test dialogues with and without
    their adapters → per-user metrics (emb-sim with all-MiniLM-L6-v2 when installed); return what
    each step reported.

    BACKBONE: `minilm` (the `*/minilm` recipes: all-MiniLM-L6-v2 warm-started as every decoder and
    encoder), `tiny` (the `*/tiny` recipes: small GPT-2 / BERT models from scratch), or `auto`:
    minilm when all-MiniLM-L6-v2 is installed (`personadlg[minilm]`, as `make demo` does).

    TRAIN_OVERRIDES go to the baseline's recipe, and their `train.*` keys to every stage that
    trains (so `train.max_steps=20` makes the whole demo a smoke run); CLASSIFIER_OVERRIDES and
    CVAE_OVERRIDES, CODEBOOK_OVERRIDES and LORA_OVERRIDES to those stages. Every recipe and override is checked before the first stage.

    Writes OUT_DIR/clean.jsonl (+ .rejects.jsonl, .report.json), OUT_DIR/data/{train,valid,test}.jsonl,
    OUT_DIR/finetune-SIZE/, OUT_DIR/cvae-SIZE/, OUT_DIR/codebook-SIZE/ and OUT_DIR/lora-SIZE/
    (+ adapters/) (SIZE: minilm or tiny; checkpoints, metrics.jsonl, loss.png; cvae also
    latent_space.png; codebook also stages/), OUT_DIR/generations/{finetune-SIZE,cvae-SIZE,
    cvae-SIZE-unguided,codebook-SIZE,lora-SIZE,lora-SIZE-base}.jsonl,
    OUT_DIR/classifiers/<attribute>/ and OUT_DIR/eval/*.json. Reruns resume every step.
    """
    from personadlg.config import load_recipe
    from personadlg.generation.generate import generate_file, iter_records
    from personadlg.metrics.catalog import EvalOptions
    from personadlg.metrics.evaluate import evaluate_file
    from personadlg.training.checkpoint import load_checkpoint
    from personadlg.training.trainer import train

    out = Path(out_dir)
    data = out / "data"
    size = demo_backbone(backbone)
    names = {m: f"{m}-{size}" for m in ("finetune", "cvae", "codebook", "lora")}
    run_dir, cvae_dir = out / names["finetune"], out / names["cvae"]
    shared = [o for o in train_overrides if o.startswith("train.")]  # every stage that trains
    chain = minilm_chain(run_dir) if size == "minilm" else {}
    # every recipe and override is checked before the first stage runs
    cfg = load_recipe(
        f"finetune/{size}",
        [
            f"data.train={data / 'train.jsonl'}",
            f"data.valid={data / 'valid.jsonl'}",
            f"train.output_dir={run_dir}",
            *chain.get("finetune", ()),
            *train_overrides,
        ],
    )
    judge = classifier_recipe or default_classifier_recipe()
    ccfgs = {
        attr: load_recipe(
            judge,
            [
                f"data.train={data / 'train.jsonl'}",
                f"data.valid={data / 'valid.jsonl'}",  # held-out dialogues: an honest accuracy
                "data.valid_fraction=0",
                f"data.attribute={attr}",
                f"train.output_dir={out / 'classifiers' / attr}",
                *(chain.get("classifier", ()) if judge.endswith("-minilm") else ()),
                *shared,
                *classifier_overrides,
            ],
        )
        for attr in DEMO_ATTRIBUTES
    }
    vcfg = load_recipe(
        f"cvae/{size}",
        [
            f"data.train={data / 'train.jsonl'}",
            f"data.valid={data / 'valid.jsonl'}",
            f"train.output_dir={cvae_dir}",
            *chain.get("cvae", ()),
            *shared,
            *cvae_overrides,
        ],
    )

    bcfg = load_recipe(
        f"codebook/{size}",
        [
            f"data.train={data / 'train.jsonl'}",
            f"data.valid={data / 'valid.jsonl'}",
            f"train.output_dir={out / names['codebook']}",
            *chain.get("codebook", ()),
            *shared,
            *codebook_overrides,
        ],
    )
    lcfg = load_recipe(
        f"lora/{size}",
        [
            f"data.train={data / 'train.jsonl'}",
            f"data.valid={data / 'valid.jsonl'}",
            f"train.output_dir={out / names['lora']}",
            *chain.get("lora", ()),
            *shared,
            *lora_overrides,
        ],
    )

    corpus = demo_corpus()
    logger.info("demo corpus: %s", corpus)
    st = stats(corpus)
    rep = clean(
        [corpus],
        out=out / "clean.jsonl",
        rejects=out / "clean.rejects.jsonl",
        report=out / "clean.report.json",
        config=CleanConfig(attributes=DEMO_ATTRIBUTES, min_assistant_turns=4),
    )
    sp = split(
        out / "clean.jsonl", out_dir=out / "data", valid=0.1, test=0.1, by="dialogue", seed=0
    )
    result = train(cfg, resume="auto", on_event=on_event)
    gen_path = out / "generations" / f"{names['finetune']}.jsonl"
    gen = generate_file(result.final_dir, data / "test.jsonl", gen_path, on_progress=on_generate)

    classifiers: dict[str, str] = {}
    accuracy: dict[str, dict[str, float]] = {}
    for attr, ccfg in ccfgs.items():
        cres = train(ccfg, resume="auto", on_event=on_event)
        classifiers[attr] = str(cres.final_dir)
        accuracy[attr] = {
            k: cres.last_valid.get(k, float("nan"))
            for k in ("accuracy", "macro_f1", "n", "accuracy_ci95_lo", "accuracy_ci95_hi")
        }
    report = evaluate_file(
        gen_path,
        opts=EvalOptions(classifiers=classifiers),
        by_target=True,
        out=out / "eval" / f"{names['finetune']}.json",
    )

    vres = train(vcfg, resume="auto", on_event=on_event)
    cvae: dict[str, Any] = {"train": _train_summary(vres)}
    loaded = load_checkpoint(vres.final_dir)  # once for both runs
    guided_name, unguided_name = names["cvae"], f"{names['cvae']}-unguided"
    for name, extra in ((guided_name, []), (unguided_name, ["model.ode.guidance_scale=0"])):
        path = out / "generations" / f"{name}.jsonl"
        summary = generate_file(
            vres.final_dir,
            data / "test.jsonl",
            path,
            combinations=True,
            overrides=extra,
            on_progress=on_generate,
            loaded=loaded,
        )
        key = "guided" if name == guided_name else "unguided"
        cvae[key] = {
            "generate": summary,
            "eval": evaluate_file(
                path,
                opts=EvalOptions(classifiers=classifiers),
                by_target=True,
                out=out / "eval" / f"{name}.json",
            ),
        }
    guided = list(iter_records(out / "generations" / f"{guided_name}.jsonl"))
    cvae["samples"] = [
        r for r in guided if r["id"] == guided[0]["id"]
    ]  # one example, every combination
    persona_metrics = ["p-co", "p-co-lift", "dist-2", "bleu-1"]
    bres = train(bcfg, resume="auto", on_event=on_event)
    bpath = out / "generations" / f"{names['codebook']}.jsonl"
    bloaded = load_checkpoint(bres.final_dir)
    bgen = generate_file(
        bres.final_dir, data / "test.jsonl", bpath, on_progress=on_generate, loaded=bloaded
    )
    codebook: dict[str, Any] = {
        "train": _train_summary(bres),
        "generate": bgen,
        "eval": evaluate_file(
            bpath, metrics=persona_metrics, out=out / "eval" / f"{names['codebook']}.json"
        ),
        "baseline_eval": evaluate_file(gen_path, metrics=persona_metrics),
        "codes": _two_codes(bloaded[1], data / "train.jsonl"),
        "samples": list(iter_records(bpath))[:3],
    }
    lora = _lora_stage(
        lcfg, data, out, lora_users, name=names["lora"], on_event=on_event, on_generate=on_generate
    )
    return {
        "out_dir": str(out),
        "backbone": size,
        "names": names,
        "stats": st,
        "clean": rep.to_dict(),
        "split": sp.to_dict(),
        "train": _train_summary(result),
        "generate": gen,
        "samples": list(iter_records(gen_path))[:5],
        "classifier_recipe": judge,
        "classifiers": {a: {"dir": d, **accuracy[a]} for a, d in classifiers.items()},
        "eval": report,
        "cvae": cvae,
        "codebook": codebook,
        "lora": lora,
    }


def _lora_stage(
    cfg: Any, data: Path, out: Path, n_users: int, *, name: str, on_event: Any, on_generate: Any
) -> dict[str, Any]:
    """Train the lora recipe CFG (run NAME) with adapters for the N_USERS users with the most
    held-out test turns; generate for their test dialogues with the base and with their adapters;
    per-user metrics. Generations `NAME-base` and `NAME`."""
    from collections import Counter

    from personadlg.data.jsonl import dumps
    from personadlg.generation.generate import generate_file, iter_records, load_examples
    from personadlg.metrics.catalog import EvalOptions
    from personadlg.metrics.evaluate import compare_files
    from personadlg.models.loading import bundled_dir
    from personadlg.models.lora.adapters import read_index
    from personadlg.training.trainer import train

    test_turns = Counter(
        ex.user_id for ex in load_examples(data / "test.jsonl", "all") if ex.user_id
    )
    train_users = {ex.user_id for ex in load_examples(data / "train.jsonl", "all")}
    users = sorted((u for u in test_turns if u in train_users), key=lambda u: (-test_turns[u], u))[
        :n_users
    ]
    cfg.model.users = sorted(users)
    lres = train(cfg, resume="auto", on_event=on_event)
    held = data / "test-lora-users.jsonl"
    lines = [
        ln
        for ln in (data / "test.jsonl").read_text(encoding="utf-8").splitlines()
        if ln.strip() and json.loads(ln).get("user_id") in set(users)
    ]
    held.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
    base_ckpt = out / name / "stages" / "1-base" / "final"
    base_name = f"{name}-base"
    gens = {}
    for gname, ckpt in ((base_name, base_ckpt), (name, lres.final_dir)):
        path = out / "generations" / f"{gname}.jsonl"
        generate_file(ckpt, held, path, on_progress=on_generate)
        gens[gname] = path
    embedder = "sentence-transformers/all-MiniLM-L6-v2"
    metrics = ["bleu-1", "rouge-l", "dist-1"]
    if bundled_dir(embedder) is not None:
        metrics.append("emb-sim")
    opts = EvalOptions(embedder=embedder if "emb-sim" in metrics else None)
    comp = compare_files([gens[base_name], gens[name]], metrics=metrics, opts=opts, by="user")
    (out / "eval").mkdir(parents=True, exist_ok=True)
    (out / "eval" / f"{name}-by-user.json").write_text(dumps(comp), encoding="utf-8")
    index = read_index(out / name / "adapters")
    systems = {Path(k).stem: v for k, v in comp["systems"].items()}
    return {
        "train": {
            "final": str(lres.final_dir),
            "seconds": lres.seconds,
            "stage_seconds": [s.seconds for s in lres.stages],
            "summary": lres.last_valid,
        },
        "users": users,
        "adapters": index["users"],
        "metrics": metrics,
        "names": {"base": base_name, "adapters": name},
        "by_user": {g: systems[g].get("by_user", {}) for g in gens},
        "macro": {g: systems[g].get("macro", {}) for g in gens},
        "macro_diff": (comp["comparisons"].get("macro_vs_base") or {}).get(str(gens[name])),
        "samples": list(iter_records(gens[name]))[:2],
        "samples_base": list(iter_records(gens[base_name]))[:2],
    }


def _two_codes(model: Any, train_path: Path) -> list[dict[str, Any]]:
    """The two codes the training personas use most, with their nearest persona sentences."""
    from personadlg.generation.generate import load_examples
    from personadlg.models.codebook.inspect import inspect_codebook

    report = inspect_codebook(model, load_examples(train_path, "all"), top=3, predict_limit=200)
    return report["codes"][:2]


MINILM = "sentence-transformers/all-MiniLM-L6-v2"

DEMO_STEPS = {"finetune": 100, "cvae": 40, "codebook": 20, "lora": 25}
"""Optimizer steps (batch 16) of each `*/minilm` recipe in the demo, for 15 minutes on 2 cores;
codebook's count is per stage (role, joint), lora's the base stage's (and at most each adapter's).
The MiniLM judges train 3 epochs instead of their recipe's 5."""


def minilm_chain(baseline: Path) -> dict[str, list[str]]:
    """The demo's overrides of the `*/minilm` recipes: the baseline (finetune/minilm: MiniLM
    warm-started, then fine-tuned on the demo's dialogues) becomes the decoder that cvae, codebook
    and lora start from — as the papers start from a dialogue LM (DialoGPT, GPT-2) — so each needs
    only a few steps on 2 cores. Their encoders stay the pretrained all-MiniLM-L6-v2."""
    decoder = baseline / "final"
    return {
        "finetune": [f"train.max_steps={DEMO_STEPS['finetune']}"],
        "cvae": [f"model.decoder={decoder}", f"train.max_steps={DEMO_STEPS['cvae']}"],
        "codebook": [f"model.decoder={decoder}", f"train.max_steps={DEMO_STEPS['codebook']}"],
        "lora": [f"model.backbone={decoder}", f"train.max_steps={DEMO_STEPS['lora']}"],
        "classifier": ["train.epochs=3"],
    }


def demo_backbone(choice: str = "auto") -> str:
    """The demo's recipe size: `minilm` (all-MiniLM-L6-v2 warm-started) or `tiny` (from scratch);
    `auto` is minilm when that model is installed."""
    from personadlg.errors import UsageError
    from personadlg.models.loading import bundled_dir

    if choice not in ("auto", "minilm", "tiny"):
        raise UsageError(f"--backbone: expected auto, minilm or tiny, got {choice!r}")
    if choice == "auto":
        return "minilm" if bundled_dir(MINILM) is not None else "tiny"
    return choice


def default_classifier_recipe() -> str:
    """The judges' recipe: all-MiniLM-L6-v2 fine-tuned when that model is installed (a strong,
    pretrained judge), else the tiny from-scratch classifier."""
    from personadlg.models.loading import bundled_dir

    if bundled_dir("sentence-transformers/all-MiniLM-L6-v2") is not None:
        return "classifier/attribute-minilm"
    return "classifier/attribute-tiny"


def _train_summary(result: Any) -> dict[str, Any]:
    return {
        "final": str(result.final_dir),
        "steps": result.steps,
        "seconds": result.seconds,
        "last_train": result.last_train,
        "last_valid": result.last_valid,
        "plot": str(result.plot) if result.plot else None,
    }
