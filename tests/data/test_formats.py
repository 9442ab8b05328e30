"""Every input format: reading, merging single-turn records, detection, exports and round trips."""

from __future__ import annotations

import json

import pytest

from personadlg.data.formats import FormatOptions, detect_format, iter_items, read_dialogues
from personadlg.data.formats.base import Ok
from personadlg.data.jsonl import Bad
from personadlg.errors import DataError, UsageError
from tests.conftest import read_jsonl, shared, write_jsonl


def roles(d):
    return [m.role for m in d.messages]


def texts(d):
    return [m.content for m in d.messages]


# -- parlai ----------------------------------------------------------------------------------------

PARLAI = """1 your persona: i like tea.
2 your persona: i have a cat.
3 partner's persona: i surf.
4 hi there !\thello , want some tea ?
5 no thanks\tmy cat likes tea .\t\tcand a|cand b
1 your persona: i run.
2 __SILENCE__\tgood morning !
3 morning ! how far do you run ?\tten miles most days .|ten miles .
4 wow
"""


def test_parlai_episodes_personas_and_silence(tmp_path):
    p = tmp_path / "train_both_original.txt"
    p.write_text(PARLAI)
    assert detect_format(p) == "parlai"
    d1, d2 = read_dialogues(p)
    assert d1.id == "train_both_original-000001" and d1.persona == ["i like tea.", "i have a cat."]
    assert d1.meta == {"partner_persona": ["i surf."]}
    assert texts(d1) == ["hi there !", "hello , want some tea ?", "no thanks", "my cat likes tea ."]
    assert roles(d2) == [
        "assistant",
        "user",
        "assistant",
        "user",
    ]  # __SILENCE__ dropped, trailing partner turn kept
    assert texts(d2)[2] == "ten miles most days ."  # first label only


