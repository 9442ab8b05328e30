"""Persona metrics: P-Co (persona coverage), its persona-blind control P-Co lift, and persona-copy
(methods/metrics.md, "Persona").

Tokens are lower-cased words with punctuation removed (MORPHEUS kept ".", which puts a floor under
every score; we do not), and by default without English function words (`metrics/stopwords.py`):
with them a constant reply "i ." scores 13.95 on ConvAI2. P-Co lift is P-Co against the example's
own persona minus P-Co against other examples' personas (seeded derangements of the distinct
personas), so a system that ignores the persona scores about 0 whatever its vocabulary.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from personadlg.metrics.base import Computed, EvalData, mean_of, signature

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def words(text: str) -> list[str]:
    """Lower-cased words, punctuation removed ("i'm" stays one word)."""
    return _WORD.findall(text.lower().replace("’", "'"))


def persona_idf(personas: list[list[str]]) -> dict[str, float]:
    """idf(w) = 1 / (1 + ln(1 + df(w))), df = number of distinct persona sentences of the set containing w."""
    sentences = {" ".join(words(s)) for p in personas for s in p}
    df: dict[str, int] = {}
    for s in sentences:
        for w in set(s.split()):
            df[w] = df.get(w, 0) + 1
    return {w: 1.0 / (1.0 + math.log(1.0 + c)) for w, c in df.items()}


def pco_example(
    generation: str,
    persona: list[str],
    idf: dict[str, float],
    stopwords: frozenset[str] = frozenset(),
) -> float:
    """max over persona sentences s of the mean idf of the words of s that occur in the generation
    (0 if none); STOPWORDS never count."""
    gen = set(words(generation)) - stopwords
    best = 0.0
    for s in persona:
        shared = set(words(s)) & gen
        if shared:
            best = max(best, sum(idf[w] for w in shared) / len(shared))
    return best


def other_personas(personas: list[list[str]], *, draws: int, seed: int) -> list[list[int]]:
    """DRAWS assignments of another persona to every example: for each draw, the index of an example
    whose persona (by identity) differs from the example's own, from a seeded cyclic permutation
    of the distinct personas (a derangement: no persona is mapped to itself). -1 for examples
    without a persona. ValueError when there are fewer than two distinct personas."""
    from personadlg.data.persona import persona_identity

    idents = [persona_identity(p) for p in personas]
    first: dict[frozenset[str], int] = {}
    for i, ident in enumerate(idents):
        if ident:
            first.setdefault(ident, i)
    distinct = list(first)
    if len(distinct) < 2:
        raise ValueError("needs at least two different personas to compare against")
    rep = np.array([first[d] for d in distinct])
    slot = {d: k for k, d in enumerate(distinct)}
    own = np.array([slot[x] if x else -1 for x in idents])
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(draws):
        perm = np.arange(len(distinct))
        for k in range(len(perm) - 1, 0, -1):  # Sattolo: a uniformly random single cycle
            j = int(rng.integers(0, k))
            perm[k], perm[j] = perm[j], perm[k]
        out.append([int(rep[perm[o]]) if o >= 0 else -1 for o in own])
    return out


def _stopword_list(name: str) -> frozenset[str]:
    from personadlg.metrics.stopwords import STOPWORD_LISTS

    return STOPWORD_LISTS[name]


@dataclass
class PCo:
    """P-Co (persona coverage, Song et al. 2019 / MORPHEUS), mean over examples × 100.

    STOPWORDS: 'en' (default) leaves out English function words; 'none' is the papers' variant."""

    stopwords: str = "en"
    name: str = "p-co"
    higher_is_better: bool = True
    requires: tuple[str, ...] = ("personas",)

    def _parts(self) -> dict[str, str]:
        stop = _stopword_list(self.stopwords)
        return {
            "tok": "words-lc-nopunct",
            "stop": f"{self.stopwords}-{len(stop)}" if stop else "none",
            "idf": "1/(1+ln(1+df))",
            "df": "distinct-persona-sentences",
        }

    def signature(self) -> str:
        return signature("p-co", **self._parts(), agg="mean-of-max")

    def compute(self, data: EvalData) -> Computed:
        if not any(data.personas):
            raise ValueError("p-co needs personas; no example has one")
        idf = persona_idf(data.personas)
        stop = _stopword_list(self.stopwords)
        values = np.array(
            [
                pco_example(g, p, idf, stop) if p else np.nan
                for g, p in zip(data.generations, data.personas)
            ],
            dtype=float,
        )
        return Computed(
            aggregate=mean_of(values), per_example=values, n=int((~np.isnan(values)).sum())
        )


@dataclass
class PCoLift(PCo):
    """P-Co against the own persona minus P-Co against another example's persona (a seeded
    derangement of the distinct personas, averaged over DRAWS draws); about 0 for a system that
    ignores the persona."""

    draws: int = 10
    seed: int = 0
    name: str = "p-co-lift"

    def signature(self) -> str:
        return signature(
            "p-co-lift",
            **self._parts(),
            control=f"derangement-of-personas:draws{self.draws}:seed{self.seed}",
            agg="mean-of-own-minus-other",
        )

    def compute(self, data: EvalData) -> Computed:
        if not any(data.personas):
            raise ValueError("p-co-lift needs personas; no example has one")
        idf = persona_idf(data.personas)
        stop = _stopword_list(self.stopwords)
        draws = other_personas(data.personas, draws=self.draws, seed=self.seed)
        values = np.full(len(data), np.nan)
        for i, (g, p) in enumerate(zip(data.generations, data.personas)):
            if not p:
                continue
            others = [pco_example(g, data.personas[d[i]], idf, stop) for d in draws]
            values[i] = pco_example(g, p, idf, stop) - float(np.mean(others))
        return Computed(
            aggregate=mean_of(values), per_example=values, n=int((~np.isnan(values)).sum())
        )


def copies_persona(generation: str, persona: list[str], min_len: int = 5) -> bool:
    """True when the generation contains a run of MIN_LEN persona words (or a whole shorter persona sentence)."""
    gen = words(generation)
    text = " " + " ".join(gen) + " "
    for s in persona:
        w = words(s)
        if not w:
            continue
        n = min(min_len, len(w))
        for i in range(len(w) - n + 1):
            if " " + " ".join(w[i : i + n]) + " " in text:
                return True
    return False


@dataclass
class PersonaCopy:
    """% of generations that copy >= 5 consecutive words of their own persona (or a whole shorter sentence)."""

    min_len: int = 5
    name: str = "persona-copy"
    higher_is_better: bool = False
    requires: tuple[str, ...] = ("personas",)

    def signature(self) -> str:
        return signature(
            "persona-copy", tok="words-lc-nopunct", min_len=self.min_len, agg="percent"
        )

    def compute(self, data: EvalData) -> Computed:
        if not any(data.personas):
            raise ValueError("persona-copy needs personas; no example has one")
        values = np.array(
            [
                float(copies_persona(g, p, self.min_len)) if p else np.nan
                for g, p in zip(data.generations, data.personas)
            ],
            dtype=float,
        )
        return Computed(
            aggregate=mean_of(values), per_example=values, n=int((~np.isnan(values)).sum())
        )
