"""Data benchmarks (issue 2): convert + clean throughput and peak memory at 200k dialogues; near-dup scaling."""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path

from benchmarks._util import file_mb, run_json


def _vocab(rng: random.Random, n: int = 30_000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(n)]


_CUM: dict[int, list[float]] = {}


def _sentence(rng: random.Random, vocab: list[str], lo: int, hi: int) -> str:
    """Words drawn with Zipf frequencies (p ~ 1/rank), as in real text."""
    cum = _CUM.get(len(vocab))
    if cum is None:
        total, cum = 0.0, []
        for rank in range(1, len(vocab) + 1):
            total += 1.0 / rank
            cum.append(total)
        _CUM[len(vocab)] = cum
    return " ".join(rng.choices(vocab, cum_weights=cum, k=rng.randint(lo, hi))) + "."


def generate_sharegpt(path: Path, n: int, seed: int = 0) -> dict:
    """A ShareGPT JSONL file of N dialogues (4-8 messages, personas), with 2% exact and 2% near duplicates and 0.5% broken lines."""
    rng = random.Random(seed)
    vocab = _vocab(rng)
    personas = [[_sentence(rng, vocab, 4, 8) for _ in range(4)] for _ in range(2000)]
    recent: list[dict] = []
    planted = {"exact": 0, "near": 0, "broken": 0}
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            r = rng.random()
            if r < 0.005:
                f.write(f'{{"id": "broken-{i}", "conversations": [\n')
                planted["broken"] += 1
                continue
            if recent and r < 0.025:
                rec = dict(rng.choice(recent), id=f"x{i}")
                planted["exact"] += 1
            elif recent and r < 0.045:
                src = rng.choice(recent)
                conv = [dict(t) for t in src["conversations"]]
                words = conv[-1]["value"].split()
                words[rng.randrange(len(words))] = rng.choice(vocab)
                conv[-1]["value"] = " ".join(words)
                rec = {"id": f"x{i}", "conversations": conv, "persona": src["persona"]}
                planted["near"] += 1
            else:
                turns = rng.randint(2, 4) * 2
                conv = [
                    {
                        "from": "human" if k % 2 == 0 else "gpt",
                        "value": _sentence(rng, vocab, 6, 25),
                    }
                    for k in range(turns)
                ]
                rec = {"id": f"x{i}", "conversations": conv, "persona": rng.choice(personas)}
                recent.append(rec)
                if len(recent) > 500:
                    recent.pop(0)
            f.write(json.dumps(rec) + "\n")
    return planted


def near_dup_scaling(sizes: tuple[int, ...]) -> list[dict]:
    """Time MinHash signatures + LSH + verification alone on N dialogues of ~100 words."""
    from personadlg.data.clean.dedup import MinHasher, band_hashes, lsh_params, near_dup

    rows = []
    rng = random.Random(1)
    vocab = _vocab(rng)
    base = [_sentence(rng, vocab, 80, 120).split() for _ in range(max(sizes))]
    for i in range(0, len(base), 50):  # 2% near duplicates
        j = rng.randrange(len(base))
        base[j] = list(base[i])
        base[j][rng.randrange(len(base[j]))] = "changed"
    mh = MinHasher()
    b, r = lsh_params(0.8, 128)
    for n in sizes:
        docs = base[:n]
        t = time.perf_counter()
        sigs = mh.signatures(docs)
        t_sig = time.perf_counter() - t
        t = time.perf_counter()
        dup = near_dup(band_hashes(sigs, b, r), sigs, 0.8)
        t_lsh = time.perf_counter() - t
        rows.append(
            {
                "n": n,
                "signatures_s": t_sig,
                "lsh_verify_s": t_lsh,
                "total_s": t_sig + t_lsh,
                "found": int((dup >= 0).sum()),
            }
        )
    return rows


def run(n: int = 200_000, small: int = 50_000) -> dict:
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="pdlg-bench-") as tmp:
        d = Path(tmp)
        for size in (small, n):
            src = d / f"sharegpt-{size}.jsonl"
            t = time.perf_counter()
            planted = generate_sharegpt(src, size)
            gen_s = time.perf_counter() - t
            # convert stops on the planted broken lines (by design), so convert the clean output of...
            # ...a copy without them: convert is strict, clean is lenient
            strict_src = d / f"strict-{size}.jsonl"
            with (
                open(src, encoding="utf-8") as fin,
                open(strict_src, "w", encoding="utf-8") as fout,
            ):
                for line in fin:
                    if not line.startswith('{"id": "broken'):
                        fout.write(line)
            conv, conv_run = run_json(
                "convert", strict_src, "--from", "sharegpt", "--out", d / f"conv-{size}.jsonl"
            )
            rep, clean_run = run_json("clean", src, "--out", d / f"clean-{size}.jsonl")
            results[size] = {
                "input_mb": file_mb(src),
                "generate_s": gen_s,
                "planted": planted,
                "convert": {
                    "dialogues": conv["dialogues"],
                    "seconds": conv_run["seconds"],
                    "dialogues_per_s": conv["dialogues"] / conv_run["seconds"],
                    "peak_rss_mb": conv_run["peak_rss_mb"],
                },
                "clean": {
                    "units": rep["units"],
                    "clean": rep["clean"],
                    "rejected_by_filter": rep["rejected_by_filter"],
                    "seconds": clean_run["seconds"],
                    "dialogues_per_s": rep["units"] / clean_run["seconds"],
                    "peak_rss_mb": clean_run["peak_rss_mb"],
                },
            }
    results["near_dup_scaling"] = near_dup_scaling((small, n))
    return results


def render(results: dict) -> list[tuple[str, list[str], list[list[object]]]]:
    sizes = [k for k in results if isinstance(k, int)]
    rows = []
    for s in sizes:
        r = results[s]
        rows.append(
            [
                f"{s:,}",
                "convert (sharegpt → jsonl)",
                f"{r['convert']['dialogues_per_s']:,.0f}",
                f"{r['convert']['seconds']:.1f}",
                f"{r['convert']['peak_rss_mb']:.0f}",
                f"{r['input_mb']:.0f} MB",
            ]
        )
        rows.append(
            [
                f"{s:,}",
                "clean (all default filters)",
                f"{r['clean']['dialogues_per_s']:,.0f}",
                f"{r['clean']['seconds']:.1f}",
                f"{r['clean']['peak_rss_mb']:.0f}",
                ", ".join(f"{k} {v:,}" for k, v in r["clean"]["rejected_by_filter"].items()),
            ]
        )
    tables = [
        (
            "convert + clean (fresh process each)",
            ["dialogues", "step", "dialogues/s", "seconds", "peak RSS MB", "notes"],
            rows,
        )
    ]
    nd = results["near_dup_scaling"]
    nrows = [
        [
            f"{x['n']:,}",
            f"{x['signatures_s']:.2f}",
            f"{x['lsh_verify_s']:.2f}",
            f"{x['total_s']:.2f}",
            f"{x['found']:,}",
        ]
        for x in nd
    ]
    if len(nd) == 2:
        ratio = nd[1]["total_s"] / nd[0]["total_s"]
        nrows.append([f"{nd[1]['n'] / nd[0]['n']:.0f}x data", "", "", f"{ratio:.2f}x time", ""])
    tables.append(
        (
            "near-dup dedup (MinHash 128 perms, LSH, verification)",
            ["dialogues", "signatures s", "LSH+verify s", "total s", "near-dups found"],
            nrows,
        )
    )
    return tables
