"""Every metric by name: factories that build a configured metric from the evaluation options."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from personadlg.errors import UsageError
from personadlg.metrics.lexical import (
    CorpusBLEU,
    Distinct,
    RougeL,
    SelfBLEU,
    SentenceBLEU,
    TokenSetting,
)
from personadlg.metrics.model_based import (
    NLI,
    CScore,
    EmbeddingSimilarity,
    Perplexity,
    PersonaCosine,
    PersonaCosineLift,
    Personalization,
)
from personadlg.metrics.persona import PCo, PCoLift, PersonaCopy

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
        from personadlg.metrics.stopwords import STOPWORD_LISTS
        from personadlg.metrics.tokenize import NAMES

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


def _need(value: Any, flag: str, name: str) -> Any:
    if not value:
        raise UsageError(f"metric {name} needs {flag}")
    return value


def bleu(n: int, sentence: bool = False):
    def make(o: EvalOptions) -> Any:
        return SentenceBLEU(n, o.tok) if sentence else CorpusBLEU(n, o.tok)

    return make


def dist(n: int, sentence: bool = False):
    def make(o: EvalOptions) -> Any:
        return Distinct(n, sentence, o.tok)

    return make


def rouge(part: str):
    def make(o: EvalOptions) -> Any:
        return RougeL(part, o.tok)

    return make


def sbleu(o: EvalOptions) -> Any:
    return SelfBLEU(order=o.sbleu_order, sample=o.sbleu_sample, seed=o.seed, tok=o.tok)


def pco(o: EvalOptions) -> Any:
    return PCo(stopwords=o.p_co_stopwords)


def pco_lift(o: EvalOptions) -> Any:
    return PCoLift(stopwords=o.p_co_stopwords, draws=o.lift_draws, seed=o.seed)


def persona_copy(o: EvalOptions) -> Any:
    return PersonaCopy()


def nli(kind: str):
    def make(o: EvalOptions) -> Any:
        return NLI(
            _need(o.nli, "--nli DIR", f"nli-{kind}"),
            kind,
            o.nli_context_turns,
            o.nli_entailment_label,
        )

    return make


def c_score(o: EvalOptions) -> Any:
    return CScore(_need(o.nli, "--nli DIR", "c-score"), o.nli_entailment_label)


def personalization(kind: str):
    def make(o: EvalOptions) -> Any:
        return Personalization(
            _need(o.classifiers, "--classifier ATTR=DIR", f"personalization-{kind}"), kind
        )

    return make


def ppl(o: EvalOptions) -> Any:
    return Perplexity(_need(o.lm, "--lm DIR", "ppl"))


def emb_sim(o: EvalOptions) -> Any:
    return EmbeddingSimilarity(_need(o.embedder, "--embedder DIR", "emb-sim"))


def persona_cos(o: EvalOptions) -> Any:
    return PersonaCosine(_need(o.embedder, "--embedder DIR", "persona-cos"))


def persona_cos_lift(o: EvalOptions) -> Any:
    return PersonaCosineLift(
        _need(o.embedder, "--embedder DIR", "persona-cos-lift"), draws=o.lift_draws, seed=o.seed
    )


def judge(kind: str):
    def make(o: EvalOptions) -> Any:
        from personadlg.metrics.judge.metrics import JUDGES

        _need(o.judge, "--judge RECIPE", f"judge-{kind}")
        return JUDGES[kind](o.judge_config(), cache_dir=o.judge_cache)

    return make


FACTORIES: dict[str, Any] = {
    **{f"bleu-{n}": bleu(n) for n in (1, 2, 3, 4)},
    **{f"bleu-{n}-sent": bleu(n, True) for n in (1, 2, 3, 4)},
    "rouge-l": rouge("f"),
    "rouge-l-r": rouge("r"),
    "rouge-l-p": rouge("p"),
    "dist-1": dist(1),
    "dist-2": dist(2),
    "dist-1-sent": dist(1, True),
    "dist-2-sent": dist(2, True),
    "sbleu": sbleu,
    "p-co": pco,
    "p-co-lift": pco_lift,
    "persona-copy": persona_copy,
    "persona-cos": persona_cos,
    "persona-cos-lift": persona_cos_lift,
    "nli-prob": nli("prob"),
    "nli-acc": nli("acc"),
    "c-score": c_score,
    "personalization-acc": personalization("acc"),
    "personalization-prob": personalization("prob"),
    "ppl": ppl,
    "emb-sim": emb_sim,
    "judge-persona": judge("persona"),
    "judge-attributes": judge("attributes"),
    "judge-coherence": judge("coherence"),
}

# module attributes named after the metrics (`bleu-1` → `bleu_1`), the registry's lazy targets
globals().update({_name.replace("-", "_"): _factory for _name, _factory in FACTORIES.items()})
