"""Lexical metrics: BLEU (corpus and sentence-mean), ROUGE-L, Dist-n (corpus and sentence-mean), self-BLEU.

All use one tokenizer setting (`tokenize.TokenSetting`: `tokenize`, `lowercase`); scores are 0-100.
Corpus BLEU is sacrebleu's formula (`BLEU.compute_bleu`) on clipped n-gram statistics gathered per
example, so bootstrap intervals come from resampling those statistics.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from personadlg.metrics.base import (
    Computed,
    EvalData,
    mean_computed,
    need_references,
    signature,
)
from personadlg.metrics.selfbleu import self_bleu, self_bleu_reference
from personadlg.metrics.tokenize import TokenSetting


def _ngram_stats(hyp: list[str], ref: list[str], order: int) -> list[int]:
    """[hyp_len, ref_len, correct_1..order, total_1..order] with counts clipped by the reference."""
    correct, total = [], []
    for n in range(1, order + 1):
        h = Counter(tuple(hyp[i : i + n]) for i in range(len(hyp) - n + 1))
        r = Counter(tuple(ref[i : i + n]) for i in range(len(ref) - n + 1))
        correct.append(sum(min(c, r[g]) for g, c in h.items()))
        total.append(max(0, len(hyp) - n + 1))
    return [len(hyp), len(ref), *correct, *total]


def _bleu_stats(data: EvalData, tok: TokenSetting, order: int, name: str) -> np.ndarray:
    """(N, 2 + 2 * ORDER) clipped n-gram statistics of every generation against its reference."""
    need_references(data, name)
    return np.array(
        [_ngram_stats(h, r, order) for h, r in zip(tok.of(data), tok.of(data, "references"))],
        dtype=np.int64,
    ).reshape(-1, 2 + 2 * order)


def _bleu(stats: np.ndarray, order: int, *, effective_order: bool) -> float:
    """sacrebleu's BLEU (exp smoothing) of summed STATS (`_bleu_stats` columns)."""
    from sacrebleu.metrics import BLEU

    return BLEU.compute_bleu(
        correct=stats[2 : 2 + order].tolist(),
        total=stats[2 + order :].tolist(),
        sys_len=int(stats[0]),
        ref_len=int(stats[1]),
        smooth_method="exp",
        effective_order=effective_order,
        max_ngram_order=order,
    ).score


def _bleu_signature(order: int, tok: TokenSetting, **parts: str) -> str:
    import sacrebleu

    return signature(
        "bleu",
        n=order,
        **tok.tags(),
        smooth="exp",
        **parts,
        nrefs=1,
        sacrebleu=sacrebleu.__version__,
    )


@dataclass
class CorpusBLEU:
    """Corpus BLEU with n-gram order N, uniform weights, one reference (sacrebleu's formula)."""

    order: int = 4
    tok: TokenSetting = field(default_factory=TokenSetting)
    requires: tuple[str, ...] = ("references",)

    @property
    def name(self) -> str:
        return f"bleu-{self.order}"

    def signature(self) -> str:
        return _bleu_signature(self.order, self.tok, agg="corpus")

    def compute(self, data: EvalData) -> Computed:
        stats = _bleu_stats(data, self.tok, self.order, self.name)

        def agg(idx: np.ndarray | None) -> float:
            summed = (stats if idx is None else stats[idx]).sum(axis=0)
            return _bleu(summed, self.order, effective_order=False)

        return Computed(aggregate=agg, n=len(data))


@dataclass
class SentenceBLEU:
    """Mean of sentence-level BLEU (exp smoothing, effective order), as sacrebleu's sentence_bleu."""

    order: int = 4
    tok: TokenSetting = field(default_factory=TokenSetting)
    requires: tuple[str, ...] = ("references",)

    @property
    def name(self) -> str:
        return f"bleu-{self.order}-sent"

    def signature(self) -> str:
        return _bleu_signature(self.order, self.tok, eff="yes", agg="sentence-mean")

    def compute(self, data: EvalData) -> Computed:
        stats = _bleu_stats(data, self.tok, self.order, self.name)
        values = np.array(
            [_bleu(row, self.order, effective_order=True) for row in stats], dtype=float
        )
        return mean_computed(values, scale=1.0, n=len(data))


_ROUGE_PARTS = {"f": "fmeasure", "r": "recall", "p": "precision"}
"""RougeL's PART → the rouge-score field (and its name in the signature)."""


