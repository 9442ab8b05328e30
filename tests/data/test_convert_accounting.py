"""`convert` accounts for every input record: converted (into how many dialogues) or rejected with
its location and reason; `--on-error skip` routes bad records to `--rejects` in every format."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from personadlg.data.convert import convert
from personadlg.data.formats import FormatOptions, iter_items, read_dialogues
from personadlg.data.formats.base import Ok
from tests.conftest import read_jsonl, write_csv, write_jsonl

BOTH = [
    "--column",
    "persona[User 1]=p1",
    "--column",
    "persona[User 2]=p2",
    "--column",
    "transcript=conv",
    "--assistant",
    "both",
]
PAIRS = ["--column", "context=ctx", "--column", "response=reply", "--column", "persona=persona"]


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


def _count(stdout: str, label: str) -> int:
    """The number in the summary table's row LABEL."""
    m = re.search(rf"│ {re.escape(label)} +│ +([\d,]+) │", stdout)
    assert m, (label, stdout)
    return int(m.group(1).replace(",", ""))


@pytest.fixture
def fifty(tmp_path: Path) -> Path:
    """50 transcripts (4 lines each): row 11 is empty, row 21 has no speaker labels."""
    rows = []
    for i in range(50):
        conv = f"User 1: hi {i}\nUser 2: hello {i}\nUser 1: bye {i}\nUser 2: ciao {i}"
        if i == 10:
            conv = ""
        if i == 20:
            conv = "hi there\nhow are you\nfine"
        rows.append({"p1": "I like cats.", "p2": "I surf.", "conv": conv})
    return write_csv(tmp_path / "chats.csv", rows)


FIFTY_REJECTS = [
    {
        "source": "chats.csv:42",  # rows 1-10 take 4 lines each after the header
        "line": 42,
        "row": 11,
        "reason": "field 'conv': expected a transcript ('Speaker: text' lines), got ''",
        "raw": "I like cats.,I surf.,",
    },
    {
        "source": "chats.csv:79",
        "line": 79,
        "row": 21,
        "reason": "field 'conv': expected a transcript ('Speaker: text' lines), "
        "got 3 line(s) without a speaker, the first 'hi there'",
        "raw": 'I like cats.,I surf.,"hi there\nhow are you\nfine"',
    },
]


