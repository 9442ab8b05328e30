from __future__ import annotations

from collections import Counter

from personadlg.data.stats import stats, summary
from tests.conftest import dialogue, shared, write_jsonl


def test_summary_of_a_histogram():
    assert summary(Counter({1: 1, 2: 1, 3: 1, 10: 1})) == {
        "n": 4,
        "min": 1,
        "mean": 4.0,
        "median": 2.5,
        "p90": 7.9,
        "max": 10,
    }
    assert summary(Counter()) == {"n": 0}


def test_dialogue_stats_by_hand(tmp_path):
    p = write_jsonl(
        tmp_path / "d.jsonl",
        [
            dialogue(
                "a",
                "one two",
                "three four five",
                attributes={"attitude": "optimistic"},
                user_id="u1",
                persona=["p1", "p2"],
                profile={"age": "20s"},
                topic="t",
            ),
            dialogue(
                "b",
                "one",
                "two",
                "three four",
                "five six seven eight",
                user_id="u1",
                persona=["p1", "p2"],
            ),
            dialogue(
                "c",
                "x y z",
                "w",
                attributes={"attitude": "pessimistic", "language_style": "plain"},
                persona=["q"],
            ),
        ],
    )
    s = stats(p)
    assert (
        s["dialogues"] == 3
        and s["messages"] == 8
        and s["user_messages"] == 4
        and s["assistant_messages"] == 4
    )
    assert s["messages_per_dialogue"]["mean"] == 2.67 and s["messages_per_dialogue"]["max"] == 4
    assert s["words_per_message"]["assistant"] == {
        "n": 4,
        "min": 1,
        "mean": 2.25,
        "median": 2.0,
        "p90": 3.7,
        "max": 4,
    }
    assert s["attributes"] == {
        "attitude": {"optimistic": 1, "pessimistic": 1},
        "language_style": {"plain": 1},
    }
    assert s["unlabelled_dialogues"] == 1
    assert s["users"]["count"] == 1 and s["users"]["dialogues_without_user"] == 1
    assert s["personas"]["unique"] == 2 and s["personas"]["dialogues_per_persona"]["max"] == 2
    assert s["topics"] == 1 and s["profile_keys"] == {"age": 1}


def test_example_stats(tmp_path):
    p = write_jsonl(
        tmp_path / "g.jsonl",
        [
            {
                "id": "a#1",
                "context": [{"role": "user", "content": "hi"}],
                "reference": "hello there",
                "generation": "hey",
                "target_attributes": {"attitude": "optimistic"},
                "method": "cvae",
            },
            {"id": "a#3", "context": [], "reference": "ok"},
        ],
    )
    s = stats(p)
    assert (
        s["kind"] == "examples"
        and s["examples"] == 2
        and s["dialogues"] == 1
        and s["with_generation"] == 1
    )
    assert s["target_attributes"] == {"attitude=optimistic": 1} and s["methods"] == {"cvae": 1}


def test_cli_stats_json_and_table(cli, demo_path):
    r = cli("stats", demo_path, "--json")
    assert r.code == 0 and r.json()["dialogues"] == 252
    r = cli("stats", demo_path)
    assert r.code == 0 and "language_style" in r.stdout and "lyrical" in r.stdout


def test_stats_on_convai2(cli):
    r = cli("stats", shared("convai2", "valid_self_original_no_cands.txt"), "--json")
    assert r.code == 0
    s = r.json()
    assert (
        s["dialogues"] == 1000
        and s["assistant_messages"] == 7801
        and s["personas"]["unique"] == 680
    )  # ConvAI2 reuses personas with their sentences shuffled: 992 orderings of 680 sentence sets
