"""Training and generation benchmarks (issue 3): tiny-recipe tokens/s and memory with 1 and 2 processes,
generation responses/s (greedy and sampling, batch 1 vs 32), and `personadlg --help` start-up time."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def _measured(cmd: list[str], cwd: Path) -> dict:
    """Run CMD (and its children) from a wrapper process; wall seconds and the largest per-process peak RSS."""
    wrapper = (
        "import resource, subprocess, sys, json, time\n"
        "t = time.perf_counter()\n"
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(json.dumps({'rc': r.returncode, 'seconds': time.perf_counter() - t,\n"
        "  'peak_rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 'stderr': r.stderr[-2000:]}))\n"
    )
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run(
        [sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, cwd=cwd, env=env
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    if res["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res['stderr']}")
    return res


def _tokens_per_s(run_dir: Path) -> float:
    lines = [
        json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()
    ]
    rates = [m["tokens_per_s"] for m in lines if m.get("split") == "train"][
        1:
    ]  # the first window includes start-up
    return statistics.mean(rates)


def run(steps: int = 120) -> dict:
    from personadlg.assets import demo_corpus
    from personadlg.data.split import split

    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="pdlg-bench-train-") as tmp:
        d = Path(tmp)
        split(demo_corpus(), out_dir=d / "data", valid=0.1, test=0.1, seed=0)
        common = [
            "train",
            "finetune/tiny",
            f"data.train={d / 'data' / 'train.jsonl'}",
            "data.valid=null",
            f"train.max_steps={steps}",
            "train.log_every=20",
            "train.batch_size=8",
        ]
        single = _measured(
            [str(BIN / "personadlg"), "-q", *common, f"train.output_dir={d / 'one'}"], d
        )
        double = _measured(
            [
                str(BIN / "accelerate"),
                "launch",
                "--num_processes",
                "2",
                "--num_machines",
                "1",
                "--mixed_precision",
                "no",
                "--dynamo_backend",
                "no",
                "-m",
                "personadlg",
                "-q",
                *common,
                "train.batch_size=4",
                f"train.output_dir={d / 'two'}",
            ],
            d,
        )
        results["train"] = {
            "steps": steps,
            "global_batch": 8,
            "one_process": {
                "tokens_per_s": _tokens_per_s(d / "one"),
                "seconds": single["seconds"],
                "peak_rss_mb": single["peak_rss_mb"],
            },
            "two_processes": {
                "tokens_per_s": _tokens_per_s(d / "two"),
                "seconds": double["seconds"],
                "peak_rss_mb_per_process": double["peak_rss_mb"],
            },
        }
        results["generate"] = _generation(d / "one" / "final", d / "data" / "test.jsonl", d)
    results["startup"] = _startup()
    return results


def _generation(ckpt: Path, test: Path, d: Path) -> list[dict]:
    from personadlg.generation.generate import generate_file
    from personadlg.training.checkpoint import load_checkpoint

    loaded = load_checkpoint(ckpt)
    rows = []
    for mode, opts in (("greedy", []), ("sampling (top-p 0.9)", ["do_sample=true", "top_p=0.9"])):
        for bs in (1, 32):
            out = d / f"gen-{bs}-{len(opts)}.jsonl"
            s = generate_file(
                ckpt,
                test,
                out,
                overrides=[*opts, f"batch_size={bs}", "max_new_tokens=32", "min_new_tokens=32"],
                loaded=loaded,
            )
            words = [len(json.loads(x)["generation"].split()) for x in out.read_text().splitlines()]
            rows.append(
                {
                    "decoding": mode,
                    "batch_size": bs,
                    "responses": s["generated"],
                    "responses_per_s": s["responses_per_s"],
                    "mean_words": statistics.mean(words),
                }
            )
    return rows


def _startup(n: int = 7) -> dict:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run([str(BIN / "personadlg"), "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    code = "import sys; from personadlg.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\nprint(sorted(m for m in ('torch','transformers','numpy') if m in sys.modules))"
    heavy = (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "heavy_modules_imported": heavy,
    }


def render(results: dict) -> list[tuple[str, list[str], list[list[object]]]]:
    t = results["train"]
    rows = [
        [
            "1 process, batch 8",
            f"{t['one_process']['tokens_per_s']:,.0f}",
            f"{t['one_process']['seconds']:.1f}",
            f"{t['one_process']['peak_rss_mb']:.0f}",
        ],
        [
            "2 processes (gloo), batch 4 each",
            f"{t['two_processes']['tokens_per_s']:,.0f}",
            f"{t['two_processes']['seconds']:.1f}",
            f"{t['two_processes']['peak_rss_mb_per_process']:.0f} (per process)",
        ],
    ]
    tables = [
        (
            f"train finetune/tiny, {t['steps']} steps, global batch {t['global_batch']} (wall time includes start-up)",
            ["setup", "tokens/s", "seconds", "peak RSS MB"],
            rows,
        )
    ]
    g = [
        [
            r["decoding"],
            r["batch_size"],
            r["responses"],
            f"{r['mean_words']:.1f}",
            f"{r['responses_per_s']:.1f}",
        ]
        for r in results["generate"]
    ]
    tables.append(
        (
            "generate (tiny model, test split, exactly 32 new tokens each)",
            ["decoding", "batch", "responses", "mean words", "responses/s"],
            g,
        )
    )
    s = results["startup"]
    tables.append(
        (
            "start-up",
            ["command", "median s", "min s", "heavy modules imported"],
            [
                [
                    "personadlg --help",
                    f"{s['median_s']:.3f}",
                    f"{s['min_s']:.3f}",
                    s["heavy_modules_imported"],
                ]
            ],
        )
    )
    return tables
