"""Persona identity (sentence sets) and persona groups in `split` and `stats`."""

from __future__ import annotations

import random

from personadlg.data.persona import group_personas, normalize_sentence, persona_identity
from personadlg.data.split import split
from personadlg.data.stats import stats
from tests.conftest import dialogue, read_jsonl, write_jsonl


def test_a_persona_is_the_set_of_its_normalised_sentences():
    assert normalize_sentence("  I like  Hiking . ") == "i like hiking"
    assert normalize_sentence("I like hiking!!") == "i like hiking"
    a = persona_identity(["I like hiking.", "i am a nurse ."])
    b = persona_identity(["i am a NURSE", "I like  hiking !"])
    assert a == b == frozenset({"i like hiking", "i am a nurse"})


def test_personas_sharing_sentences_are_grouped_transitively():
    p = [
        frozenset({"a", "b"}),
        frozenset({"b", "c"}),  # shares b with 0
        frozenset({"c", "d"}),  # shares c with 1: same group as 0
        frozenset({"x", "y"}),
        frozenset({"x", "y", "z"}),  # shares 2 with 3
    ]
    assert group_personas(p, overlap=1) == [0, 0, 0, 1, 1]
    assert group_personas(p, overlap=2) == [0, 1, 2, 3, 3]
    assert group_personas(p, overlap=0) == [0, 1, 2, 3, 4]


def _shuffled_persona_corpus(tmp_path, n_personas=30, per_persona=4, seed=0):
    """Dialogues whose personas reappear with their sentences shuffled and re-cased, and some
    personas that share one sentence with another (as ConvAI2's)."""
    rng = random.Random(seed)
    personas = [
        [f"i like thing {i}.", f"my job is job {i}.", f"i live in town {i}."]
        for i in range(n_personas)
    ]
    for i in range(0, n_personas - 1, 3):  # every third persona shares a sentence with the next
        personas[i + 1][2] = personas[i][2]
    records = []
    for i, p in enumerate(personas):
        for j in range(per_persona):
            view = p[:]
            rng.shuffle(view)
            if j % 2:
                view = [s.upper().replace(".", " !") for s in view]
            records.append(dialogue(f"d{i}-{j}", "hi", f"hello {i} {j}", persona=view))
    return write_jsonl(tmp_path / "in.jsonl", records)


def test_split_by_persona_shares_no_persona_sentence_between_splits(tmp_path, cli):
    src = _shuffled_persona_corpus(tmp_path)
    r = cli(
        "split",
        src,
        "--out-dir",
        tmp_path / "o",
        "--by",
        "persona",
        "--valid",
        "0.2",
        "--test",
        "0.2",
        "--json",
    )
    assert r.code == 0, r.stderr
    rep = r.json()
    assert rep["persona_sets"] == 30 and rep["groups_merged"] == 10 and rep["persona_overlap"] == 1
    sentences = {
        s: {
            normalize_sentence(x)
            for d in read_jsonl(tmp_path / "o" / f"{s}.jsonl")
            for x in d["persona"]
        }
        for s in ("train", "valid", "test")
    }
    assert sentences["test"] and sentences["valid"]
    assert not sentences["train"] & sentences["test"]
    assert not sentences["train"] & sentences["valid"]
    assert not sentences["valid"] & sentences["test"]
    r = cli("split", src, "--out-dir", tmp_path / "o2", "--by", "persona")
    assert r.code == 0 and "30 distinct persona sets in 20 groups: 10 merged" in r.stdout


def test_split_by_a_field_keeps_one_conversation_together(tmp_path):
    records = []
    for c in range(20):
        for speaker in ("a", "b"):
            records.append(dialogue(f"c{c}-{speaker}", "hi", "yo", meta={"conversation": f"c{c}"}))
    src = write_jsonl(tmp_path / "both.jsonl", records)
    rep = split(src, out_dir=tmp_path / "o", by="meta.conversation", valid=0.2, test=0.2)
    where = {}
    for s in ("train", "valid", "test"):
        for d in read_jsonl(tmp_path / "o" / f"{s}.jsonl"):
            where.setdefault(d["meta"]["conversation"], set()).add(s)
    assert all(len(v) == 1 for v in where.values()) and len(where) == 20
    assert rep.groups["train"] + rep.groups["valid"] + rep.groups["test"] == 20


def test_stats_counts_persona_sets_not_orderings(tmp_path):
    src = _shuffled_persona_corpus(tmp_path)
    s = stats(src)
    assert s["personas"]["unique"] == 30 and s["personas"]["dialogues_with_persona"] == 120
