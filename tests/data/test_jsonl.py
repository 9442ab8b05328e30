from __future__ import annotations

import json
import os

import pytest

from personadlg.data.jsonl import (
    AtomicWriter,
    Bad,
    atomic_outputs,
    check_nonempty,
    iter_json_array,
    iter_json_lines,
    write_jsonl,
)
from personadlg.errors import DataError


def test_lines_are_numbered_and_blank_lines_skipped(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\n   \n{"b": 2}\r\n')
    items = list(iter_json_lines(p))
    assert [(i[0], i[2]) for i in items] == [(1, {"a": 1}), (4, {"b": 2})]


@pytest.mark.parametrize(
    "content,message",
    [
        (b'{"a": 1\n', "not valid JSON: Expecting ',' delimiter (column 8)"),
        (b'{"a": "\xff"}\n', "not valid UTF-8: byte 0xff at byte offset 7"),
        (b"[" * 100_000 + b"\n", "not valid JSON"),
    ],
)
def test_bad_lines_become_bad_items_with_raw_text(tmp_path, content, message):
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'{"ok": true}\n' + content + b'{"ok": 2}\n')
    items = list(iter_json_lines(p))
    assert len(items) == 3
    bad = items[1]
    assert isinstance(bad, Bad) and bad.line == 2
    assert message in str(bad.error) and str(bad.error).startswith(f"{p}:2: ")
    assert bad.raw.startswith(content[:5].decode("utf-8", errors="replace"))
    assert items[2][2] == {"ok": 2}


def test_overlong_line_is_skipped_in_constant_memory(tmp_path):
    p = tmp_path / "big.jsonl"
    with open(p, "w") as f:
        f.write('{"id": "a"}\n')
        f.write(json.dumps({"id": "b", "x": "y" * 300_000}) + "\n")
        f.write('{"id": "c"}\n')
    items = list(iter_json_lines(p, max_line_bytes=100_000))
    assert isinstance(items[1], Bad)
    assert "line is 293.0 KiB, longer than the limit of 97.7 KiB" in str(items[1].error)
    assert items[2][2] == {"id": "c"} and items[2][0] == 3


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(DataError, match="empty file: expected at least one record"):
        check_nonempty(empty)
    with pytest.raises(DataError, match="no such file"):
        check_nonempty(tmp_path / "nope.jsonl")


def test_json_array_streams_elements_with_start_lines(tmp_path):
    p = tmp_path / "a.json"
    p.write_text('[\n  {"a": 1},\n  {"b": [1,\n 2]},\n  "s"\n]\n')
    assert [(i[0], i[2]) for i in iter_json_array(p)] == [
        (2, {"a": 1}),
        (3, {"b": [1, 2]}),
        (5, "s"),
    ]
    p.write_text('[\n {"a": 1},\n {"b": [1,\n 2}\n]')
    items = list(iter_json_array(p))
    assert items[0][2] == {"a": 1} and isinstance(items[1], Bad) and items[1].line == 3
    p.write_text('{"a": 1}\n')
    with pytest.raises(DataError, match="expected a JSON list"):
        list(iter_json_array(p))


def test_json_array_larger_than_the_read_buffer(tmp_path):
    p = tmp_path / "big.json"
    records = [{"i": i, "text": "word " * 50} for i in range(20_000)]  # ~5 MB, many 1 MiB chunks
    p.write_text(json.dumps(records, indent=1))
    got = list(iter_json_array(p))
    assert [g[2]["i"] for g in got] == list(range(20_000))
    assert got[1][0] == 2 + (got[0][1].count("\n") + 1)  # start lines are exact


def test_atomic_writer_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text("previous\n")
    with pytest.raises(RuntimeError), AtomicWriter(target) as f:
        f.write("half")
        raise RuntimeError("killed")
    assert target.read_text() == "previous\n"
    assert os.listdir(tmp_path) == ["out.jsonl"]
    assert write_jsonl(target, [{"a": 1}, {"b": "ü"}]) == 2
    assert target.read_text(encoding="utf-8") == '{"a": 1}\n{"b": "ü"}\n'


def test_atomic_outputs_commit_together_or_not_at_all(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    with pytest.raises(ValueError), atomic_outputs(a, b, None) as (fa, fb, none):
        assert none is None
        fa.write("x")
        fb.write("y")
        raise ValueError
    assert not a.exists() and not b.exists() and os.listdir(tmp_path) == []
    with atomic_outputs(a, b) as (fa, fb):
        fa.write("x")
        fb.write("y")
    assert a.read_text() == "x" and b.read_text() == "y"
