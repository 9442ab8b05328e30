"""The embedded default: the whole pipeline on the bundled demo corpus, offline, on a CPU.

stats → clean → split → the baseline → attribute classifiers → then the step every method declares
(`MethodSpec.demo`, a `DemoStep`: MIRACLE cvae, MORPHEUS codebook, lora), in its order, each
lent the services it needs (`DemoKit`) and compared with the baseline.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personadlg.assets import DEMO_ATTRIBUTES, demo_corpus
from personadlg.data.clean import CleanConfig, clean
from personadlg.data.split import split
from personadlg.data.stats import stats
from personadlg.models.spec import DemoRun, DemoStep

logger = logging.getLogger(__name__)

BASELINE = "finetune"
"""The baseline's method: every step starts from its decoder and compares with its generations."""
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
BASELINE_STEPS = 100
"""The baseline's optimizer steps (batch 16) in the minilm demo."""
CLASSIFIER_EPOCHS = 3
"""The MiniLM judges train 3 epochs in the demo instead of their recipe's 5."""


def demo_steps() -> list[tuple[str, DemoStep]]:
    """(method, its step) of every registered method with a demo step, in the order they run."""
    from personadlg.registry import METHODS

    declared = [(e.name, METHODS.get(e.name).demo) for e in METHODS.entries() if e.available]
    return sorted(((m, s) for m, s in declared if s is not None), key=lambda p: p[1].order)


def run_demo(
    out_dir: str | Path,
    *,
    on_event: Any = None,
    on_generate: Any = None,
    train_overrides: Sequence[str] = (),
    classifier_overrides: Sequence[str] = (),
    classifier_recipe: str | None = None,
    step_overrides: Mapping[str, Sequence[str]] | None = None,
    backbone: str = "auto",
) -> dict[str, Any]:
    """stats → clean → split → train the baseline → generate for the test split → train
    attribute classifiers on the train split (fine-tuned all-MiniLM-L6-v2 when installed, else tiny
    ones; CLASSIFIER_RECIPE chooses) → evaluate the generations → every method's demo step in its
    order (cvae: every aspect combination ODE-guided and unguided, the controllability matrix;
    codebook: no persona text, P-Co and P-Co lift against the baseline, two codes; lora: per-user
    adapters against the profile-aware base); return what each step reported, each method's step
    under its name.

    BACKBONE: `minilm` (the `*/minilm` recipes: all-MiniLM-L6-v2 warm-started as every decoder and
    encoder), `tiny` (the `*/tiny` recipes: small GPT-2 / BERT models from scratch), or `auto`:
    minilm when all-MiniLM-L6-v2 is installed (`personadlg[minilm]`, as `make demo` does).

    TRAIN_OVERRIDES go to the baseline's recipe, and their `train.*` keys to every stage that
    trains (so `train.max_steps=20` makes the whole demo a smoke run); CLASSIFIER_OVERRIDES to the
    classifiers, STEP_OVERRIDES[method] to that method's step. Every recipe and override is checked
    before the first stage.

    Writes OUT_DIR/clean.jsonl (+ .rejects.jsonl, .report.json), OUT_DIR/data/{train,valid,test}.jsonl,
    OUT_DIR/<method>-SIZE/ per method (SIZE: minilm or tiny; checkpoints, metrics.jsonl, loss.png
    and what the step adds), OUT_DIR/generations/*.jsonl, OUT_DIR/classifiers/<attribute>/ and
    OUT_DIR/eval/*.json. Reruns resume every step.
    """
    out = check_out_dir(out_dir)
    size = demo_backbone(backbone)
    steps = demo_steps()
    overrides = _step_overrides(step_overrides or {}, [m for m, _ in steps])
    names = {m: f"{m}-{size}" for m in (BASELINE, *(m for m, _ in steps))}
    recipes = _Recipes(out, size, names, tuple(train_overrides))
    # every recipe and override is checked before the first stage runs
    cfg = recipes.baseline()
    judge = classifier_recipe or default_classifier_recipe()
    ccfgs = {a: recipes.classifier(judge, a, classifier_overrides) for a in DEMO_ATTRIBUTES}
    scfgs = {m: recipes.step(m, overrides.get(m, ())) for m, _ in steps}

    summary: dict[str, Any] = {
        "out_dir": str(out),
        "backbone": size,
        "names": names,
        **_prepare(out),
    }
    kit = _Kit(on_event=on_event, on_generate=on_generate)
    summary |= _baseline(kit, cfg, out, names[BASELINE])
    classifiers, accuracy = _classifiers(kit, ccfgs)
    summary["classifier_recipe"] = judge
    summary["classifiers"] = {a: {"dir": d, **accuracy[a]} for a, d in classifiers.items()}
    baseline = out / "generations" / f"{names[BASELINE]}.jsonl"
    summary["eval"] = kit.evaluate(
        baseline,
        classifiers=classifiers,
        by_target=True,
        out=out / "eval" / f"{names[BASELINE]}.json",
    )
    for method, step in steps:
        summary[method] = step.run(
            DemoRun(
                cfg=scfgs[method],
                kit=kit,
                name=names[method],
                out_dir=out,
                data_dir=out / "data",
                baseline=baseline,
                classifiers=classifiers,
            )
        )
    return summary


