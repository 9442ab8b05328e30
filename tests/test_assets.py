"""The demo corpus written for personadlg: the properties its data card promises."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict

from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from personadlg.assets import DEMO_ATTRIBUTES, demo_corpus, topics
from personadlg.data.formats import read_dialogues


def test_corpus_shape_and_labels():
    ds = list(read_dialogues(demo_corpus(), "jsonl"))
    assert len(ds) >= 240
    per_aspect = Counter()
    for d in ds:
        assert len(d.attributes) == 1, d.id  # one aspect of one attribute, as MIRACLE's data
        ((attr, aspect),) = d.attributes.items()
        assert aspect in DEMO_ATTRIBUTES[attr]
        per_aspect[aspect] += 1
        assert (
            sum(1 for m in d.messages if m.role == "assistant") >= 4
            and d.messages[0].role == "user"
        )
        assert 3 <= len(d.persona) <= 5 and d.user_id and d.profile and d.topic
    assert set(per_aspect) == {a for v in DEMO_ATTRIBUTES.values() for a in v}
    assert min(per_aspect.values()) >= 40


def test_users_have_one_consistent_persona():
    personas = defaultdict(set)
    profiles = defaultdict(set)
    for d in read_dialogues(demo_corpus(), "jsonl"):
        personas[d.user_id].add(tuple(d.persona))
        profiles[d.user_id].add(tuple(sorted(d.profile.items())))
    assert 25 <= len(personas) <= 35
    assert all(len(p) == 1 for p in personas.values()) and all(
        len(p) == 1 for p in profiles.values()
    )
    assert len({next(iter(p)) for p in personas.values()}) == len(personas)  # distinct people


def test_written_not_templated():
    msgs = [
        m.content
        for d in read_dialogues(demo_corpus(), "jsonl")
        for m in d.messages
        if m.role == "assistant"
    ]
    assert len(set(msgs)) == len(msgs), "assistant messages must all differ"
    tok = Tokenizer13a()
    bigrams, distinct = 0, set()
    for m in msgs:
        t = tok(m).split()
        pairs = list(itertools.pairwise(t))
        bigrams += len(pairs)
        distinct.update(pairs)
    assert len(distinct) / bigrams >= 0.6  # corpus Dist-2 (13a tokens)


def test_topic_list():
    lines = topics().read_text(encoding="utf-8").splitlines()
    assert (
        len(lines) >= 100 and len(set(lines)) == len(lines) and all(line.strip() for line in lines)
    )
