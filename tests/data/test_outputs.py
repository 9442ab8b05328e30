"""Where outputs may go: never onto a device or a FIFO (the atomic rename would replace it by a
regular file: as root, `--out /dev/null` destroyed /dev/null), never an empty name; temporary files
of killed writers are removed by the next write; a bad PERSONADLG_MAX_LINE_BYTES is a clear error."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from personadlg.data.jsonl import AtomicWriter, remove_stale_temporaries, write_jsonl
from personadlg.errors import UsageError
from tests.conftest import write_jsonl as write_records

GOOD = {
    "id": "a",
    "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
}


def test_a_fifo_is_not_replaced_by_the_output(tmp_path, cli):
    src = write_records(tmp_path / "in.jsonl", [GOOD])
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for command in (["convert", src, "--out", fifo], ["clean", src, "--out", fifo]):
        r = cli(*command)
        assert r.code == 2 and "Traceback" not in r.stderr, r.stderr
        assert "exists and is not a regular file" in r.stderr
        assert not fifo.is_file() and fifo.exists()  # still the FIFO
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "pipe"]


def test_a_device_is_refused(tmp_path):
    with pytest.raises(UsageError, match="not a regular file"):
        AtomicWriter("/dev/null").open()
    assert not os.path.isfile("/dev/null")


@pytest.mark.parametrize("command", ["convert", "clean"])
def test_an_empty_output_name_is_a_usage_error(tmp_path, cli, command):
    src = write_records(tmp_path / "in.jsonl", [GOOD])
    r = cli(command, src, "--out", "")
    assert r.code == 2 and "Traceback" not in r.stderr and "ValueError" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: --out")
    with pytest.raises(UsageError, match="expected a file to write, got ''"):
        AtomicWriter("")


def test_temporaries_of_killed_writers_are_removed(tmp_path):
    out = tmp_path / "o.jsonl"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)  # a process that has exited
    stale = tmp_path / f".o.jsonl.tmp-{dead_pid}-abcd1234"
    live = tmp_path / f".o.jsonl.tmp-{os.getppid()}-abcd1234"  # a running process: kept
    other = tmp_path / f".other.jsonl.tmp-{dead_pid}-abcd1234"  # another output's: kept
    for p in (stale, live, other):
        p.write_text("half-written\n")
    write_jsonl(out, [GOOD])
    assert not stale.exists() and live.exists() and other.exists()
    assert out.read_text().count("\n") == 1
    assert remove_stale_temporaries(out) == []


@pytest.mark.parametrize("value", ["abc", "", "0", "-5"])
def test_a_bad_max_line_bytes_is_a_clear_error(tmp_path, value):
    src = write_records(tmp_path / "in.jsonl", [GOOD])
    r = subprocess.run(
        [sys.executable, "-m", "personadlg", "stats", str(src)],
        capture_output=True,
        text=True,
        env={**os.environ, "PERSONADLG_MAX_LINE_BYTES": value},
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (
        f"error: PERSONADLG_MAX_LINE_BYTES: expected a number of bytes (at least 1), got {value!r}"
    )


def test_spool_folders_of_killed_cleans_are_removed(tmp_path, cli):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".clean-{int(dead.stdout)}-x1y2"
    live = tmp_path / f".clean-{os.getppid()}-x1y2"
    for d in (stale, live):
        d.mkdir()
        (d / "spool.txt").write_text("a copy of the data\n")
    src = write_records(tmp_path / "in.jsonl", [GOOD])
    r = cli("clean", src, "--out", tmp_path / "o.jsonl")
    assert r.code == 0, r.stderr
    assert not stale.exists() and live.exists()
    assert not [p for p in tmp_path.glob(".clean-*") if p != live]  # its own spool is gone too
