"""Hostile options of `clean`, `split` and `stats`: tables read by column mapping, a `--by` field no
record has, and numeric values that are meaningless or only burn time and memory — each an error
(exit 2, one `error: --opt: expected ..., got ...` line) before any input is read."""

from __future__ import annotations

import pytest

from personadlg.data.clean import CleanConfig
from personadlg.errors import ConfigError
from tests.conftest import dialogue, read_jsonl, write_csv, write_jsonl

PAIRS = ["--column", "context=prompt", "--column", "response=reply", "--column", "meta.conv=conv"]


def _table(tmp_path):
    rows = [
        {
            "prompt": f"how was day {i}?",
            "reply": f"day {i} was calm and sunny",
            "conv": f"c{i // 2}",
        }
        for i in range(10)
    ]
    return write_csv(tmp_path / "pairs.csv", rows)


def _one_error_line(r, expected: str) -> None:
    assert r.code == 2 and r.stdout == "", (r.code, r.stdout, r.stderr)
    assert r.stderr.strip() == f"error: {expected}" and "Traceback" not in r.stderr, r.stderr


# -- 1. clean, split and stats read tables by --column -------------------------------------------


def test_stats_reads_a_table_by_column_mapping(cli, tmp_path):
    r = cli("stats", _table(tmp_path), *PAIRS, "--json")
    assert r.code == 0, r.stderr
    s = r.json()
    assert s["dialogues"] == 10 and s["assistant_messages"] == 10 and s["user_messages"] == 10


def test_clean_reads_a_table_by_column_mapping(cli, tmp_path):
    out = tmp_path / "clean.jsonl"
    r = cli("clean", _table(tmp_path), *PAIRS, "--out", out, "--disable", "near_dup", "--json")
    assert r.code == 0, r.stderr
    assert r.json()["clean"] == 10 and r.json()["rejected"] == 0
    kept = read_jsonl(out)
    assert [d["messages"][1]["content"] for d in kept][:2] == [
        "day 0 was calm and sunny",
        "day 1 was calm and sunny",
    ]
    assert {d["meta"]["conv"] for d in kept} == {f"c{i}" for i in range(5)}


def test_split_reads_a_table_by_column_mapping_and_groups_by_a_mapped_field(cli, tmp_path):
    out = tmp_path / "o"
    args = ["--by", "meta.conv", "--valid", "0.2", "--test", "0.2", "--json"]
    r = cli("split", _table(tmp_path), *PAIRS, "--out-dir", out, *args)
    assert r.code == 0, r.stderr
    assert sum(r.json()["dialogues"].values()) == 10 and r.json()["ungrouped"] == 0
    where: dict[str, set[str]] = {}
    for s in ("train", "valid", "test"):
        for d in read_jsonl(out / f"{s}.jsonl"):
            where.setdefault(d["meta"]["conv"], set()).add(s)
    assert len(where) == 5 and all(len(v) == 1 for v in where.values())


def test_a_table_without_column_mapping_says_what_to_map(cli, tmp_path):
    r = cli("stats", _table(tmp_path), "--column", "context=prompt")
    assert r.code == 2 and "--column response=COLUMN" in r.stderr, r.stderr


@pytest.mark.parametrize(
    ("command", "flag"),
    [
        (["stats"], ["--column", "context=prompt"]),
        (["convert", "--out", "{tmp}/o.jsonl"], ["--column", "response=reply"]),
        (["clean", "--out", "{tmp}/o.jsonl"], ["--column", "context=prompt"]),
        (["split", "--out-dir", "{tmp}/o"], ["--assistant", "both"]),
    ],
)
def test_table_options_on_jsonl_are_an_error_not_ignored(cli, tmp_path, command, flag):
    src = write_jsonl(tmp_path / "d.jsonl", [dialogue("a", "hi", "yo"), dialogue("b", "hey", "ho")])
    args = [a.replace("{tmp}", str(tmp_path)) for a in command[1:]]
    r = cli(command[0], src, *args, *flag)
    _one_error_line(r, f"{flag[0]}: applies to CSV / TSV / Parquet inputs; {src} is JSONL")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]  # nothing written


