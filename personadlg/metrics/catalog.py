"""How each metric is built from `eval`'s options: one factory per metric family.

A metric is declared once, in `personadlg.registry.METRICS`: its name, help, direction
(`higher_is_better`), the factory here that builds it and the factory's PARAMS (e.g. BLEU's
n-gram order). `make_metric` looks a name up there and calls `factory(opts, **params)`.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar, cast

from personadlg.errors import UsageError
from personadlg.metrics.base import Metric
from personadlg.metrics.lexical import CorpusBLEU, Distinct, RougeL, SelfBLEU, SentenceBLEU
from personadlg.metrics.model_based import (
    NLI,
    CScore,
    EmbeddingSimilarity,
    Perplexity,
    PersonaCosine,
    PersonaCosineLift,
    Personalization,
)
from personadlg.metrics.options import EvalOptions
from personadlg.metrics.persona import PCo, PCoLift, PersonaCopy
from personadlg.registry import METRICS

T = TypeVar("T")


class MetricFactory(Protocol):
    """A registry target: builds a configured metric from the options and the entry's params."""

    def __call__(self, opts: EvalOptions, /, **params: Any) -> Metric: ...


class MissingOption(UsageError):
    """A factory needs an option that was not given (`make_metric` names the metric)."""

    def __init__(self, flag: str) -> None:
        super().__init__(f"needs {flag}")
        self.flag = flag


def make_metric(name: str, opts: EvalOptions) -> Metric:
    """The metric registered as NAME, configured by OPTS."""
    entry = METRICS.entry(name)
    factory: MetricFactory = METRICS.get(name)
    try:
        metric = factory(opts, **entry.meta.get("params", {}))
    except MissingOption as err:
        raise UsageError(f"metric {name} needs {err.flag}") from None
    if metric.name != name:
        raise ValueError(f"metric '{name}' builds a metric named '{metric.name}'")
    return metric


def higher_is_better(name: str) -> bool:
    """Whether a higher value of the metric NAME is better (as registered)."""
    return bool(METRICS.entry(name).meta["higher_is_better"])


def _need(value: T | None, flag: str) -> T:
    if not value:
        raise MissingOption(flag)
    return value


# -- lexical ---------------------------------------------------------------------------------------


def corpus_bleu(opts: EvalOptions, *, order: int) -> CorpusBLEU:
    return CorpusBLEU(order, opts.tok)


def sentence_bleu(opts: EvalOptions, *, order: int) -> SentenceBLEU:
    return SentenceBLEU(order, opts.tok)


def rouge_l(opts: EvalOptions, *, part: str) -> RougeL:
    return RougeL(part, opts.tok)


def distinct(opts: EvalOptions, *, order: int, sentence: bool = False) -> Distinct:
    return Distinct(order, sentence, opts.tok)


def self_bleu(opts: EvalOptions) -> SelfBLEU:
    return SelfBLEU(order=opts.sbleu_order, sample=opts.sbleu_sample, seed=opts.seed, tok=opts.tok)


# -- persona ---------------------------------------------------------------------------------------


def p_co(opts: EvalOptions) -> PCo:
    return PCo(stopwords=opts.p_co_stopwords)


def p_co_lift(opts: EvalOptions) -> PCoLift:
    return PCoLift(stopwords=opts.p_co_stopwords, draws=opts.lift_draws, seed=opts.seed)


def persona_copy(opts: EvalOptions) -> PersonaCopy:
    return PersonaCopy()


# -- model-based -----------------------------------------------------------------------------------


def nli(opts: EvalOptions, *, kind: str) -> NLI:
    return NLI(
        _need(opts.nli, "--nli DIR"), kind, opts.nli_context_turns, opts.nli_entailment_label
    )


def c_score(opts: EvalOptions) -> CScore:
    return CScore(_need(opts.nli, "--nli DIR"), opts.nli_entailment_label)


def personalization(opts: EvalOptions, *, kind: str) -> Personalization:
    return Personalization(_need(opts.classifiers, "--classifier ATTR=DIR"), kind)


def perplexity(opts: EvalOptions) -> Perplexity:
    return Perplexity(_need(opts.lm, "--lm DIR"))


def emb_sim(opts: EvalOptions) -> EmbeddingSimilarity:
    return EmbeddingSimilarity(_need(opts.embedder, "--embedder DIR"))


def persona_cos(opts: EvalOptions) -> PersonaCosine:
    return PersonaCosine(_need(opts.embedder, "--embedder DIR"))


def persona_cos_lift(opts: EvalOptions) -> PersonaCosineLift:
    return PersonaCosineLift(
        _need(opts.embedder, "--embedder DIR"), draws=opts.lift_draws, seed=opts.seed
    )


# -- LLM judge -------------------------------------------------------------------------------------


def judge(opts: EvalOptions, *, kind: str) -> Metric:
    from personadlg.metrics.judge.metrics import JUDGES

    _need(opts.judge, "--judge RECIPE")
    # each judge class (not their shared base) declares `requires`
    return cast(Metric, JUDGES[kind](opts.judge_config(), cache_dir=opts.judge_cache))
