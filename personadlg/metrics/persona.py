"""Persona metrics: P-Co (persona coverage), its persona-blind control P-Co lift, and persona-copy.

Tokens are lower-cased words with punctuation removed (MORPHEUS kept ".", which puts a floor under
every score; we do not), and by default without English function words (`data/stopwords.py`):
with them a constant reply "i ." scores 13.95 on ConvAI2. P-Co lift is P-Co against the example's
own persona minus P-Co against other examples' personas (seeded derangements of the distinct
personas), so a system that ignores the persona scores about 0 whatever its vocabulary.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from personadlg.data.stopwords import ENGLISH
from personadlg.metrics.base import Computed, EvalData, mean_computed, need_personas, signature

STOPWORD_LISTS: dict[str, frozenset[str]] = {"en": ENGLISH, "none": frozenset()}
"""The words P-Co may leave out, by `--p-co-stopwords` name ('none' is the papers' variant)."""

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


def lift_values(
    personas: list[list[str]],
    others: list[list[int]],
    score: Callable[[int, list[str]], float],
) -> np.ndarray:
    """Per example i with a persona: SCORE(i, own persona) minus the mean of SCORE(i, another
    example's persona) over the draws OTHERS (`other_personas`); NaN without a persona."""
    values = np.full(len(personas), np.nan)
    for i, p in enumerate(personas):
        if p:
            values[i] = score(i, p) - float(np.mean([score(i, personas[d[i]]) for d in others]))
    return values


def lift_parts(draws: int, seed: int) -> dict[str, str]:
    """How a lift is computed, in its signature (after the parts of the metric it lifts)."""
    return {
        "control": f"derangement-of-personas:draws{draws}:seed{seed}",
        "agg": "mean-of-own-minus-other",
    }


@dataclass
class PCo:
    """P-Co (persona coverage, Song et al. 2019 / MORPHEUS), mean over examples × 100.

    STOPWORDS: 'en' (default) leaves out English function words; 'none' is the papers' variant."""

    stopwords: str = "en"
    requires: tuple[str, ...] = ("personas",)
    name = "p-co"

    def _parts(self) -> dict[str, str]:
        stop = STOPWORD_LISTS[self.stopwords]
        return {
            "tok": "words-lc-nopunct",
            "stop": f"{self.stopwords}-{len(stop)}" if stop else "none",
            "idf": "1/(1+ln(1+df))",
            "df": "distinct-persona-sentences",
        }

    def signature(self) -> str:
        return signature("p-co", **self._parts(), agg="mean-of-max")

    def compute(self, data: EvalData) -> Computed:
        need_personas(data, self.name)
        idf = persona_idf(data.personas)
        stop = STOPWORD_LISTS[self.stopwords]
        values = np.array(
            [
                pco_example(g, p, idf, stop) if p else np.nan
                for g, p in zip(data.generations, data.personas)
            ],
            dtype=float,
        )
        return mean_computed(values)


@dataclass
class PCoLift(PCo):
    """P-Co against the own persona minus P-Co against another example's persona (a seeded
    derangement of the distinct personas, averaged over DRAWS draws); about 0 for a system that
    ignores the persona."""

    draws: int = 10
    seed: int = 0
    name = "p-co-lift"

    def signature(self) -> str:
        return signature("p-co-lift", **self._parts(), **lift_parts(self.draws, self.seed))

    def compute(self, data: EvalData) -> Computed:
        need_personas(data, self.name)
        idf = persona_idf(data.personas)
        stop = STOPWORD_LISTS[self.stopwords]
        others = other_personas(data.personas, draws=self.draws, seed=self.seed)
        gens = data.generations
        values = lift_values(
            data.personas, others, lambda i, persona: pco_example(gens[i], persona, idf, stop)
        )
        return mean_computed(values)


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
    requires: tuple[str, ...] = ("personas",)
    name = "persona-copy"

    def signature(self) -> str:
        return signature(
            "persona-copy", tok="words-lc-nopunct", min_len=self.min_len, agg="percent"
        )

    def compute(self, data: EvalData) -> Computed:
        need_personas(data, self.name)
        values = np.array(
            [
                float(copies_persona(g, p, self.min_len)) if p else np.nan
                for g, p in zip(data.generations, data.personas)
            ],
            dtype=float,
        )
        return mean_computed(values)
