"""clean: normalization, each filter against a table of records, dedup, and the accounting of every unit."""

from __future__ import annotations

import json
import random
from collections import Counter

import numpy as np
import pytest

from personadlg.data.clean import CleanConfig, clean
from personadlg.data.clean.dedup import MinHasher, band_hashes, exact_dup, lsh_params, near_dup
from personadlg.data.clean.filters import words
from personadlg.data.clean.normalize import normalize_dialogue, normalize_text, strip_speaker_prefix
from personadlg.data.schema import Dialogue
from personadlg.errors import ConfigError
from personadlg.registry import FILTERS
from tests.conftest import dialogue, read_jsonl, write_jsonl

OK_TEXT = "I spent the whole morning at the market buying fresh bread and apples."


@pytest.mark.parametrize(
    "text,expected",
    [
        ("  hello   world \t!", "hello world !"),
        ("cafe\u0301", "café"),  # NFC
        ("a\u200bb\u00a0c", "ab c"),  # zero-width removed, nbsp → space
        ("line one  \r\n\r\n\r\n\r\n line two", "line one\n\nline two"),
        ("x\x00y\x07", "xy"),
    ],
)
def test_normalize_text(text, expected):
    assert normalize_text(text) == expected


@pytest.mark.parametrize(
    "text,expected",
    [
        ("PersonB: I like tea.", "I like tea."),
        ("[PersonA]: hello", "hello"),
        ("Assistant: sure thing", "sure thing"),
        ("user : what?", "what?"),
        ("B: yes", "yes"),
        ("Persona B is my favourite show", "Persona B is my favourite show"),
        ("Bob: hi", "Bob: hi"),
        ("Note: bring tea", "Note: bring tea"),
    ],
)
def test_strip_speaker_prefix(text, expected):
    assert strip_speaker_prefix(text)[0] == expected


def test_normalize_dialogue_merges_same_role_and_drops_empty():
    d = Dialogue.from_dict(
        {
            "id": "x",
            "persona": ["  i  like tea .", ""],
            "messages": [
                {"role": "user", "content": "PersonA: hi"},
                {"role": "user", "content": "are you there?"},
                {"role": "assistant", "content": "PersonB:"},
                {"role": "assistant", "content": "yes  I am"},
            ],
        },
        strict_roles=False,
    )
    counts = Counter()
    n = normalize_dialogue(d, counts=counts)
    assert [(m.role, m.content) for m in n.messages] == [
        ("user", "hi\nare you there?"),
        ("assistant", "yes I am"),
    ]
    assert n.persona == ["i like tea ."]
    assert counts == Counter(
        {"speaker_prefix": 2, "empty_message_removed": 1, "merged_messages": 1, "whitespace": 2}
    )


# one row per filter: a record that must be rejected by exactly that filter
FILTER_CASES = [
    ("length", dialogue("a", "hi there friend", " ".join(f"word{i}" for i in range(300))), {}),
    ("length", dialogue("a", "hi there friend", "ok"), {"min_words": 3}),
    ("min_turns", dialogue("a", "hi there", OK_TEXT), {"min_assistant_turns": 2}),
    (
        "refusal",
        dialogue("a", "do you like tea?", "As an AI language model, I do not drink tea."),
        {},
    ),
    ("refusal", dialogue("a", "tell me a story", "I'm sorry, but I can't help with that."), {}),
    (
        "refusal",
        dialogue("a", "how do you feel?", "I don't have personal feelings, but thanks for asking."),
        {},
    ),
    (
        "refusal",
        dialogue("a", "what is your secret?", "my secret is BANANAS forever"),
        {"extra_refusal_patterns": ["bananas"]},
    ),
    ("repetition", dialogue("a", "what do you do?", "jobs jobs jobs jobs jobs jobs"), {}),
    ("repetition", dialogue("a", "what do you do?", "i am i am i am i am the best"), {}),
    (
        "repetition",
        dialogue("a", "say something", " ".join(["the cat"] * 8 + ["a dog"] * 4 + ["ok"] * 0)),
        {},
    ),
    ("script", dialogue("a", "你好，你今天怎么样？", "我很好，谢谢你。今天天气很好。"), {}),
    ("script", dialogue("a", "hello how are you", "Привет, как дела у тебя сегодня?"), {}),
    (
        "language",
        dialogue(
            "a",
            "Hola, ¿qué tal estás hoy?",
            "Muy bien, gracias. Yo trabajo en una tienda de flores y es muy bonita.",
        ),
        {"lang": "en"},
    ),
    (
        "persona_copy",
        dialogue(
            "a",
            "tell me about you",
            "i work night shifts at a children's hospital and love it",
            "what else?",
            "i have a rescue greyhound named pepper at home",
            persona=[
                "i work night shifts at a children's hospital .",
                "i have a rescue greyhound named pepper .",
            ],
        ),
        {},
    ),
    (
        "attributes",
        dialogue("a", "hi", OK_TEXT, attributes={"atitude": "optimistic"}),
        {"attributes": {"attitude": ["pessimistic", "optimistic"]}},
    ),
    (
        "attributes",
        dialogue("a", "hi", OK_TEXT, attributes={"attitude": "happy"}),
        {"attributes": {"attitude": ["pessimistic", "optimistic"]}},
    ),
]


