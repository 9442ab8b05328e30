"""`make bench`: run the benchmarks and print their figures (also saved to runs/bench/results.json).

python benchmarks/run.py [--only data] [--quick]
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--only",
        action="append",
        help="run only these benchmarks (data, train, eval, synth, api, serve, hostile, cvae, persona, cvae_seeds, codebook, convai2, users)",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a fast check")
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "runs" / "bench" / "results.json",
        help="where the figures are saved as JSON",
    )
    args = parser.parse_args()
    console = Console() if sys.stdout.isatty() else Console(width=240)
    console.print(
        f"[bold]personadlg benchmarks[/] on {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    all_results = {}
    selected = args.only or [
        "data",
        "train",
        "eval",
        "synth",
        "api",
        "serve",
        "hostile",
        "cvae",
        "persona",
        "cvae_seeds",
        "codebook",
        "convai2",
        "users",
    ]
    for name in selected:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        if name == "data":
            res = module.run(n=20_000, small=5_000) if args.quick else module.run()
        elif name == "train":
            res = module.run(steps=40) if args.quick else module.run()
        elif name == "synth":
            res = module.run(levels=(1, 8, 32) if args.quick else (1, 8, 32, 128))
        else:
            res = module.run(quick=args.quick)
        all_results[name] = res
        for title, cols, rows in module.render(res):
            t = Table(title=title, title_justify="left", header_style="bold")
            for c in cols:
                t.add_column(c)
            for r in rows:
                t.add_row(*map(str, r))
            console.print(t)
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(all_results, indent=2, default=str))
    console.print(f"results → {out}")


if __name__ == "__main__":
    main()