def test_parlai_malformed_line_rejects_its_whole_episode(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text(
        "1 your persona: a.\n2 hi\thello\nno number here\n3 ok\tfine\n1 your persona: b.\n2 yo\tsup\n"
    )
    items = list(iter_items(p, "parlai"))
    assert isinstance(items[0], Bad) and items[0].line == 3  # the bad line
    assert f"{p}:3: expected 'N text'" in str(items[0].error)
    assert "(the episode from line 1 is rejected whole)" in str(items[0].error)
    assert items[0].raw.count("\n") == 3  # all four lines of the episode
    assert isinstance(items[1], Ok) and items[1].dialogue.persona == ["b."]


def test_convai2_validation_set(cli, tmp_path):
    src = shared("convai2", "valid_self_original_no_cands.txt")
    r = cli("convert", src, "--from", "parlai", "--out", tmp_path / "c.jsonl", "--json")
    assert r.code == 0, r.stderr
    assert r.json()["dialogues"] == 1000 and r.json()["assistant_messages"] == 7801
    recs = read_jsonl(tmp_path / "c.jsonl")
    assert recs[0]["persona"][0] == "i read twenty books a year."
    assert recs[0]["messages"][1] == {
        "role": "assistant",
        "content": "i am good , i just got off work and tired , i have two jobs .",
    }
    assert detect_format(src) == "parlai"


# -- rcdg ------------------------------------------------------------------------------------------


def _rcdg(tmp_path, per, src, tgt, split="train"):
    for kind, lines in (("per", per), ("src", src), ("tgt", tgt)):
        (tmp_path / f"{kind}-{split}.txt").write_text("".join(line + "\n" for line in lines))
    return tmp_path / f"per-{split}.txt"


def test_rcdg_merges_consecutive_lines_of_one_persona(tmp_path):
    p = _rcdg(
        tmp_path, ["a</s>b", "a</s>b", "c"], ["hi", "how are you", "yo"], ["hello", "fine", "sup"]
    )
    assert detect_format(p) == "rcdg" and detect_format(tmp_path) == "rcdg"
    d1, d2 = read_dialogues(tmp_path / "src-train.txt")
    assert d1.persona == ["a", "b"] and texts(d1) == ["hi", "hello", "how are you", "fine"]
    assert d1.id == "rcdg-train-000001" and d2.persona == ["c"]
    assert [i.n_raw for i in iter_items(p)] == [2, 1]
    unmerged = list(read_dialogues(p, opts=FormatOptions(merge=False)))
    assert len(unmerged) == 3


def test_rcdg_files_must_be_aligned(tmp_path):
    p = _rcdg(tmp_path, ["a", "a"], ["hi", "yo"], ["hello"])
    with pytest.raises(DataError, match="tgt-train.txt ended before the other RCDG files"):
        list(read_dialogues(p))
    (tmp_path / "tgt-train.txt").unlink()
    with pytest.raises(DataError, match="RCDG file missing"):
        list(read_dialogues(p, "rcdg"))


def test_rcdg_real_files():
    per = shared("rcdg", "per-train.txt")
    ds = list(read_dialogues(per))
    assert len(ds) == 1356 and sum(len(d.assistant_messages) for d in ds) == 10_000
    assert ds[0].persona == [
        "i like to remodel homes",
        "i like to go hunting",
        "i like to shoot a bow",
        "my favorite holiday is halloween",
    ]
    val = list(read_dialogues(per.parent / "src-val.txt"))
    assert sum(len(d.assistant_messages) for d in val) == 7801


# -- miracle ---------------------------------------------------------------------------------------


def test_miracle_prefix_lines_merge_back_into_dialogues(tmp_path):
    p = write_jsonl(
        tmp_path / "dialogue_l.raw.jsonl",
        [
            {"input": ["q1"], "output": ["r1"], "personas": "i like tea .", "tag": 1},
            {"input": ["q1", "q2"], "output": ["r1", "r2"], "personas": "i like tea .", "tag": 1},
            {"input": ["x1"], "output": ["y1"], "personas": "i surf .", "tag": 0},
        ],
    )
    assert detect_format(p) == "miracle"
    d1, d2 = read_dialogues(p)  # the attribute is inferred from the file name (_l = language_style)
    assert texts(d1) == ["q1", "r1", "q2", "r2"] and d1.topic == "i like tea ."
    assert d1.attributes == {"language_style": "lyrical"} and d2.attributes == {
        "language_style": "plain"
    }
    assert [i.n_raw for i in iter_items(p)] == [2, 1]


def test_miracle_needs_the_attribute_name_unless_the_file_says_it(tmp_path):
    p = write_jsonl(
        tmp_path / "data.jsonl", [{"input": ["q"], "output": ["r"], "personas": "t", "tag": 0}]
    )
    with pytest.raises(UsageError, match="--attribute NAME"):
        list(read_dialogues(p, "miracle"))
    (d,) = read_dialogues(p, "miracle", FormatOptions(attributes=[("tone", ["dry", "warm"])]))
    assert d.attributes == {"tone": "dry"}


def test_miracle_list_tags_and_text_records(tmp_path):
    p = write_jsonl(
        tmp_path / "test.raw.jsonl",
        [{"input": ["q"], "output": ["r"], "personas": "t", "tag": [1, 0, 1]}],
    )
    (d,) = read_dialogues(p, "miracle")
    assert d.attributes == {
        "language_style": "lyrical",
        "attitude": "pessimistic",
        "mental_characteristics": "critical",
    }
    t = write_jsonl(tmp_path / "text_a.raw.jsonl", [{"text": "the sky will fall", "labels": 0}])
    (d,) = read_dialogues(t)
    assert d.messages[0].role == "assistant" and d.attributes == {"attitude": "pessimistic"}
    bad = write_jsonl(
        tmp_path / "dialogue_a.raw.jsonl",
        [{"input": ["q"], "output": ["r"], "personas": "t", "tag": 2}],
    )
    with pytest.raises(
        DataError,
        match=r"dialogue_a.raw.jsonl:1: field 'tag': expected an aspect index 0..1 of attitude, got 2",
    ):
        list(read_dialogues(bad))


def test_miracle_export_round_trip(cli, tmp_path, demo_path):
    demo = [r for r in read_jsonl(demo_path) if "attitude" in r["attributes"]]
    src = write_jsonl(tmp_path / "att.jsonl", demo)
    out = tmp_path / "dialogue_a.raw.jsonl"
    r = cli("convert", src, "--to", "miracle", "--attribute", "attitude", "--out", out, "--json")
    assert r.code == 0, r.stderr
    assert r.json()["written"] == sum(
        len([m for m in d["messages"] if m["role"] == "assistant"]) for d in demo
    )
    first = read_jsonl(out)[0]
    assert set(first) == {"input", "output", "personas", "tag"} and first["tag"] in (0, 1)
    back = list(read_dialogues(out))
    assert [texts(b) for b in back] == [[m["content"] for m in d["messages"]] for d in demo]
    assert [b.attributes for b in back] == [d["attributes"] for d in demo]
    # a dialogue without the attribute cannot be expressed: exit 2, no output written
    out2 = tmp_path / "x.jsonl"
    r = cli("convert", demo_path, "--to", "miracle", "--attribute", "attitude", "--out", out2)
    assert (
        r.code == 2
        and "field 'attributes.attitude': expected one of pessimistic, optimistic" in r.stderr
    )
    assert not out2.exists()


# -- morpheus / clv: one record per response, speakers alternating ---------------------------------------

A = ["i am a", "i like a"]
B = ["i am b"]


def test_morpheus_reassembles_both_speakers(tmp_path):
    recs = [
        {"persona": A, "context": ["hi"], "response": "a1"},
        {"persona": B, "context": ["hi", "a1"], "response": "b1"},
        {"persona": A, "context": ["hi", "a1", "b1"], "response": "a2"},
        {"persona": B, "context": ["hi", "a1", "b1", "a2"], "response": "b2"},
        {"persona": A, "context": [], "response": "new dialogue"},
    ]
    p = tmp_path / "train_datas_en.json"
    p.write_text(json.dumps(recs, indent=1))
    assert detect_format(p) == "morpheus"
    da, db, dc = read_dialogues(p)
    assert (
        da.persona == A
        and texts(da) == ["hi", "a1", "b1", "a2"]
        and roles(da) == ["user", "assistant", "user", "assistant"]
    )
    assert (
        db.persona == B
        and texts(db) == ["hi", "a1", "b1", "a2", "b2"]
        and roles(db)[0] == "assistant"
    )
    assert texts(dc) == ["new dialogue"]


def test_morpheus_export_round_trip(tmp_path, demo_path, cli):
    out = tmp_path / "m.json"
    assert cli("convert", demo_path, "--to", "morpheus", "--out", out).code == 0
    records = json.loads(out.read_text())
    assert set(records[0]) == {"persona", "context", "response"} and records[0]["context"] == [
        read_jsonl(demo_path)[0]["messages"][0]["content"]
    ]
    back = list(read_dialogues(out))
    demo = read_jsonl(demo_path)
    assert [texts(b) for b in back] == [[m["content"] for m in d["messages"]] for d in demo]
    assert [b.persona for b in back] == [d["persona"] for d in demo]


def test_clv_blocks(tmp_path):
    eot = "<|endoftext|>"
    blocks = [
        f"i am a.i like a.\n{eot}\nhi{eot}",
        f"i am b.\n{eot}hi{eot}\na1{eot}",
        f"i am a.i like a.\n{eot}hi{eot}a1{eot}\nb1{eot}",
    ]
    p = tmp_path / "Person_Dialog_EN_train.txt"
    p.write_text("\n[SEP]\n".join(blocks) + "\n")
    assert detect_format(p) == "clv"
    da, db = read_dialogues(p)
    assert (
        da.persona == ["i am a", "i like a"]
        and texts(da) == ["hi", "a1", "b1"]
        and roles(da) == ["assistant", "user", "assistant"]
    )
    assert texts(db) == ["hi", "a1"]
    p.write_text(blocks[0] + "\n[SEP]\nonly one line\n")
    items = list(iter_items(p, "clv"))
    assert isinstance(items[0], Bad) and "expected a block of 3 lines" in str(items[0].error)


# -- sharegpt / openai -----------------------------------------------------------------------------------


def test_sharegpt_json_and_jsonl(tmp_path):
    rec = {
        "id": "s1",
        "system": "be kind",
        "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}],
    }
    for p in (tmp_path / "a.json", tmp_path / "a.jsonl"):
        p.write_text(json.dumps([rec]) if p.suffix == ".json" else json.dumps(rec) + "\n")
        assert detect_format(p) == "sharegpt"
        (d,) = read_dialogues(p)
        assert d.id == "s1" and texts(d) == ["hi", "hello"] and d.meta == {"system": "be kind"}
    bad = write_jsonl(
        tmp_path / "b.jsonl", [{"conversations": [{"from": "observation", "value": "x"}]}]
    )
    with pytest.raises(
        DataError,
        match=r"b.jsonl:1: field 'conversations\[0\].from': expected one of human, gpt, system, got 'observation'",
    ):
        list(read_dialogues(bad, "sharegpt"))


def test_sharegpt_round_trip_is_lossless(cli, tmp_path, demo_path):
    for name in ("s.json", "s.jsonl"):
        out = tmp_path / name
        assert cli("convert", demo_path, "--to", "sharegpt", "--out", out).code == 0
        back = tmp_path / f"back-{name}.jsonl"
        assert cli("convert", out, "--out", back).code == 0
        assert read_jsonl(back) == read_jsonl(demo_path)


def test_openai_messages(tmp_path):
    p = write_jsonl(
        tmp_path / "ft.jsonl",
        [
            {
                "messages": [
                    {"role": "system", "content": "You are Pepper."},
                    {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                    {"role": "assistant", "content": "woof"},
                ]
            },
            {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]},
        ],
    )
    assert detect_format(p) == "openai"
    d1, _d2 = read_dialogues(p)
    assert (
        d1.id == "ft-000001"
        and d1.meta == {"system": "You are Pepper."}
        and texts(d1) == ["hi", "woof"]
    )
    bad = write_jsonl(
        tmp_path / "b.jsonl",
        [{"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "late"}]}],
    )
    with pytest.raises(DataError, match=r"field 'messages\[1\].role'"):
        list(read_dialogues(bad, "openai"))


# -- detection and convert errors ------------------------------------------------------------------------------


def test_undetectable_input_asks_for_from(tmp_path):
    p = tmp_path / "x.dat"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(UsageError, match="cannot detect the data format; pass --from"):
        detect_format(p)
    assert (
        detect_format(tmp_path / "x.csv" if (tmp_path / "x.csv").write_text("a,b\n") else p)
        == "csv"
    )


def test_convert_stops_on_bad_record_and_writes_nothing(cli, tmp_path):
    src = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {
                "id": "a",
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "yo"},
                ],
            },
            {
                "id": "b",
                "messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "yo"}],
            },
        ],
    )
    out = tmp_path / "out.jsonl"
    r = cli("convert", src, "--out", out)
    assert r.code == 2
    assert (
        r.stderr.splitlines()[0]
        == f"error: {src}:2: field 'messages[1].role': expected 'assistant', got 'user' (roles must alternate)"
    )
    assert "Traceback" not in r.stderr and not out.exists()
    r = cli("convert", src, "--out", out, "--to", "parquet")
    assert r.code == 2 and "cannot write format 'parquet'" in r.stderr


def test_convert_rejects_repeated_ids(cli, tmp_path):
    rec = {
        "id": "a",
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
    }
    src = write_jsonl(tmp_path / "in.jsonl", [rec, rec])
    r = cli("convert", src, "--out", tmp_path / "o.jsonl")
    assert r.code == 2 and "in.jsonl:2: field 'id'" in r.stderr