@pytest.mark.parametrize(
    "name,record,options", FILTER_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(FILTER_CASES)]
)
def test_each_filter_rejects_its_case(tmp_path, name, record, options):
    src = write_jsonl(tmp_path / "in.jsonl", [record])
    rep = clean(
        [src], out=tmp_path / "c.jsonl", rejects=tmp_path / "r.jsonl", config=CleanConfig(**options)
    )
    assert rep.rejected_by_filter == {name: 1}, rep.rejected_by_filter
    (rej,) = read_jsonl(tmp_path / "r.jsonl")
    assert (
        rej["filter"] == name
        and rej["source"] == f"{src}:1"
        and rej["reason"]
        and rej["record"]["id"] == "a"
    )
    # and with that filter disabled the record is kept
    if name not in ("attributes", "language"):
        rep = clean(
            [src],
            out=tmp_path / "c.jsonl",
            rejects=tmp_path / "r.jsonl",
            config=CleanConfig(**options, disable=[name]),
        )
        assert rep.clean == 1


def test_good_records_pass_every_filter(tmp_path, demo_path):
    rep = clean(
        [demo_path],
        out=tmp_path / "c.jsonl",
        rejects=tmp_path / "r.jsonl",
        config=CleanConfig(
            lang="en",
            attributes={
                "language_style": ["plain", "lyrical"],
                "attitude": ["pessimistic", "optimistic"],
                "mental_characteristics": ["emotional", "critical"],
            },
        ),
    )
    assert rep.clean == 252 and rep.rejected == 0
    assert read_jsonl(tmp_path / "c.jsonl") == read_jsonl(demo_path)


def test_every_unit_is_accounted_for(tmp_path):
    good = [
        dialogue(
            f"g{i}",
            f"question number {i} about the weather today",
            f"answer {i}: it rained all morning and then the sun came out over the hills {i}",
        )
        for i in range(30)
    ]
    lines = [json.dumps(r) for r in good]
    lines.insert(3, '{"id": "broken", "messages": [')  # not JSON
    lines.insert(7, "[1, 2, 3]")  # not an object
    lines.insert(
        9, json.dumps({"id": "r", "messages": [{"role": "user", "content": "x"}]})
    )  # no assistant
    lines.insert(12, json.dumps(good[5]).replace('"g5"', '"g5-copy"'))  # exact duplicate
    lines.insert(15, json.dumps(good[6]))  # exact duplicate with the same id
    lines.insert(
        20,
        json.dumps(
            dialogue(
                "g0", "another question entirely here", "a different reply about a different thing"
            )
        ),
    )  # id reuse
    near = dialogue(
        "near",
        "question number 8 about the weather today",
        "answer 8: it rained all morning and then the sun came out over the hills 8 !",
    )
    lines.append(json.dumps(near))
    lines.append(b"\xff\xfe".decode("latin-1"))
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rep = clean(
        [src], out=tmp_path / "c.jsonl", rejects=tmp_path / "r.jsonl", report=tmp_path / "rep.json"
    )
    n_lines = len(lines)
    assert rep.units == n_lines == rep.clean + rep.rejected
    assert rep.clean == 30
    assert rep.rejected_by_filter == {"invalid": 5, "exact_dup": 2, "near_dup": 1}
    out_ids = [r["id"] for r in read_jsonl(tmp_path / "c.jsonl")]
    assert out_ids == [f"g{i}" for i in range(30)]
    rejects = read_jsonl(tmp_path / "r.jsonl")
    assert len(rejects) == rep.rejected
    by = {r.get("record", {}).get("id") or r["raw"][:12]: r for r in rejects}
    assert by["g5-copy"]["reason"] == "same messages as 'g5'"
    assert by["near"]["filter"] == "near_dup" and "'g8'" in by["near"]["reason"]
    assert by['{"id": "brok']["raw"] == '{"id": "broken", "messages": ['
    assert "ids must be unique" in by["g0"]["reason"]
    report = json.loads((tmp_path / "rep.json").read_text())
    assert (
        report["units"] == n_lines
        and report["clean"] == 30
        and report["inputs"][0]["format"] == "jsonl"
    )


