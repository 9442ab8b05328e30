"""Self-BLEU, exactly NLTK's multi-reference `sentence_bleu` with method1 smoothing, in O(total n-grams).

For generation h_i the references are all other generations (leave-one-out by position, so an
identical duplicate counts as a reference). Per n-gram order:
  - clipped matches of h_i = Σ_g min(count_i(g), max_{j≠i} count_j(g)); keeping, per n-gram, the
    largest count, who owns it and the second-largest count gives max_{j≠i} in O(1);
  - the denominator is max(1, number of n-grams of h_i);
  - a zero numerator becomes ε = 0.1 (method1); no unigram match gives a score of 0.
Brevity penalty against the closest other length (ties → the shorter), found by bisection in the
sorted distinct lengths. `self_bleu_reference` is the straightforward O(N²) formula it must equal.
"""

from __future__ import annotations

import bisect
import math
import random
from collections import Counter
from collections.abc import Sequence

EPSILON = 0.1


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _bleu(
    numerators: list[int],
    denominators: list[int],
    hyp_len: int,
    ref_len: int,
    weights: Sequence[float],
) -> float:
    if numerators[0] == 0:
        return 0.0
    if hyp_len > ref_len:
        bp = 1.0
    elif hyp_len == 0:
        bp = 0.0
    else:
        bp = math.exp(1 - ref_len / hyp_len)
    logs = [
        w * math.log((num if num else EPSILON) / den)
        for w, num, den in zip(weights, numerators, denominators)
    ]
    return bp * math.exp(math.fsum(logs))


def self_bleu(token_lists: Sequence[Sequence[str]], max_order: int = 4) -> list[float]:
    """Per-generation self-BLEU (0..1) against all other generations. O(total n-grams + N log N)."""
    n_hyp = len(token_lists)
    if n_hyp < 2:
        return [0.0] * n_hyp
    weights = [1.0 / max_order] * max_order
    numerators = [[0] * max_order for _ in range(n_hyp)]
    denominators = [[1] * max_order for _ in range(n_hyp)]
    for k in range(max_order):
        n = k + 1
        counts = [_ngrams(t, n) for t in token_lists]
        top: dict[
            tuple[str, ...], list[int]
        ] = {}  # n-gram -> [largest count, its owner, second-largest count]
        for i, cnt in enumerate(counts):
            for g, c in cnt.items():
                t = top.get(g)
                if t is None:
                    top[g] = [c, i, 0]
                elif c > t[0]:
                    t[2], t[0], t[1] = t[0], c, i
                elif c > t[2]:
                    t[2] = c
        for i, cnt in enumerate(counts):
            match = 0
            for g, c in cnt.items():
                t = top[g]
                match += min(c, t[0] if t[1] != i else t[2])
            numerators[i][k] = match
            denominators[i][k] = max(1, sum(cnt.values()))
    lengths = [len(t) for t in token_lists]
    count_of = Counter(lengths)
    distinct = sorted(count_of)
    out = []
    for i, c in enumerate(lengths):
        out.append(
            _bleu(numerators[i], denominators[i], c, _closest_other(c, distinct, count_of), weights)
        )
    return out


def _closest_other(length: int, distinct: list[int], count_of: Counter[int]) -> int:
    """The closest length among the other generations (one instance of LENGTH is the generation itself)."""
    pos = bisect.bisect_left(distinct, length)
    candidates = []
    for j in (pos - 2, pos - 1, pos, pos + 1, pos + 2):
        if 0 <= j < len(distinct):
            v = distinct[j]
            if v == length and count_of[v] < 2:
                continue
            candidates.append(v)
    return min(candidates, key=lambda r: (abs(r - length), r))


def self_bleu_reference(
    token_lists: Sequence[Sequence[str]], max_order: int = 4, sample: int = 0, seed: int = 0
) -> list[float]:
    """The straightforward O(N²) computation of the same formula (reference; and MIRACLE's sampled variant).

    Each generation's n-gram counts are built once; then for every generation the clipping count
    of each of its n-grams is the maximum over all other generations. With SAMPLE > 0, each
    generation is scored against SAMPLE other generations drawn with a seeded RNG instead.
    """
    weights = [1.0 / max_order] * max_order
    rng = random.Random(seed)
    counts = [[_ngrams(t, k + 1) for k in range(max_order)] for t in token_lists]
    out = []
    for i, hyp in enumerate(token_lists):
        others = [j for j in range(len(token_lists)) if j != i]
        if sample and sample < len(others):
            others = rng.sample(others, sample)
        if not others:
            out.append(0.0)
            continue
        nums, dens = [], []
        for k in range(max_order):
            mine = counts[i][k]
            best = dict.fromkeys(mine, 0)
            for j in others:
                theirs = counts[j][k]
                for g in mine:
                    c = theirs.get(g, 0)
                    if c > best[g]:
                        best[g] = c
            nums.append(sum(min(c, best[g]) for g, c in mine.items()))
            dens.append(max(1, sum(mine.values())))
        ref_len = min((len(token_lists[j]) for j in others), key=lambda r: (abs(r - len(hyp)), r))
        out.append(_bleu(nums, dens, len(hyp), ref_len, weights))
    return out
