"""Output a person reads: log lines whole (not wrapped at 80 columns) and each message once."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

from tests.conftest import train_command

ROOT = Path(__file__).resolve().parents[1]


def test_logs_to_a_pipe_are_not_wrapped_and_not_repeated(small_data, tmp_path):
    run = tmp_path / "a-rather-long-run-directory-name-so-that-lines-pass-eighty-columns"
    r = subprocess.run(
        train_command(
            small_data, run, "train.max_steps=20", "train.log_every=5", "train.save_every=10"
        ),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    steps = [ln for ln in lines if ln.startswith("step ")]
    assert len(steps) == 4 and all(ln.rstrip().endswith("tok/s") for ln in steps), steps
    assert not [ln for ln in lines if ln.strip() in ("tok/s",) or ln.startswith(" ")]
    saved = [ln for ln in lines if "step-000010" in ln]
    assert len(saved) == 1, saved
    counts = Counter(ln for ln in lines if ln.strip())
    assert max(counts.values()) == 1, counts.most_common(3)
    assert any(len(ln) > 80 for ln in lines)  # long lines stay whole


def test_table_cells_are_printed_as_written_not_as_markup():
    from rich.console import Console

    from personadlg.cli._console import table

    console = Console(width=200, record=True)
    console.print(table("t", ["help"], [["render [age: 20s] [bold]pairs[/bold]"], [3]]))
    text = console.export_text()
    assert "render [age: 20s] [bold]pairs[/bold]" in text and "3" in text


def test_tables_to_a_pipe_fit_a_readable_width():
    """Piped, `ls recipes` once ran to hundreds of columns of box drawing: 120 columns (or $COLUMNS)."""
    import os
    import sys

    for columns, limit in ((None, 120), ("80", 80)):
        env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
        if columns:
            env["COLUMNS"] = columns
        r = subprocess.run(
            [sys.executable, "-m", "personadlg", "ls", "recipes"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert any("finetune/tiny" in ln for ln in lines)
        assert max(map(len, lines)) <= limit, max(lines, key=len)
        assert max(map(len, lines)) > limit - 10  # the table uses the width it has
    r = subprocess.run(
        [sys.executable, "-m", "personadlg", "ls", "recipes", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)  # --json stays exact: whole strings, however long
    assert "finetune/tiny" in {row["name"] for row in rows}
    assert max(len(row["summary"]) for row in rows) > 120