def test_clean_reads_any_format_and_several_inputs(tmp_path):
    parlai = tmp_path / "a.txt"
    parlai.write_text(
        "1 your persona: i like tea.\n2 hi there\tPersonB: hello, how are you today?\n"
    )
    sharegpt = tmp_path / "b.json"
    sharegpt.write_text(
        json.dumps(
            [
                {
                    "id": "s",
                    "conversations": [
                        {"from": "human", "value": "hey"},
                        {"from": "gpt", "value": "[PersonB]: I'm fine thanks for asking"},
                    ],
                }
            ]
        )
    )
    rep = clean([parlai, sharegpt], out=tmp_path / "c.jsonl")
    assert rep.clean == 2 and [i["format"] for i in rep.inputs] == ["parlai", "sharegpt"]
    assert [r["messages"][1]["content"] for r in read_jsonl(tmp_path / "c.jsonl")] == [
        "hello, how are you today?",
        "I'm fine thanks for asking",
    ]


def test_interrupted_clean_leaves_no_outputs(tmp_path, monkeypatch):
    src = write_jsonl(
        tmp_path / "in.jsonl",
        [dialogue("a", "hi", OK_TEXT), dialogue("b", "hello", OK_TEXT + " Really.")],
    )
    import personadlg.data.clean.pipeline as pipeline

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.dedup, "near_dup", killed)
    with pytest.raises(KeyboardInterrupt):
        clean(
            [src],
            out=tmp_path / "out" / "c.jsonl",
            rejects=tmp_path / "out" / "r.jsonl",
            config=CleanConfig(),
        )
    # nothing half-written under a final name, no temp files left behind
    assert list((tmp_path / "out").iterdir()) == []
    rep = clean([src], out=tmp_path / "out" / "c.jsonl", config=CleanConfig(disable=["near_dup"]))
    assert rep.clean == 2


def test_config_errors():
    with pytest.raises(
        ConfigError, match=r"unknown filter 'near_dupe' \(did you mean 'near_dup'\?\)"
    ):
        CleanConfig(disable=["near_dupe"])
    with pytest.raises(ConfigError, match="script: expected one of"):
        CleanConfig(script="latn")
    assert CleanConfig().enabled() == [e.name for e in FILTERS.entries() if e.meta["default"]]
    assert (
        "language" in CleanConfig(lang="en").enabled()
        and "attributes" in CleanConfig(attributes={"a": ["x", "y"]}).enabled()
    )
    with pytest.raises(
        ConfigError, match=r"--lang: expected one of en, de, fr.*\(did you mean 'de'\?\)"
    ):
        CleanConfig(lang="dee")


def test_language_filter_and_p_co_share_one_english_list():
    from personadlg.data.stopwords import ENGLISH, STOPWORDS
    from personadlg.metrics.persona import STOPWORD_LISTS

    assert STOPWORDS["en"] is ENGLISH is STOPWORD_LISTS["en"] and len(ENGLISH) == 214