def test_clean_with_a_table_among_its_inputs_takes_the_column_mapping(cli, tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", [dialogue("a", "hi", "yo")])
    out = tmp_path / "clean.jsonl"
    r = cli("clean", src, _table(tmp_path), *PAIRS, "--out", out, "--disable", "near_dup", "--json")
    assert r.code == 0, r.stderr
    assert r.json()["clean"] == 11


# -- 2. split --by a field no record has ---------------------------------------------------------


def _conversations(tmp_path, missing: int = 0):
    recs = [
        dialogue(f"c{c}-{s}", "hi", f"yo {c} {s}", meta={"conversation": f"c{c}"})
        for c in range(20)
        for s in ("a", "b")
    ]
    recs += [dialogue(f"x{i}", "hi", f"alone {i}") for i in range(missing)]
    return write_jsonl(tmp_path / "both.jsonl", recs)


def test_split_by_a_field_no_record_has_is_an_error_and_one_some_lack_a_note(cli, tmp_path):
    src, out = _conversations(tmp_path), tmp_path / "o"
    r = cli("split", src, "--out-dir", out, "--by", "meta.conversaton")
    _one_error_line(
        r, "--by meta.conversaton: no record has this field (did you mean 'meta.conversation'?)"
    )
    assert not out.exists()
    r = cli("split", src, "--out-dir", out, "--by", "profile.age")
    _one_error_line(
        r,
        "--by profile.age: no record has this field; fields the records have: "
        "id, messages, meta, meta.conversation",
    )
    r = cli("split", src, "--out-dir", out, "--by", "user")
    _one_error_line(
        r, "--by user: no record has a user_id, so every dialogue would be a group of its own"
    )
    assert not out.exists()
    # some records lack it: each of those is a group of its own, and the run says how many
    src = _conversations(tmp_path, missing=3)
    r = cli("split", src, "--out-dir", out, "--by", "meta.conversation", "--valid", "0.2")
    assert r.code == 0, r.stderr
    assert "note: 3 dialogue(s) have no meta.conversation key" in r.stderr
    where: dict[str, set[str]] = {}
    for s in ("train", "valid", "test"):
        for d in read_jsonl(out / f"{s}.jsonl"):
            where.setdefault(d.get("meta", {}).get("conversation", d["id"]), set()).add(s)
    assert len(where) == 23 and all(len(v) == 1 for v in where.values())
    r = cli("split", src, "--out-dir", tmp_path / "j", "--by", "meta.conversation", "--json")
    assert r.code == 0 and r.json()["ungrouped"] == 3


# -- 3. numeric option values --------------------------------------------------------------------

CLEAN_BAD = [
    (["--max-word-run", "1"], "--max-word-run: expected an integer >= 2, got 1"),
    (["--max-word-run", "0"], "--max-word-run: expected an integer >= 2, got 0"),
    (["--max-word-run", "-1"], "--max-word-run: expected an integer >= 2, got -1"),
    (["--min-assistant-turns", "-3"], "--min-assistant-turns: expected an integer >= 0, got -3"),
    (["--num-perm", "1025"], "--num-perm: expected an integer in 8..1024, got 1025"),
    (["--num-perm", "4"], "--num-perm: expected an integer in 8..1024, got 4"),
    (["--shingle-size", "1000000"], "--shingle-size: expected an integer in 1..32, got 1000000"),
    (["--shingle-size", "0"], "--shingle-size: expected an integer in 1..32, got 0"),
    (["--near-dup-threshold", "0"], "--near-dup-threshold: expected a similarity in (0, 1], got 0.0"),
    (["--near-dup-threshold", "nan"], "--near-dup-threshold: expected a similarity in (0, 1], got nan"),
    (["--min-script-share", "1.5"], "--min-script-share: expected a share in [0, 1], got 1.5"),
    (["--persona-copy-max-share", "-0.1"], "--persona-copy-max-share: expected a share in [0, 1], got -0.1"),
    (["--persona-copy-ngram", "1"], "--persona-copy-ngram: expected an integer >= 2, got 1"),
    (["--min-words", "-1"], "--min-words: expected an integer >= 0, got -1"),
    (["--min-words", "0", "--max-words", "0"], "--max-words: expected an integer >= 1, got 0"),
    (["--min-words", "5", "--max-words", "3"], "--max-words: expected at least --min-words (5), got 3"),
]  # fmt: skip


@pytest.mark.parametrize("args,expected", CLEAN_BAD, ids=[" ".join(a) for a, _ in CLEAN_BAD])
def test_clean_rejects_a_bad_value_before_reading_input(cli, tmp_path, args, expected):
    # the input does not exist: the option error must come first
    r = cli("clean", tmp_path / "missing.jsonl", "--out", tmp_path / "c.jsonl", *args)
    _one_error_line(r, expected)
    assert list(tmp_path.iterdir()) == []


SPLIT_BAD = [
    (["--valid", "1.5"], "--valid: expected a share in [0, 1), got 1.5"),
    (["--valid", "-0.1"], "--valid: expected a share in [0, 1), got -0.1"),
    (["--test", "nan"], "--test: expected a share in [0, 1), got nan"),
]


@pytest.mark.parametrize("args,expected", SPLIT_BAD, ids=[" ".join(a) for a, _ in SPLIT_BAD])
def test_split_rejects_a_bad_value_before_reading_input(cli, tmp_path, args, expected):
    r = cli("split", tmp_path / "missing.jsonl", "--out-dir", tmp_path / "o", *args)
    _one_error_line(r, expected)
    assert list(tmp_path.iterdir()) == []


def test_values_at_the_bounds_work(cli, tmp_path):
    src = write_jsonl(
        tmp_path / "in.jsonl",
        [
            dialogue("a", "hi there", "hello hello friend"),
            dialogue("b", "hi there", "well, nice to meet you"),
            dialogue("c", "hi there", "well, nice to meet you too"),
        ],
    )
    out = tmp_path / "c.jsonl"
    bounds = ["--max-word-run", "2", "--min-assistant-turns", "0", "--num-perm", "1024"]
    r = cli("clean", src, "--out", out, *bounds, "--shingle-size", "32", "--json")
    assert r.code == 0, r.stderr
    assert r.json()["rejected_by_filter"] == {"repetition": 1}
    assert [d["id"] for d in read_jsonl(out)] == ["b", "c"]
    # the library's config has the same bounds, and those of its options the CLI does not expose
    with pytest.raises(ConfigError, match=r"^seed: expected an integer >= 0, got -1$"):
        CleanConfig(seed=-1)
    with pytest.raises(ConfigError, match=r"max_ngram_repeats: expected an integer >= 2, got 1"):
        CleanConfig(max_ngram_repeats=1)
    with pytest.raises(ConfigError, match=r"min_distinct_ratio: expected a share in \[0, 1\]"):
        CleanConfig(min_distinct_ratio=2.0)