def test_every_row_of_a_transcript_table_is_accounted_for(fifty, tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out, rejects = Path("o.jsonl"), Path("bad.jsonl")
    r = cli("convert", "chats.csv", *BOTH, "--on-error", "skip", "--rejects", rejects, "--out", out)
    assert r.code == 0, r.stderr
    counts = [
        _count(r.stdout, label)
        for label in (
            "rows read",
            "rows converted",
            "rows rejected",
            "dialogues (from the converted rows)",
            "output records written",
        )
    ]
    assert counts == [50, 48, 2, 96, 96]
    assert "input records" not in r.stdout and "lines before any speaker" not in r.stdout
    assert (
        "  chats.csv:42 (row 11): field 'conv': expected a transcript ('Speaker: text' lines), got ''"
        in r.stdout
    )
    assert "  chats.csv:79 (row 21): field 'conv'" in r.stdout
    assert len(read_jsonl(out)) == 96
    assert read_jsonl(rejects) == FIFTY_REJECTS

    r = cli("convert", "chats.csv", *BOTH, "--on-error", "skip", "--out", out, "--json")
    assert r.code == 0, r.stderr
    s = r.json()
    assert (s["unit"], s["read"], s["converted"], s["rejected"]) == ("rows", 50, 48, 2)
    assert (s["dialogues"], s["written"], s["assistant_messages"]) == (96, 96, 192)
    assert s["reader"] == {}  # the unlabeled row is rejected, not counted as dropped lines
    assert s["first_rejected"] == [
        {k: v for k, v in rec.items() if k != "raw"} for rec in FIFTY_REJECTS
    ]
    assert s["rejects"] == "o.rejects.jsonl"  # the default next to OUT
    assert read_jsonl(tmp_path / "o.rejects.jsonl") == FIFTY_REJECTS


def test_stop_names_the_first_bad_row_and_writes_nothing(fifty, tmp_path, cli):
    out = tmp_path / "o.jsonl"
    out.write_text("an earlier output\n")
    r = cli("convert", fifty, *BOTH, "--out", out)
    assert r.code == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (
        f"error: {fifty}:42: field 'conv': expected a transcript ('Speaker: text' lines), got ''\n"
        "  nothing was written; --on-error skip converts the good records and writes each bad "
        "one, with its line and reason, to --rejects FILE"
    )
    assert out.read_text() == "an earlier output\n"  # untouched, not half-written
    assert _leftovers(tmp_path) == [] and not (tmp_path / "o.rejects.jsonl").exists()


def test_both_speakers_views_count_their_row_once(fifty):
    opts = FormatOptions(columns={"transcript": "conv"}, assistant="both")
    items = list(iter_items(fifty, "csv", opts))[:3]
    assert [type(i).__name__ for i in items] == ["Ok", "Ok", "Ok"]
    assert [i.n_raw for i in items if isinstance(i, Ok)] == [1, 0, 1]


@pytest.fixture
def persona_chat(tmp_path: Path) -> Path:
    """1,000 context/response rows as a public dataset ships them; rows 300 and 700 are malformed."""
    lines = ["persona,ctx,reply"]
    for i in range(1, 1001):
        if i == 300:
            lines.append('"i like tea.","how are you?"')  # a column lost
        elif i == 700:
            lines.append('"i surf.","what do you do?",""')  # no response
        else:
            lines.append(f'"i like dogs.\ni read.","hi, number {i}","hello {i}, i read."')
    path = tmp_path / "personachat.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_public_csv_with_two_bad_rows_converts_with_skip(persona_chat, tmp_path, cli):
    out, rejects = tmp_path / "pc.jsonl", tmp_path / "rej.jsonl"
    r = cli("convert", persona_chat, *PAIRS, "--out", out)
    assert r.code == 2 and r.stderr.splitlines()[0] == (
        f"error: {persona_chat}:600: expected 3 columns, got 2"  # 2 lines per row before row 300
    )
    assert not out.exists() and _leftovers(tmp_path) == []

    r = cli(
        "convert", persona_chat, *PAIRS, "--on-error", "skip", "--rejects", rejects, "--out", out
    )
    assert r.code == 0, r.stderr
    assert [_count(r.stdout, f"rows {what}") for what in ("read", "converted", "rejected")] == [
        1000,
        998,
        2,
    ]
    assert f"rejects → {rejects}" in r.stdout
    recs = read_jsonl(out)
    assert len(recs) == 998 and recs[0]["persona"] == ["i like dogs.", "i read."]
    assert [x["id"] for x in recs[298:300]] == ["personachat-000299", "personachat-000301"]
    assert read_jsonl(rejects) == [
        {
            "source": f"{persona_chat}:600",
            "line": 600,
            "row": 300,
            "reason": "expected 3 columns, got 2",
            "raw": '"i like tea.","how are you?"',
        },
        {
            "source": f"{persona_chat}:1399",
            "line": 1399,
            "row": 700,
            "reason": "field 'reply': expected the response (non-empty text), got ''",
            "raw": '"i surf.","what do you do?",""',
        },
    ]
    s = convert(persona_chat, tmp_path / "lib.jsonl", options=_pairs(), on_error="skip")
    assert (s["read"], s["converted"], s["rejected"], s["dialogues"], s["written"]) == (
        1000,
        998,
        2,
        998,
        998,
    )
    assert s["rejects"] is None  # the library writes a rejects file only when asked


def _pairs() -> FormatOptions:
    return FormatOptions(columns={"context": "ctx", "response": "reply", "persona": "persona"})


def test_blank_lines_are_no_rows_and_empty_rows_are_rejected(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("persona,ctx,reply\n\ni read.,hi,yo\n,,\n   \ni surf.,hey,sup\n", encoding="utf-8")
    rej = tmp_path / "r.jsonl"
    s = convert(p, tmp_path / "o.jsonl", options=_pairs(), on_error="skip", rejects=rej)
    assert (s["read"], s["converted"], s["rejected"]) == (3, 2, 1)
    assert read_jsonl(rej) == [
        {
            "source": f"{p}:4",
            "line": 4,
            "row": 2,
            "reason": "empty row: every cell is empty",
            "raw": ",,",
        }
    ]


def test_invalid_utf8_spoils_only_its_row(tmp_path, cli):
    p = tmp_path / "t.csv"
    p.write_bytes(b"persona,ctx,reply\na,hi,yo\nb,\xff\xfe,zz\nc,ok,fine\n")
    r = cli("convert", p, *PAIRS, "--out", tmp_path / "o.jsonl")
    assert r.code == 2
    assert (
        r.stderr.splitlines()[0]
        == f"error: {p}:3: not valid UTF-8: byte 0xff at byte offset 2 of the row"
    )
    rej = tmp_path / "r.jsonl"
    s = convert(p, tmp_path / "o.jsonl", options=_pairs(), on_error="skip", rejects=rej)
    assert (s["read"], s["converted"], s["rejected"]) == (3, 2, 1)
    assert read_jsonl(rej)[0]["raw"] == "b,\ufffd\ufffd,zz"


# -- null cells are missing cells -----------------------------------------------------------------


def test_null_and_empty_cells_follow_the_same_rules(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [
        {"persona": None, "ctx": None, "reply": "alone", "uid": "u1"},
        {"persona": None, "ctx": "hi", "reply": None, "uid": "u2"},
        {"persona": None, "ctx": "hi", "reply": "yo", "uid": None},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    write_csv(tmp_path / "t.csv", [{k: v or "" for k, v in row.items()} for row in rows])
    opts = FormatOptions(
        columns={"context": "ctx", "response": "reply", "persona": "persona", "user_id": "uid"}
    )
    reasons = {}
    for name in ("t.parquet", "t.csv"):
        rej = tmp_path / f"{name}.rejects.jsonl"
        out = tmp_path / f"{name}.jsonl"
        s = convert(tmp_path / name, out, options=opts, on_error="skip", rejects=rej)
        assert (s["read"], s["converted"], s["rejected"]) == (3, 1, 2), name
        (d,) = read_jsonl(out)
        assert d == {  # a null persona / user_id is left out, like an empty one
            "id": d["id"],
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "yo"},
            ],
        }
        reasons[name] = [x["reason"] for x in read_jsonl(rej)]
    assert reasons == {
        "t.parquet": [
            "field 'ctx': expected the context (one turn per line), got null",
            "field 'reply': expected the response (non-empty text), got null",
        ],
        "t.csv": [
            "field 'ctx': expected the context (one turn per line), got ''",
            "field 'reply': expected the response (non-empty text), got ''",
        ],
    }


def test_a_json_null_is_a_missing_value(tmp_path):
    recs = [{"persona": ["i am a"], "context": None, "response": "first words"}]
    p = tmp_path / "train_datas_en.json"
    p.write_text(json.dumps(recs))
    q = tmp_path / "missing_datas_en.json"
    q.write_text(json.dumps([{"persona": ["i am a"], "response": "first words"}]))
    (d,) = read_dialogues(p)
    (e,) = read_dialogues(q, "morpheus")
    assert d.messages == e.messages and [m.content for m in d.messages] == ["first words"]


# -- --on-error skip in every format ---------------------------------------------------------------

EOT = "<|endoftext|>"


def _good(rid: str) -> dict:
    return {
        "id": rid,
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": rid}],
    }


def _lines_file(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _case(fmt: str, d: Path) -> tuple[Path, str, dict]:
    """(input, format, the expected reject) for a file of three records, the second one bad."""
    if fmt == "jsonl":
        bad = {"id": "b", "messages": [{"role": "user", "content": "x"}] * 2}
        p = write_jsonl(d / "in.jsonl", [_good("a"), bad, _good("c")])
        reason = "field 'messages[1].role': expected 'assistant', got 'user' (roles must alternate)"
        return p, fmt, {"source": f"{p}:2", "line": 2, "reason": reason, "raw": json.dumps(bad)}
    if fmt == "openai":
        p = write_jsonl(d / "ft.jsonl", [_good("a"), {"messages": "nope"}, _good("c")])
        reason = "field 'messages': expected a list of messages, got 'nope'"
        return (
            p,
            fmt,
            {"source": f"{p}:2", "line": 2, "reason": reason, "raw": '{"messages": "nope"}'},
        )
    if fmt == "sharegpt":
        turns = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]
        bad = {"conversations": [{"from": "observation", "value": "x"}]}
        elements = [{"conversations": turns}, bad, {"conversations": turns}]
        p = _lines_file(d / "s.json", "[\n" + ",\n".join(map(json.dumps, elements)) + "\n]\n")
        reason = (
            "field 'conversations[0].from': expected one of human, gpt, system, got 'observation'"
        )
        return p, fmt, {"source": f"{p}:3", "line": 3, "reason": reason, "raw": json.dumps(bad)}
    if fmt == "parlai":
        raw = "1 your persona: b.\n2 hi\thello\nno number here"
        p = _lines_file(
            d / "x.txt", f"1 your persona: a.\n2 hi\tyo\n{raw}\n1 your persona: c.\n2 hey\tsup\n"
        )
        reason = (
            "expected 'N text' with a turn number N, got 'no number here' (the episode from "
            "line 3 is rejected whole)"
        )  # FILE:LINE names the bad line, not the episode's first
        return p, fmt, {"source": f"{p}:5", "line": 5, "reason": reason, "raw": raw}
    if fmt == "morpheus":
        bad = {"persona": ["i am x"], "context": "oops", "response": "r"}
        recs = [
            {"persona": ["i am a"], "context": ["hi"], "response": "a1"},
            bad,
            {"persona": ["i am b"], "context": [], "response": "b0"},
        ]
        p = _lines_file(d / "m_datas_en.json", "[\n" + ",\n".join(map(json.dumps, recs)) + "\n]\n")
        reason = "field 'context': expected a list of strings, got 'oops'"
        return p, fmt, {"source": f"{p}:3", "line": 3, "reason": reason, "raw": json.dumps(bad)}
    if fmt == "clv":
        raw = f"i am b.\n{EOT}hi{EOT}"
        blocks = [f"i am a.\n{EOT}\nhi{EOT}", raw, f"i am c.\n{EOT}\nyo{EOT}"]
        p = _lines_file(d / "Person_Dialog_EN.txt", "\n[SEP]\n".join(blocks) + "\n")
        reason = "expected a block of 3 lines (persona, context, response), got 2"
        return p, fmt, {"source": f"{p}:5", "line": 5, "reason": reason, "raw": raw}
    if fmt == "miracle":
        bad = {"input": ["q"], "output": ["r"], "personas": "t2", "tag": 5}
        p = write_jsonl(
            d / "dialogue_l.raw.jsonl",
            [
                {"input": ["q"], "output": ["r"], "personas": "t1", "tag": 0},
                bad,
                {"input": ["q"], "output": ["r"], "personas": "t3", "tag": 1},
            ],
        )
        reason = "field 'tag': expected an aspect index 0..1 of language_style, got 5"
        return p, fmt, {"source": f"{p}:2", "line": 2, "reason": reason, "raw": json.dumps(bad)}
    assert fmt == "tsv"
    p = _lines_file(d / "t.tsv", "persona\tctx\treply\na\thi\tyo\nb\tonly two\nc\they\tsup\n")
    reason = "expected 3 columns, got 2"
    return p, fmt, {"source": f"{p}:3", "line": 3, "row": 2, "reason": reason, "raw": "b\tonly two"}


@pytest.mark.parametrize(
    "fmt", ["jsonl", "openai", "sharegpt", "parlai", "morpheus", "clv", "miracle", "tsv"]
)
def test_skip_rejects_one_bad_record_in_every_format(fmt, tmp_path, cli):
    src, name, reject = _case(fmt, tmp_path)
    out, rej = tmp_path / "out.jsonl", tmp_path / "rejects.jsonl"
    cols = PAIRS if fmt == "tsv" else []
    r = cli("convert", src, "--from", name, *cols, "--out", out)
    assert r.code == 2
    assert r.stderr.splitlines()[0] == f"error: {reject['source']}: {reject['reason']}"
    assert "--on-error skip" in r.stderr.splitlines()[1]
    assert not out.exists()
    skip = ["--on-error", "skip", "--rejects", rej]
    r = cli("convert", src, "--from", name, *cols, *skip, "--out", out, "--json")
    assert r.code == 0, r.stderr
    s = r.json()
    assert (s["read"], s["converted"], s["rejected"], s["dialogues"]) == (3, 2, 1, 2), s
    assert len(read_jsonl(out)) == 2
    assert read_jsonl(rej) == [reject]


def test_a_merged_dialogue_rejects_all_its_records(tmp_path):
    files = {"per": ["a", "a", "b"], "src": ["hi", "yo", "hey"], "tgt": ["hello", "", "sup"]}
    for kind, lines in files.items():
        (tmp_path / f"{kind}-train.txt").write_text("\n".join(lines) + "\n")
    rej = tmp_path / "r.jsonl"
    s = convert(tmp_path / "src-train.txt", tmp_path / "o.jsonl", on_error="skip", rejects=rej)
    assert (s["unit"], s["read"], s["converted"], s["rejected"]) == ("lines", 3, 1, 2)
    assert read_jsonl(rej) == [
        {
            "source": f"{tmp_path / 'per-train.txt'}:1",
            "line": 1,
            "reason": "field 'messages[3].content': expected a non-empty string, got ''",
            "raw": "a\thi\thello\na\tyo\t",
            "records": 2,
        }
    ]


def test_an_export_error_rejects_its_record_with_skip(demo_path, tmp_path, cli):
    demo = read_jsonl(demo_path)
    lines = demo_path.read_text(encoding="utf-8").splitlines()
    without = [i for i, d in enumerate(demo) if "attitude" not in d.get("attributes", {})]
    assert 0 < len(without) < len(demo)
    out, rej = tmp_path / "dialogue_a.raw.jsonl", tmp_path / "r.jsonl"
    args = ["--to", "miracle", "--attribute", "attitude", "--out", out]
    r = cli("convert", demo_path, *args, "--on-error", "skip", "--rejects", rej, "--json")
    assert r.code == 0, r.stderr
    s = r.json()
    assert (s["read"], s["rejected"]) == (len(demo), len(without))
    kept = [d for i, d in enumerate(demo) if i not in without]
    assert s["written"] == sum(m["role"] == "assistant" for d in kept for m in d["messages"])
    first = without[0]
    assert read_jsonl(rej)[0] == {
        "source": f"{demo_path}:{first + 1}",
        "line": first + 1,
        "reason": "field 'attributes.attitude': expected one of pessimistic, optimistic "
        f"(dialogue {demo[first]['id']!r}), got null",
        "raw": lines[first],
    }
    assert len(read_jsonl(rej)) == len(without)
    assert [b.id for b in read_dialogues(out)] and out.read_text().count("\n") == s["written"]


# -- what skip cannot skip, and usage -----------------------------------------------------------------


def test_a_broken_json_list_and_repeated_ids_stop_even_with_skip(tmp_path, cli):
    good = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    src = _lines_file(tmp_path / "s.json", f'[\n{json.dumps(good)},\n{{"conversations": [\n]\n')
    out = tmp_path / "o.jsonl"
    r = cli("convert", src, "--on-error", "skip", "--out", out)
    assert r.code == 2 and "the rest of the file cannot be read" in r.stderr
    assert not out.exists() and not (tmp_path / "o.rejects.jsonl").exists()
    assert _leftovers(tmp_path) == []
    dup = write_jsonl(tmp_path / "in.jsonl", [_good("a"), _good("a")])
    r = cli("convert", dup, "--on-error", "skip", "--out", out)
    assert r.code == 2 and "in.jsonl:2: field 'id'" in r.stderr and not out.exists()


def test_on_error_and_rejects_are_checked(tmp_path, cli):
    src = write_jsonl(tmp_path / "in.jsonl", [_good("a")])
    out = tmp_path / "o.jsonl"
    for args, words in (
        (["--on-error", "continue"], "--on-error 'continue': expected one of stop, skip"),
        (["--rejects", tmp_path / "r.jsonl"], "--rejects only applies with --on-error skip"),
        (["--on-error", "skip", "--rejects", out], "are the same file"),
        (["--on-error", "skip", "--rejects", src], "is also the input"),
    ):
        r = cli("convert", src, *args, "--out", out)
        assert r.code == 2 and words in r.stderr, (args, r.stderr)
        assert not out.exists()
    r = cli("convert", src, "--on-error", "skip", "--out", out, "--json")
    assert r.code == 0 and (r.json()["read"], r.json()["rejected"]) == (1, 0)
    assert (tmp_path / "o.rejects.jsonl").read_text() == ""