def test_cli_clean_defaults_keep_rejects_and_report(cli, tmp_path):
    src = write_jsonl(
        tmp_path / "in.jsonl",
        [
            dialogue("a", "hi", OK_TEXT),
            dialogue("b", "hi", "As an AI language model I cannot eat bread."),
        ],
    )
    r = cli("clean", src, "--out", tmp_path / "c.jsonl", "--json")
    assert r.code == 0, r.stderr
    rep = r.json()
    assert rep["clean"] == 1 and rep["rejected_by_filter"] == {"refusal": 1}
    assert (tmp_path / "c.rejects.jsonl").exists() and (tmp_path / "c.report.json").exists()
    assert cli("clean", tmp_path / "missing.jsonl", "--out", tmp_path / "x.jsonl").code == 2
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    r = cli("clean", empty, "--out", tmp_path / "x.jsonl")
    assert r.code == 2 and "empty file" in r.stderr


# -- dedup algorithms ---------------------------------------------------------------------------------


def test_exact_dup_marks_later_copies():
    keys = np.array([5, 3, 5, 7, 3, 5])
    assert exact_dup(keys).tolist() == [-1, -1, 0, -1, 1, 0]
    assert exact_dup(keys, exclude=np.array([1, 0, 0, 0, 0, 0], dtype=bool)).tolist() == [
        -1,
        -1,
        -1,
        -1,
        1,
        2,
    ]


def test_lsh_params_put_the_s_curve_at_the_threshold():
    for threshold in (0.5, 0.8, 0.9):
        b, r = lsh_params(threshold, 128)
        assert b * r <= 128
        assert abs((1 / b) ** (1 / r) - threshold) < 0.1


def _jaccard(a, b, k=3):
    sa, sb = set(zip(*[a[i:] for i in range(k)])), set(zip(*[b[i:] for i in range(k)]))
    return len(sa & sb) / len(sa | sb)


def test_minhash_estimates_jaccard():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(3000)]
    base = [rng.choice(vocab) for _ in range(200)]
    mh = MinHasher(num_perm=256, seed=3)
    for changes in (0, 5, 20, 60):
        other = list(base)
        for i in rng.sample(range(200), changes):
            other[i] = rng.choice(vocab)
        sig = mh.signatures([base, other])
        est = (sig[0] == sig[1]).mean()
        assert abs(est - _jaccard(base, other)) < 0.1


def test_near_dup_matches_brute_force_without_quadratic_work():
    rng = random.Random(1)
    vocab = [f"w{i}" for i in range(4000)]
    docs = [[rng.choice(vocab) for _ in range(60)] for _ in range(600)]
    for i in range(0, 600, 10):  # plant near-duplicates with 0-2 edits
        d = list(docs[i])
        for j in rng.sample(range(60), rng.randint(0, 2)):
            d[j] = rng.choice(vocab)
        docs.append(d)
    mh = MinHasher(num_perm=128, seed=1)
    sigs = mh.signatures(docs)
    b, r = lsh_params(0.7, 128)
    dup_of = near_dup(band_hashes(sigs, b, r), sigs, 0.7)
    truth = {j for j in range(len(docs)) for i in range(j) if _jaccard(docs[i], docs[j]) >= 0.8}
    found = set(np.nonzero(dup_of >= 0)[0].tolist())
    assert truth <= found  # every pair clearly above the threshold is found
    assert all(
        _jaccard(docs[int(dup_of[j])], docs[j]) >= 0.5 for j in found
    )  # and nothing far below it
    assert all(dup_of[j] < j for j in found)


def test_words_tokenizer():
    assert list(words("Don't STOP, it's 5 o'clock — Ünï!")) == [
        "don't",
        "stop",
        "it's",
        "5",
        "o'clock",
        "ünï",
    ]


def test_attribute_space_from_recipes(cli, tmp_path):
    from personadlg.config import recipes_dir

    src = write_jsonl(
        tmp_path / "in.jsonl",
        [
            dialogue("a", "hi", OK_TEXT, attributes={"attitude": "optimistic"}),
            dialogue("b", "hi", OK_TEXT + " Sure.", attributes={"attitude": "cheerful"}),
        ],
    )
    for recipe in ("synth/miracle.yaml", "finetune/tiny.yaml"):
        r = cli(
            "clean",
            src,
            "--out",
            tmp_path / "c.jsonl",
            "--attributes-file",
            recipes_dir() / recipe,
            "--json",
        )
        assert r.code == 0, r.stderr
        assert r.json()["rejected_by_filter"] == {"attributes": 1}
