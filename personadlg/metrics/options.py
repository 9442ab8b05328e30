"""`personadlg eval`'s options: how every metric of a run is computed (they show in the signatures)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from personadlg.errors import UsageError
from personadlg.metrics.persona import STOPWORD_LISTS
from personadlg.metrics.tokenize import NAMES, TokenSetting

if TYPE_CHECKING:
    from personadlg.metrics.judge.config import JudgeConfig


@dataclass
class EvalOptions:
    """How `personadlg eval` computes its metrics (every choice shows up in the signatures)."""

    tokenize: str = "13a"
    lowercase: bool = False
    classifiers: dict[str, str] = field(default_factory=dict)
    nli: str | None = None
    nli_entailment_label: str | None = None
    nli_context_turns: int = 0
    lm: str | None = None
    embedder: str | None = None
    sbleu_order: int = 4
    sbleu_sample: int = 0
    seed: int = 0
    bootstrap: int = 0
    p_co_stopwords: str = "en"
    lift_draws: int = 10
    judge: str | None = None
    """A judge recipe (YAML path or bundled name, e.g. `judge/default`): the judge-* metrics."""
    judge_cache: str | None = None
    """The judge cache directory (default: the recipe's `cache_dir`, else the user cache)."""
    judge_overrides: tuple[str, ...] = ()
    """Dotted KEY=VALUE overrides of the judge recipe (`--judge-set`)."""

    def __post_init__(self) -> None:
        if self.p_co_stopwords not in STOPWORD_LISTS:
            raise UsageError(
                f"--p-co-stopwords: expected one of {', '.join(STOPWORD_LISTS)}, got {self.p_co_stopwords!r}"
            )
        if self.lift_draws < 1:
            raise UsageError(f"--lift-draws: expected at least 1, got {self.lift_draws}")
        if not (self.tokenize in NAMES or self.tokenize.startswith("hf:")):
            raise UsageError(
                f"--tokenize {self.tokenize!r}: expected one of {', '.join(NAMES)} or hf:<tokenizer dir>"
            )
        if (
            self.bootstrap < 0
            or self.sbleu_order < 1
            or self.sbleu_sample < 0
            or self.nli_context_turns < 0
        ):
            raise UsageError(
                "--bootstrap, --sbleu-sample and --nli-context-turns must be >= 0 and --sbleu-order >= 1"
            )
        self.judge_overrides = tuple(self.judge_overrides)
        if self.judge is None and (self.judge_cache or self.judge_overrides):
            raise UsageError("--judge-cache and --judge-set need --judge RECIPE")
        if self.judge is not None:
            self.judge_config()  # a bad recipe or override fails now (exit 2), not after other metrics
        refs: list[tuple[str, str | None]] = [
            (f"--classifier {a}", d) for a, d in sorted(self.classifiers.items())
        ]
        refs += [("--nli", self.nli), ("--lm", self.lm), ("--embedder", self.embedder)]
        for flag, ref in refs:
            if ref is not None:
                check_model_ref(flag, ref)

    @property
    def tok(self) -> TokenSetting:
        return TokenSetting(self.tokenize, self.lowercase)

    def judge_config(self) -> JudgeConfig:
        """The judge recipe (`JudgeConfig`) with its overrides; UsageError without --judge."""
        from personadlg.metrics.judge import load_judge_recipe

        if self.judge is None:
            raise UsageError("the judge metrics need --judge RECIPE (e.g. --judge judge/default)")
        return load_judge_recipe(self.judge, self.judge_overrides)


def check_model_ref(flag: str, ref: str) -> None:
    """A model given to eval is a model directory (config.json inside) or a hub id."""
    from personadlg.models.loading import is_hub_id, resolve_model

    path = Path(resolve_model(ref))
    if not path.exists():
        if is_hub_id(ref):
            return  # fetched (or found in the hub cache) when it is loaded
        raise UsageError(f"{flag} {ref}: no such model directory")
    if not path.is_dir() or not (path / "config.json").is_file():
        raise UsageError(
            f"{flag} {ref}: not a Hugging Face model directory (no config.json); pass a checkpoint "
            "such as RUN/final"
        )
