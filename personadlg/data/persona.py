"""Persona identity: the same persona, however its sentences are ordered, cased or punctuated.

ConvAI2 reuses each persona with its sentences shuffled (and, in its "revised" variant,
paraphrased), so a persona is identified by the *set* of its normalised sentences, and personas
that share sentences can be grouped (`split --by persona --persona-overlap K`), so that an unseen
role at test time shares no persona sentence with training.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

_FINAL_PUNCT = re.compile(r"[\s.!?,;:…]+$")


def normalize_sentence(text: str) -> str:
    """Case-folded, whitespace collapsed, final punctuation removed: "I like tea ." → "i like tea"."""
    return _FINAL_PUNCT.sub("", " ".join(text.casefold().split()))


def persona_identity(sentences: Iterable[str]) -> frozenset[str]:
    """The identity of a persona: the set of its normalised, non-empty sentences."""
    return frozenset(s for s in (normalize_sentence(x) for x in sentences) if s)


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def group_personas(personas: Sequence[frozenset[str]], *, overlap: int = 1) -> list[int]:
    """Group ids (one per persona, 0-based, in order of first member) where personas sharing at
    least OVERLAP sentences are in one group, transitively (connected components).

    OVERLAP 0 groups only identical sets (each distinct persona is its own group)."""
    n = len(personas)
    uf = _UnionFind(n)
    if overlap >= 1:
        holders: dict[str, list[int]] = defaultdict(list)
        for i, p in enumerate(personas):
            for s in p:
                holders[s].append(i)
        if overlap == 1:
            for ids in holders.values():
                for j in ids[1:]:
                    uf.union(ids[0], j)
        else:
            shared: Counter[tuple[int, int]] = Counter()
            for ids in holders.values():
                for a in range(len(ids)):
                    for b in range(a + 1, len(ids)):
                        shared[(ids[a], ids[b])] += 1
            for (a, b), count in shared.items():
                if count >= overlap:
                    uf.union(a, b)
    roots: dict[int, int] = {}
    return [roots.setdefault(uf.find(i), len(roots)) for i in range(n)]
