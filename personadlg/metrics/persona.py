"""Persona metrics: P-Co (persona coverage) and persona-copy (methods/metrics.md, "Persona").

Tokens are lower-cased words with punctuation removed (MORPHEUS kept ".", which puts a floor under
every score; we do not).
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


def pco_example(generation: str, persona: list[str], idf: dict[str, float]) -> float:
    """max over persona sentences s of the mean idf of the words of s that occur in the generation (0 if none)."""
    gen = set(words(generation))
    best = 0.0
    for s in persona:
        shared = set(words(s)) & gen
        if shared:
            best = max(best, sum(idf[w] for w in shared) / len(shared))
    return best


@dataclass
class PCo:
    """P-Co (persona coverage, Song et al. 2019 / MORPHEUS), mean over examples × 100."""

    name: str = "p-co"
    higher_is_better: bool = True
    requires: tuple[str, ...] = ("personas",)

    def signature(self) -> str:
        return signature(
            "p-co",
            tok="words-lc-nopunct",
            idf="1/(1+ln(1+df))",
            df="distinct-persona-sentences",
            agg="mean-of-max",
        )

    def compute(self, data: EvalData) -> Computed:
        if not any(data.personas):
            raise ValueError("p-co needs personas; no example has one")
        idf = persona_idf(data.personas)
        values = np.array(
            [
                pco_example(g, p, idf) if p else np.nan
                for g, p in zip(data.generations, data.personas)
            ],
            dtype=float,
        )
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
