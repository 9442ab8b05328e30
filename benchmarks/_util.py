"""Benchmark helpers: run a personadlg command in a fresh process and measure wall time and peak RSS."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

_CHILD = """
import resource, sys, json, atexit
def _report():
    sys.stderr.write("\\n__PEAK_RSS_KB__=" + str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) + "\\n")
atexit.register(_report)
from personadlg.cli import main
main(sys.argv[1:])
"""


def run_cli(*args: object, env: dict | None = None) -> dict:
    """Run `personadlg ARGS` in a child process; return seconds, peak RSS (MB) and stdout."""
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, *map(str, args)], capture_output=True, text=True, env=env
    )
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(
            f"personadlg {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-2000:]}"
        )
    peak = next(
        int(line.split("=")[1])
        for line in proc.stderr.splitlines()
        if line.startswith("__PEAK_RSS_KB__=")
    )
    return {"seconds": seconds, "peak_rss_mb": peak / 1024, "stdout": proc.stdout}


def run_json(*args: object) -> tuple[dict, dict]:
    r = run_cli(*args, "--json")
    return json.loads(r["stdout"]), r


def file_mb(path: Path) -> float:
    return path.stat().st_size / 1e6
