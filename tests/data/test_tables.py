"""Tables (CSV, TSV, Parquet) as datasets are distributed, mapped onto dialogues by column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import read_jsonl, write_csv

CONVERSATION = (
    "User 1: Hi there!\nUser 2: Hello, do you surf?\nUser 1: No, I care for cats.\n"
    "and dogs too\nUser 2: Nice. I love pizza."
)


@pytest.fixture
def chats(tmp_path: Path) -> Path:
    return write_csv(
        tmp_path / "chats.csv",
        [
            {
                "user 1 personas": "I like cats.\nI am a nurse.",
                "user 2 personas": "I surf.\nI love pizza.",
                "Best Generated Conversation": CONVERSATION,
            },
            {
                "user 1 personas": "I hike.",
                "user 2 personas": "I bake bread.",
                "Best Generated Conversation": "a stray line\nUser 2: Hey!\nUser 1: Hello, I just hiked.\nUser 2: I bake bread.",
            },
        ],
    )


def test_a_transcript_table_from_both_speakers_sides(chats, tmp_path, cli):
    r = cli(
        "convert",
        chats,
        "--column",
        "persona[User 1]=user 1 personas",
        "--column",
        "persona[User 2]=user 2 personas",
        "--column",
        "transcript=Best Generated Conversation",
        "--assistant",
        "both",
        "--out",
        tmp_path / "o.jsonl",
        "--json",
    )
    assert r.code == 0, r.stderr
    summary = r.json()
    assert summary["dialogues"] == 4
    assert summary["reader"] == {"continuation_lines": 1, "unattributed_lines": 1}
    rows = {d["id"]: d for d in read_jsonl(tmp_path / "o.jsonl")}
    u2 = rows["chats-000001-user-2"]
    assert [m["role"] for m in u2["messages"]] == ["user", "assistant", "user", "assistant"]
    assert u2["messages"][2]["content"] == "No, I care for cats.\nand dogs too"
    assert u2["persona"] == ["I surf.", "I love pizza."]
    assert u2["meta"] == {"conversation": "chats-000001", "speaker": "User 2"}
    assert rows["chats-000001-user-1"]["persona"] == ["I like cats.", "I am a nurse."]
    assert rows["chats-000001-user-1"]["meta"]["conversation"] == "chats-000001"


def test_one_assistant_and_the_mapping_is_checked(chats, tmp_path, cli):
    out = tmp_path / "o.jsonl"
    r = cli(
        "convert",
        chats,
        "--column",
        "transcript=Best Generated Conversation",
        "--column",
        "persona=user 2 personas",
        "--assistant",
        "User 2",
        "--out",
        out,
    )
    assert r.code == 0, r.stderr
    d = read_jsonl(out)
    assert len(d) == 2 and d[0]["persona"] == ["I surf.", "I love pizza."]
    for bad, words in (
        (["--column", "transcript=Best Generated Conversation"], "needs --assistant"),
        (["--column", "transcript=nope", "--assistant", "User 2"], "no column 'nope'"),
        (["--column", "persona=user 1 personas"], "needs --column transcript"),
        (
            [
                "--column",
                "persnoa=x",
                "--column",
                "transcript=Best Generated Conversation",
                "--assistant",
                "x",
            ],
            "unknown key",
        ),
    ):
        r = cli("convert", chats, *bad, "--out", tmp_path / "bad.jsonl")
        assert r.code == 2 and words in r.stderr, (bad, r.stderr)
        assert not (tmp_path / "bad.jsonl").exists()


def test_context_response_tsv_and_parquet(tmp_path, cli):
    rows = [
        {
            "ctx": "User: how are you?",
            "reply": "great, i just surfed.",
            "persona": '["i surf.", "i like tea."]',
            "uid": "u1",
        },
        {"ctx": "hi\nhello, who are you?", "reply": "a baker.", "persona": "i bake.", "uid": "u2"},
    ]
    tsv = write_csv(tmp_path / "pairs.tsv", rows, delimiter="\t")
    args = [
        "--column",
        "context=ctx",
        "--column",
        "response=reply",
        "--column",
        "persona=persona",
        "--column",
        "user_id=uid",
    ]
    r = cli("convert", tsv, *args, "--out", tmp_path / "a.jsonl")
    assert r.code == 0, r.stderr
    a = read_jsonl(tmp_path / "a.jsonl")
    assert a[0]["messages"] == [
        {"role": "user", "content": "how are you?"},
        {"role": "assistant", "content": "great, i just surfed."},
    ]
    assert a[0]["persona"] == ["i surf.", "i like tea."] and a[0]["user_id"] == "u1"
    assert [m["role"] for m in a[1]["messages"]] == ["assistant", "user", "assistant"]
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(
        [
            {
                **r,
                "persona": json.loads(r["persona"])
                if r["persona"].startswith("[")
                else [r["persona"]],
            }
            for r in rows
        ]
    )
    pq.write_table(table, tmp_path / "pairs.parquet")
    r = cli("convert", tmp_path / "pairs.parquet", *args, "--out", tmp_path / "b.jsonl")
    assert r.code == 0, r.stderr
    b = read_jsonl(tmp_path / "b.jsonl")
    assert [x["messages"] for x in b] == [x["messages"] for x in a] and b[0]["persona"] == a[0][
        "persona"
    ]


def test_a_bad_row_is_located(tmp_path, cli):
    p = tmp_path / "t.csv"
    p.write_text('ctx,reply\n"hi","yo"\n"only one column"\n', encoding="utf-8")
    r = cli(
        "convert",
        p,
        "--column",
        "context=ctx",
        "--column",
        "response=reply",
        "--out",
        tmp_path / "o.jsonl",
    )
    assert r.code == 2 and "t.csv:3" in r.stderr and "expected 2 columns, got 1" in r.stderr


def test_generate_and_eval_read_tables(trained_tiny, tmp_path, cli):
    rows = [
        {"ctx": f"User: tell me about {w}?", "reply": f"i like {w}.", "persona": "i like tea."}
        for w in ("tea", "dogs", "the sea", "bread")
    ]
    src = write_csv(tmp_path / "in.csv", rows)
    cols = ["--column", "context=ctx", "--column", "response=reply", "--column", "persona=persona"]
    r = cli(
        "generate", trained_tiny, "-i", src, *cols, "-o", tmp_path / "g.jsonl", "max_new_tokens=4"
    )
    assert r.code == 0, r.stderr
    gens = read_jsonl(tmp_path / "g.jsonl")
    assert (
        len(gens) == 4
        and gens[0]["reference"] == "i like tea."
        and gens[0]["persona"] == ["i like tea."]
    )
    scored = write_csv(
        tmp_path / "scored.csv", [{**x, "gen": g["generation"]} for x, g in zip(rows, gens)]
    )
    r = cli(
        "eval", scored, *cols, "--column", "generation=gen", "--metrics", "bleu-1,dist-1", "--json"
    )
    assert r.code == 0, r.stderr
    assert r.json()["n"] == 4
