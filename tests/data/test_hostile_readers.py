"""Readers facing hostile input: numbers JSON cannot hold, content after a JSON list, invalid UTF-8
and NaN inside a list, repeated system messages, ambiguous table headers, files that are not
Parquet and generated ids that clash. Each is a `FILE:LINE` error or a reject, never a crash or a
silent loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from personadlg.data.jsonl import Bad, iter_json_array, iter_json_lines
from tests.conftest import read_jsonl, write_csv, write_jsonl

HELLO = [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "hi you"}]
MORPHEUS = '{"persona": ["a ."], "context": ["x"], "response": "%s"}'


def _dialogue(rid: str) -> dict:
    return {
        "id": rid,
        "messages": [
            {"role": "user", "content": f"hello there, this is {rid}"},
            {"role": "assistant", "content": f"hi {rid}, how are you"},
        ],
    }


def _summary(r) -> dict:  # type: ignore[no-untyped-def]
    assert r.code == 0, r.stderr
    return json.loads(r.stdout)


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if ".tmp-" in p.name)


# -- 1. numbers out of range ------------------------------------------------------------------------


def test_a_number_too_large_for_a_float_is_refused_with_its_field(tmp_path, cli):
    src = tmp_path / "big.jsonl"
    src.write_text(
        json.dumps(_dialogue("a"))
        + "\n"
        + json.dumps(_dialogue("b")).replace('"id"', '"meta": {"x": [1, 1e400]}, "id"')
        + "\n"
        + json.dumps(_dialogue("c"))
        + "\n"
    )
    reason = "field 'meta.x[1]': 1e400 is a number out of range"
    out = tmp_path / "o.jsonl"
    r = cli("convert", src, "--out", out)
    assert r.code == 2 and f"{src}:2: {reason}" in r.stderr and "ValueError" not in r.stderr
    assert not out.exists() and _leftovers(tmp_path) == []

    s = _summary(cli("convert", src, "--on-error", "skip", "--out", out, "--json"))
    assert (s["read"], s["converted"], s["rejected"]) == (3, 2, 1)
    rej = read_jsonl(tmp_path / "o.rejects.jsonl")
    assert [x["source"] for x in rej] == [f"{src}:2"] and rej[0]["reason"].startswith(reason)

    cleaned, rejects = tmp_path / "c.jsonl", tmp_path / "c.rejects.jsonl"
    r = cli("clean", src, "--out", cleaned, "--rejects", rejects)
    assert r.code == 0, r.stderr
    assert [d["id"] for d in read_jsonl(cleaned)] == ["a", "c"]
    assert read_jsonl(rejects)[0]["reason"].startswith(reason)

    r = cli("split", src, "--out-dir", tmp_path / "sp")
    assert r.code == 2 and f"{src}:2: {reason}" in r.stderr
    r = cli("stats", src)
    assert r.code == 2 and f"{src}:2: {reason}" in r.stderr


@pytest.mark.parametrize(
    "number,message",
    [
        ("-1e400", "-1e400 is a number out of range"),
        ("Infinity", "Infinity is not a JSON value"),
        ("1" * 5000, "a number out of range (an integer of 5000 digits)"),
    ],
)
def test_numbers_out_of_range_spoil_only_their_element(tmp_path, number, message):
    lines = tmp_path / "a.jsonl"
    lines.write_text(f'{{"a": 1}}\n{{"n": {number}}}\n{{"b": 2}}\n')
    items = list(iter_json_lines(lines))
    assert isinstance(items[1], Bad) and f"{lines}:2: field 'n': {message}" in str(items[1].error)
    assert items[2][2] == {"b": 2}
    array = tmp_path / "a.json"
    array.write_text(f'[\n{{"a": 1}},\n{{"n": {number}}},\n{{"b": 2}}\n]\n')
    items = list(iter_json_array(array))
    assert isinstance(items[1], Bad) and f"{array}:3: field 'n': {message}" in str(items[1].error)
    assert items[2][2] == {"b": 2} and len(items) == 3


def test_an_infinite_parquet_value_rejects_its_row(tmp_path, cli):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "ctx": ["a", "b", "c"],
            "reply": ["x", "y", "z"],
            "score": [1.5, float("inf"), -2.0],
            "p": [1.0, 2.0, float("-inf")],
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    cols = ["--column", "context=ctx", "--column", "response=reply"]
    cols += ["--column", "meta.score=score", "--column", "profile.p=p"]
    out = tmp_path / "o.jsonl"
    s = _summary(
        cli("convert", tmp_path / "t.parquet", *cols, "--on-error", "skip", "--out", out, "--json")
    )
    assert (s["read"], s["converted"], s["rejected"]) == (3, 1, 2)
    assert [x["reason"] for x in s["first_rejected"]] == [
        "field 'score': expected a finite number, got inf",
        "field 'p': expected a finite number, got -inf",
    ]
    assert read_jsonl(out)[0]["meta"] == {"score": 1.5}


# -- 2. content after a JSON list -------------------------------------------------------------------


@pytest.mark.parametrize("skip", [False, True])
def test_content_after_the_lists_closing_bracket_is_an_error(tmp_path, cli, skip):
    src = tmp_path / "two.json"
    src.write_text(f"[{MORPHEUS % 'y'}]\n\n[{MORPHEUS % 'LOST'}]\n")
    out = tmp_path / "o.jsonl"
    r = cli("convert", src, "--out", out, *(["--on-error", "skip"] if skip else []))
    assert r.code == 2
    assert f"{src}:3: unexpected content after the list's closing ]" in r.stderr
    assert not out.exists() and _leftovers(tmp_path) == []


def test_whitespace_after_the_list_is_fine_and_sharegpt_lists_are_checked_too(tmp_path, cli):
    good = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    src = tmp_path / "s.json"
    src.write_text(json.dumps([good]) + "\n \t\n")
    assert [i[2] for i in iter_json_array(src)] == [good]
    src.write_text(json.dumps([good]) + '\n{"x": 1}\n')
    r = cli("convert", src, "--from", "sharegpt", "--out", tmp_path / "o.jsonl")
    assert r.code == 2 and f"{src}:2: unexpected content after the list's closing ]" in r.stderr


# -- 3. invalid UTF-8 inside a JSON list ------------------------------------------------------------


def test_invalid_utf8_in_a_list_element_rejects_that_element_at_its_line(tmp_path, cli):
    src = tmp_path / "bad8.json"
    src.write_bytes(
        b"[\n"
        + (MORPHEUS % "y").encode()
        + b",\n"
        + (MORPHEUS % "z").replace('["x"]', '["x\xff"]').encode("latin-1")
        + b",\n"
        + (MORPHEUS % "w").replace('"x"', '"q"').encode()
        + b"\n]\n"
    )
    out = tmp_path / "o.jsonl"
    r = cli("convert", src, "--out", out)
    assert r.code == 2 and f"{src}:3: not valid UTF-8: byte 0xff" in r.stderr
    s = _summary(cli("convert", src, "--on-error", "skip", "--out", out, "--json"))
    assert (s["read"], s["converted"], s["rejected"]) == (3, 2, 1)
    (rej,) = read_jsonl(tmp_path / "o.rejects.jsonl")
    assert rej["source"] == f"{src}:3"
    assert rej["reason"] == "not valid UTF-8: byte 0xff at byte offset 35 of line 3"
    assert "x\ufffd" in rej["raw"]

    cleaned, rejects = tmp_path / "c.jsonl", tmp_path / "c.rejects.jsonl"
    assert cli("clean", src, "--out", cleaned, "--rejects", rejects).code == 0
    assert len(read_jsonl(cleaned)) == 2 and read_jsonl(rejects)[0]["source"] == f"{src}:3"


def test_invalid_utf8_between_elements_is_located(tmp_path):
    src = tmp_path / "b.json"
    src.write_bytes(b'[\n{"a": 1},\n\xff{"b": 2}\n]\n')
    items = list(iter_json_array(src))
    assert items[0][2] == {"a": 1} and isinstance(items[1], Bad)
    assert str(items[1].error).startswith(
        f"{src}:3: not valid UTF-8: byte 0xff at byte offset 0 of line 3; the rest"
    )


# -- 4. NaN inside a JSON list ----------------------------------------------------------------------


def test_nan_in_a_list_element_rejects_only_that_element(tmp_path, cli):
    src = tmp_path / "nan.json"
    nan = (MORPHEUS % "z").replace("}", ', "n": NaN}')
    last = (MORPHEUS % "w").replace('"x"', '"q"')
    src.write_text(f"[\n{MORPHEUS % 'y'},\n{nan},\n{last}\n]\n")
    out = tmp_path / "o.jsonl"
    s = _summary(cli("convert", src, "--on-error", "skip", "--out", out, "--json"))
    assert (s["read"], s["converted"], s["rejected"]) == (3, 2, 1)
    assert s["first_rejected"][0]["source"] == f"{src}:3"
    assert s["first_rejected"][0]["reason"] == (
        "field 'n': NaN is not a JSON value (JSON has no NaN or Infinity)"
    )


# -- 5. several system messages ---------------------------------------------------------------------


def test_every_system_message_is_kept(tmp_path, cli):
    src = write_jsonl(
        tmp_path / "oa.jsonl",
        [
            {
                "messages": [
                    {"role": "system", "content": "KEEP ME"},
                    {"role": "developer", "content": [{"type": "text", "text": "second"}]},
                    *HELLO,
                ]
            }
        ],
    )
    out = tmp_path / "o.jsonl"
    assert cli("convert", src, "--out", out).code == 0
    assert read_jsonl(out)[0]["meta"] == {"system": "KEEP ME\n\nsecond"}

    sg = write_jsonl(
        tmp_path / "sg.jsonl",
        [
            {
                "system": "first",
                "conversations": [
                    {"from": "system", "value": "then this"},
                    {"from": "human", "value": "hi"},
                    {"from": "gpt", "value": "yo"},
                ],
            }
        ],
    )
    assert cli("convert", sg, "--out", tmp_path / "s.jsonl").code == 0
    assert read_jsonl(tmp_path / "s.jsonl")[0]["meta"] == {"system": "first\n\nthen this"}


# -- 6. a duplicate column name ---------------------------------------------------------------------


def test_a_duplicate_column_the_mapping_uses_is_an_error(tmp_path, cli):
    src = tmp_path / "dh.csv"
    src.write_text("ctx,reply,ctx\nFIRST,hi,second\n")
    pairs = ["--column", "context=ctx", "--column", "response=reply"]
    r = cli("convert", src, *pairs, "--out", tmp_path / "o.jsonl", "--on-error", "skip")
    assert r.code == 2
    assert f"{src}:1: column 'ctx' appears 2 times in the header (columns 1 and 3)" in r.stderr
    unused = tmp_path / "ok.csv"
    unused.write_text("ctx,reply,note,note\nFIRST,hi,a,b\n")
    assert cli("convert", unused, *pairs, "--out", tmp_path / "o.jsonl").code == 0


# -- 7. a file that is not Parquet ------------------------------------------------------------------


def test_a_file_that_is_not_parquet_is_a_data_error(tmp_path, cli):
    pytest.importorskip("pyarrow")
    src = tmp_path / "x.parquet"
    src.write_text("nope\n")
    r = cli("convert", src, "--column", "context=a", "--column", "response=b", "--out", "o.jsonl")
    assert r.code == 2 and f"error: {src}: not a readable Parquet file (" in r.stderr
    assert "ArrowInvalid" not in r.stderr


# -- 8. generated ids ------------------------------------------------------------------------------


def test_a_generated_id_that_clashes_with_a_records_own_id_is_explained(tmp_path, cli):
    conv = [{"from": "human", "value": "hello"}, {"from": "gpt", "value": "hi"}]
    src = write_jsonl(
        tmp_path / "sg.jsonl",
        [{"id": "sg-000002", "conversations": conv}, {"conversations": conv}],
    )
    out = tmp_path / "o.jsonl"
    r = cli("convert", src, "--out", out)
    assert r.code == 2 and f"{src}:2: field 'id': " in r.stderr
    assert "generated by convert" in r.stderr and "--id-prefix" in r.stderr
    assert f"also the id of the record at {src}:1," in r.stderr
    assert "(run `personadlg clean`)" not in r.stderr
    r = cli("convert", src, "--id-prefix", "new", "--out", out)
    assert r.code == 0, r.stderr
    assert [d["id"] for d in read_jsonl(out)] == ["sg-000002", "new-000002"]
    twice = write_jsonl(tmp_path / "two.jsonl", [_dialogue("a"), _dialogue("a")])
    r = cli("convert", twice, "--out", out)
    assert r.code == 2 and "already used by the record at" in r.stderr
    assert "generated by convert" not in r.stderr


def test_a_table_id_column_and_generated_ids(tmp_path, cli):
    src = write_csv(
        tmp_path / "t.csv",
        [{"id": "", "ctx": "a", "reply": "x"}, {"id": "t-000001", "ctx": "b", "reply": "y"}],
    )
    args = ["--column", "id=id", "--column", "context=ctx", "--column", "response=reply"]
    r = cli("convert", src, *args, "--out", tmp_path / "o.jsonl")
    assert r.code == 2 and f"{src}:3: field 'id': " in r.stderr
    assert "generated by convert" in r.stderr
