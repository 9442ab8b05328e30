"""The collapse alarm: generations that are mostly one string, or nearly copies of each other.

A decoder that collapses (the same reply for every context, or near copies) can still score well
on BLEU-like metrics against short references; `generate` and `eval` therefore check every set of
generations and record `collapse` in their summary / report, with an alarm when more than
`max_duplicate_share` of the generations repeat another one, or self-BLEU exceeds `max_sbleu`.

Its self-BLEU is `eval`'s `sbleu`: the same function, tokens (13a, cased) and order, stamped with the
same signature, so `generate`'s alarm and `eval`'s table never disagree about one file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

MAX_DUPLICATE_SHARE = 0.2
MAX_SBLEU = 90.0


def collapse_report(
    generations: Sequence[str],
    *,
    sbleu: float | None = None,
    sbleu_signature: str | None = None,
    max_duplicate_share: float = MAX_DUPLICATE_SHARE,
    max_sbleu: float = MAX_SBLEU,
) -> dict[str, Any]:
    """{n, duplicate_share, distinct, most_common, most_common_share, sbleu, sbleu_signature, alarm, message}.

    SBLEU: the set's self-BLEU (0-100) when `eval` already computed it (with SBLEU_SIGNATURE);
    otherwise it is computed here exactly as `eval`'s default `sbleu` (O(total n-grams))."""
    n = len(generations)
    if n == 0:
        return {"n": 0, "alarm": False}
    counts = Counter(" ".join(g.split()) for g in generations)
    text, top = counts.most_common(1)[0]
    duplicate_share = (n - len(counts)) / n
    if sbleu is None and n >= 2:
        from personadlg.metrics.lexical import SelfBLEU
        from personadlg.metrics.selfbleu import self_bleu

        metric = SelfBLEU()
        scores = self_bleu([metric.tok(g) for g in generations], metric.order)
        sbleu = 100.0 * sum(scores) / len(scores)
        sbleu_signature = metric.signature()
    alarm = duplicate_share > max_duplicate_share or (sbleu is not None and sbleu > max_sbleu)
    out: dict[str, Any] = {
        "n": n,
        "distinct": len(counts),
        "duplicate_share": round(100 * duplicate_share, 2),
        "most_common": text[:200],
        "most_common_share": round(100 * top / n, 2),
        "sbleu": None if sbleu is None else round(sbleu, 2),
        "sbleu_signature": sbleu_signature,
        "thresholds": {"duplicate_share": 100 * max_duplicate_share, "sbleu": max_sbleu},
        "alarm": alarm,
    }
    if alarm:
        out["message"] = (
            f"the generations look collapsed: {out['duplicate_share']:.1f}% of {n:,} repeat another "
            f"generation (the most common, {text[:60]!r}, is {out['most_common_share']:.1f}%), "
            f"sbleu {out['sbleu']:.2f} (alarm above {100 * max_duplicate_share:.0f}% repeats or "
            f"sbleu {max_sbleu:.0f})"
        )
    return out