class _RougeTokenizer:
    def __init__(self, tok: TokenSetting) -> None:
        self.tok = tok

    def tokenize(self, text: str) -> list[str]:
        return self.tok(text)


@dataclass
class RougeL:
    """Mean ROUGE-L (F-measure by default; recall or precision on request) via rouge-score, our tokenizer."""

    part: str = "f"
    tok: TokenSetting = field(default_factory=TokenSetting)
    requires: tuple[str, ...] = ("references",)

    @property
    def name(self) -> str:
        return "rouge-l" if self.part == "f" else f"rouge-l-{self.part}"

    def signature(self) -> str:
        import importlib.metadata

        return signature(
            "rouge-l",
            part=_ROUGE_PARTS[self.part],
            **self.tok.tags(),
            agg="mean",
            rouge_score=importlib.metadata.version("rouge-score"),
        )

    def compute(self, data: EvalData) -> Computed:
        from rouge_score import rouge_scorer

        refs = need_references(data, self.name)
        scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_RougeTokenizer(self.tok))
        values = np.array(
            [
                getattr(scorer.score(r, h)["rougeL"], _ROUGE_PARTS[self.part])
                for h, r in zip(data.generations, refs)
            ],
            dtype=float,
        )
        return mean_computed(values, n=len(data))


@dataclass
class Distinct:
    """Dist-n: distinct n-grams / n-grams over all generations (corpus), or the mean per-response ratio.

    N-grams never cross response boundaries. For the sentence variant, responses without an n-gram
    are left out of the mean.
    """

    order: int = 2
    sentence: bool = False
    tok: TokenSetting = field(default_factory=TokenSetting)
    requires: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"dist-{self.order}" + ("-sent" if self.sentence else "")

    def signature(self) -> str:
        return signature(
            "distinct",
            n=self.order,
            **self.tok.tags(),
            agg="sentence-mean" if self.sentence else "corpus",
        )

    def compute(self, data: EvalData) -> Computed:
        n = self.order
        grams = [[tuple(t[i : i + n]) for i in range(len(t) - n + 1)] for t in self.tok.of(data)]
        if self.sentence:
            values = np.array([len(set(g)) / len(g) if g else np.nan for g in grams], dtype=float)
            return mean_computed(values, n=len(data))
        vocab: dict[tuple[str, ...], int] = {}
        ids = [
            np.array([vocab.setdefault(x, len(vocab)) for x in g], dtype=np.int64) for g in grams
        ]
        sizes = np.array([len(g) for g in grams], dtype=np.int64)

        def agg(idx: np.ndarray | None) -> float:
            rows = range(len(ids)) if idx is None else np.unique(idx)
            total = int(sizes.sum() if idx is None else sizes[idx].sum())
            if total == 0:
                return float("nan")
            distinct = len(np.unique(np.concatenate([ids[i] for i in rows]))) if len(rows) else 0
            return 100.0 * distinct / total

        # corpus-level: a resample with duplicates would count repeated n-grams as new ones
        return Computed(aggregate=agg, n=len(data), interval="half-sampling")


@dataclass
class SelfBLEU:
    """Self-BLEU (lower = more diverse): BLEU-N of each generation against all the others, averaged.

    Exactly NLTK's multi-reference `sentence_bleu` with method1 smoothing; SAMPLE > 0 scores each
    generation against SAMPLE seeded random others instead (MIRACLE's variant).
    """

    order: int = 4
    sample: int = 0
    seed: int = 0
    tok: TokenSetting = field(default_factory=TokenSetting)
    requires: tuple[str, ...] = ()

    name = "sbleu"

    def signature(self) -> str:
        refs = f"sample{self.sample}:seed{self.seed}" if self.sample else "all-others"
        return signature(
            "self-bleu",
            n=self.order,
            **self.tok.tags(),
            smooth="nltk-method1",
            refs=refs,
            agg="mean",
        )

    def compute(self, data: EvalData) -> Computed:
        tokens = self.tok.of(data)

        def scores_of(toks: list[list[str]]) -> list[float]:
            if self.sample:
                return self_bleu_reference(toks, self.order, sample=self.sample, seed=self.seed)
            return self_bleu(toks, self.order)

        values = np.array(scores_of(tokens), dtype=float)

        def on_subset(idx: np.ndarray) -> float:  # each generation against the others of the subset
            return 100.0 * float(np.mean(scores_of([tokens[i] for i in idx])))

        return mean_computed(
            values, n=len(data), interval="half-sampling", on_subset=on_subset, max_replicates=200
        )
