"""Evaluation benchmarks (issue 4): all lexical metrics on 10k and 100k generations, and self-BLEU
against the straightforward O(N²) implementation at N = 2,000 (same values required)."""

from __future__ import annotations

import random
import time

from benchmarks.bench_data import _sentence, _vocab

LEXICAL = ["bleu-1", "bleu-2", "rouge-l", "dist-1", "dist-2", "sbleu", "p-co", "persona-copy"]


def _corpus(n: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    vocab = _vocab(rng, 20_000)
    personas = [[_sentence(rng, vocab, 4, 8) for _ in range(4)] for _ in range(500)]
    return {
        "generations": [_sentence(rng, vocab, 5, 25) for _ in range(n)],
        "references": [_sentence(rng, vocab, 5, 25) for _ in range(n)],
        "personas": [rng.choice(personas) for _ in range(n)],
    }


def lexical_times(sizes: tuple[int, ...] = (10_000, 100_000)) -> list[dict]:
    from personadlg.metrics.base import EvalData
    from personadlg.metrics.catalog import make_metric
    from personadlg.metrics.options import EvalOptions

    rows = []
    for n in sizes:
        data = EvalData(**_corpus(n))
        per = {}
        for name in LEXICAL:
            metric = make_metric(name, EvalOptions())
            t = time.perf_counter()
            metric.compute(data).aggregate(None)
            per[name] = time.perf_counter() - t
        rows.append({"n": n, "total_s": sum(per.values()), **{f"{k}_s": v for k, v in per.items()}})
    return rows


def sbleu_speedup(n: int = 2000) -> dict:
    from personadlg.metrics.selfbleu import self_bleu, self_bleu_reference
    from personadlg.metrics.tokenize import get_tokenizer

    rng = random.Random(1)
    vocab = _vocab(rng, 3_000)
    tok = get_tokenizer("13a")
    tokens = [tok(_sentence(rng, vocab, 5, 15)) for _ in range(n)]
    tokens += [list(tokens[i]) for i in range(0, n // 20)]  # some exact duplicates
    t = time.perf_counter()
    fast = self_bleu(tokens)
    t_fast = time.perf_counter() - t
    t = time.perf_counter()
    slow = self_bleu_reference(tokens)
    t_slow = time.perf_counter() - t
    return {
        "n": len(tokens),
        "fast_s": t_fast,
        "quadratic_s": t_slow,
        "speedup": t_slow / t_fast,
        "max_abs_diff": max(abs(a - b) for a, b in zip(fast, slow)),
        "mean_sbleu": 100 * sum(fast) / len(fast),
    }


def run(quick: bool = False) -> dict:
    return {
        "lexical": lexical_times((2_000, 10_000) if quick else (10_000, 100_000)),
        "sbleu": sbleu_speedup(500 if quick else 2000),
    }


def render(results: dict) -> list[tuple[str, list[str], list[list[object]]]]:
    rows = [
        [f"{r['n']:,}", f"{r['total_s']:.1f}", *[f"{r[m + '_s']:.2f}" for m in LEXICAL]]
        for r in results["lexical"]
    ]
    tables = [
        (
            "lexical and persona metrics (seconds, one process)",
            ["generations", "total", *LEXICAL],
            rows,
        )
    ]
    s = results["sbleu"]
    tables.append(
        (
            "self-BLEU: exact O(n-grams) vs the straightforward O(N²) formula",
            ["N", "fast s", "O(N²) s", "speed-up", "max |diff|", "sbleu"],
            [
                [
                    f"{s['n']:,}",
                    f"{s['fast_s']:.3f}",
                    f"{s['quadratic_s']:.1f}",
                    f"{s['speedup']:,.0f}x",
                    f"{s['max_abs_diff']:.1e}",
                    f"{s['mean_sbleu']:.3f}",
                ]
            ],
        )
    )
    return tables