def check_out_dir(out_dir: str | Path, *, option: str = "--out-dir") -> Path:
    """OUT_DIR as a Path, when the demo can write into it: not empty (that would be the current
    directory), and neither it nor a parent an existing file, device or FIFO; else a UsageError
    naming OPTION."""
    from personadlg.errors import UsageError

    if not str(out_dir).strip():
        raise UsageError(
            f"{option}: empty path; give the directory the demo writes into (e.g. runs/demo)"
        )
    out = Path(out_dir)
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                kind = "a file" if p.is_file() else "a device, a FIFO or a socket"
                detail = f"it is {kind}" if p == out else f"{p} is {kind}"
                raise UsageError(
                    f"{option} {out}: not a directory ({detail}); give a directory the demo can "
                    "write into (it is created when missing)"
                )
            break
    return out


def _step_overrides(given: Mapping[str, Sequence[str]], methods: list[str]) -> dict[str, list[str]]:
    """GIVEN ({method: overrides}), checked: each names one of the demo's steps, METHODS."""
    from personadlg.errors import UsageError
    from personadlg.registry import did_you_mean

    for method in given:
        if method not in methods:
            raise UsageError(
                f"no demo step '{method}'{did_you_mean(method, methods)}; steps: {', '.join(methods)}"
            )
    return {m: list(v) for m, v in given.items()}


@dataclass(frozen=True)
class _Recipes:
    """The demo's recipes: `<method>/<size>` on the demo's split, chained to the baseline in the
    minilm demo; the `train.*` keys of TRAIN_OVERRIDES reach every stage that trains."""

    out: Path
    size: str
    names: dict[str, str]
    train_overrides: tuple[str, ...]

    def _load(self, recipe: str, overrides: Sequence[str]) -> Any:
        from personadlg.config import load_recipe

        data = self.out / "data"
        return load_recipe(
            recipe,
            [
                f"data.train={data / 'train.jsonl'}",
                f"data.valid={data / 'valid.jsonl'}",
                *overrides,
            ],
        )

    @property
    def chain(self) -> dict[str, list[str]]:
        return minilm_chain(self.out / self.names[BASELINE]) if self.size == "minilm" else {}

    @property
    def shared(self) -> list[str]:
        return [o for o in self.train_overrides if o.startswith("train.")]

    def baseline(self) -> Any:
        return self._load(
            f"{BASELINE}/{self.size}",
            [
                f"train.output_dir={self.out / self.names[BASELINE]}",
                *self.chain.get(BASELINE, ()),
                *self.train_overrides,
            ],
        )

    def classifier(self, recipe: str, attribute: str, overrides: Sequence[str]) -> Any:
        return self._load(
            recipe,
            [
                "data.valid_fraction=0",  # the valid split's dialogues: an honest accuracy
                f"data.attribute={attribute}",
                f"train.output_dir={self.out / 'classifiers' / attribute}",
                *(self.chain.get("classifier", ()) if recipe.endswith("-minilm") else ()),
                *self.shared,
                *overrides,
            ],
        )

    def step(self, method: str, overrides: Sequence[str]) -> Any:
        return self._load(
            f"{method}/{self.size}",
            [
                f"train.output_dir={self.out / self.names[method]}",
                *self.chain.get(method, ()),
                *self.shared,
                *overrides,
            ],
        )


def _prepare(out: Path) -> dict[str, Any]:
    """stats of the bundled corpus → clean → split 80/10/10 by dialogue into OUT/data."""
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
    return {"stats": st, "clean": rep.to_dict(), "split": sp.to_dict()}


def _baseline(kit: _Kit, cfg: Any, out: Path, name: str) -> dict[str, Any]:
    """Train the baseline, generate for the test split (generations/NAME.jsonl)."""
    result = kit.train(cfg)
    path = out / "generations" / f"{name}.jsonl"
    generated = kit.generate(result.final_dir, out / "data" / "test.jsonl", path)
    return {
        "train": kit.summary(result),
        "generate": generated,
        "samples": kit.records(path)[:5],
    }


def _classifiers(
    kit: _Kit, cfgs: dict[str, Any]
) -> tuple[dict[str, str], dict[str, dict[str, float]]]:
    """Train one classifier per attribute: (attribute -> checkpoint, attribute -> its accuracy)."""
    classifiers: dict[str, str] = {}
    accuracy: dict[str, dict[str, float]] = {}
    for attr, cfg in cfgs.items():
        result = kit.train(cfg)
        classifiers[attr] = str(result.final_dir)
        accuracy[attr] = {
            k: result.last_valid.get(k, float("nan"))
            for k in ("accuracy", "macro_f1", "n", "accuracy_ci95_lo", "accuracy_ci95_hi")
        }
    return classifiers, accuracy


@dataclass
class _Kit:
    """The `DemoKit`: the trainer, generation and evaluation, with the demo's live views."""

    on_event: Any = None
    on_generate: Any = None

    def train(self, cfg: Any) -> Any:
        from personadlg.training.trainer import train

        return train(cfg, resume="auto", on_event=self.on_event)

    def summary(self, result: Any) -> dict[str, Any]:
        return {
            "final": str(result.final_dir),
            "steps": result.steps,
            "seconds": result.seconds,
            "last_train": result.last_train,
            "last_valid": result.last_valid,
            "plot": str(result.plot) if result.plot else None,
        }

    def load(self, checkpoint: Path) -> tuple[Any, Any]:
        from personadlg.training.checkpoint import load_checkpoint

        return load_checkpoint(checkpoint)

    def generate(
        self,
        checkpoint: Path,
        data: Path,
        out: Path,
        *,
        overrides: Sequence[str] = (),
        combinations: bool = False,
        loaded: tuple[Any, Any] | None = None,
    ) -> dict[str, Any]:
        from personadlg.generation.generate import generate_file

        return generate_file(
            checkpoint,
            data,
            out,
            overrides=overrides,
            combinations=combinations,
            on_progress=self.on_generate,
            loaded=loaded,
        )

    def evaluate(
        self,
        path: Path,
        *,
        metrics: Sequence[str] | None = None,
        classifiers: Mapping[str, str] | None = None,
        by_target: bool = False,
        out: Path | None = None,
    ) -> dict[str, Any]:
        from personadlg.metrics.evaluate import evaluate_file
        from personadlg.metrics.options import EvalOptions

        opts = EvalOptions(classifiers=dict(classifiers)) if classifiers else None
        return evaluate_file(path, metrics=metrics, opts=opts, by_target=by_target, out=out)

    def compare(
        self,
        paths: Sequence[Path],
        *,
        metrics: Sequence[str],
        embedder: str | None = None,
        by: str | None = None,
    ) -> dict[str, Any]:
        from personadlg.metrics.compare import compare_files
        from personadlg.metrics.options import EvalOptions

        return compare_files(paths, metrics=metrics, opts=EvalOptions(embedder=embedder), by=by)

    def records(self, path: Path) -> list[dict[str, Any]]:
        from personadlg.generation.generate import iter_records

        return list(iter_records(path))

    def examples(self, path: Path) -> list[Any]:
        from personadlg.generation.generate import load_examples

        return load_examples(path, "all")


def minilm_chain(baseline: Path) -> dict[str, list[str]]:
    """The demo's overrides of the `*/minilm` recipes: the baseline (finetune/minilm: MiniLM
    warm-started, then fine-tuned on the demo's dialogues) becomes the decoder that every step
    starts from (its `DemoStep.chain`) — as the papers start from a dialogue LM (DialoGPT, GPT-2) —
    so each needs only a few steps on 2 cores. Their encoders stay the pretrained all-MiniLM-L6-v2."""
    decoder = baseline / "final"
    return {
        BASELINE: [f"train.max_steps={BASELINE_STEPS}"],
        **{
            m: [*(o.format(baseline=decoder) for o in s.chain), f"train.max_steps={s.steps}"]
            for m, s in demo_steps()
        },
        "classifier": [f"train.epochs={CLASSIFIER_EPOCHS}"],
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

    if bundled_dir(MINILM) is not None:
        return "classifier/attribute-minilm"
    return "classifier/attribute-tiny"


DEMO_STEPS = {BASELINE: BASELINE_STEPS, **{m: s.steps for m, s in demo_steps()}}
"""Optimizer steps (batch 16) of each `*/minilm` recipe in the demo, for 15 minutes on 2 cores;
codebook's count is per stage (role, joint), lora's the base stage's (and at most each adapter's).
The MiniLM judges train 3 epochs instead of their recipe's 5."""
