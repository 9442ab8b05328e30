from __future__ import annotations

import random

import pytest

from personadlg.data.split import assign_groups, split
from personadlg.errors import DataError, UsageError
from tests.conftest import dialogue, read_jsonl, write_jsonl


def _records(n_users=40, per_user=5):
    recs = []
    for u in range(n_users):
        for k in range(per_user):
            recs.append(
                dialogue(
                    f"d{u}-{k}",
                    "hi",
                    f"reply {u} {k}",
                    user_id=f"u{u}",
                    persona=[f"i am person {u % 20} ."],
                )
            )
    return recs


@pytest.mark.parametrize(
    "by,key", [("dialogue", "id"), ("user", "user_id"), ("persona", "persona")]
)
def test_groups_never_span_two_splits(tmp_path, by, key):
    src = write_jsonl(tmp_path / "in.jsonl", _records())
    rep = split(src, out_dir=tmp_path / "out", valid=0.1, test=0.1, by=by, seed=3)
    parts = {s: read_jsonl(tmp_path / "out" / f"{s}.jsonl") for s in ("train", "valid", "test")}
    assert sum(len(v) for v in parts.values()) == 200 == sum(rep.dialogues.values())
    owners = {}
    for s, recs in parts.items():
        for r in recs:
            g = str(r[key])
            assert owners.setdefault(g, s) == s, f"{by} group {g} leaks across splits"
    assert all(rep.dialogues[s] == len(parts[s]) for s in parts)
    assert 10 <= rep.dialogues["valid"] <= 35 and 10 <= rep.dialogues["test"] <= 35


def test_split_is_deterministic_and_independent_of_order(tmp_path):
    recs = _records()
    a = write_jsonl(tmp_path / "a.jsonl", recs)
    shuffled = list(recs)
    random.Random(0).shuffle(shuffled)
    b = write_jsonl(tmp_path / "b.jsonl", shuffled)
    split(a, out_dir=tmp_path / "A", by="user", seed=7)
    split(b, out_dir=tmp_path / "B", by="user", seed=7)
    for s in ("train", "valid", "test"):
        ids_a = sorted(r["id"] for r in read_jsonl(tmp_path / "A" / f"{s}.jsonl"))
        ids_b = sorted(r["id"] for r in read_jsonl(tmp_path / "B" / f"{s}.jsonl"))
        assert ids_a == ids_b
    split(a, out_dir=tmp_path / "C", by="user", seed=8)
    assert read_jsonl(tmp_path / "C" / "test.jsonl") != read_jsonl(tmp_path / "A" / "test.jsonl")


def test_assign_groups_hits_targets_and_keeps_train():
    sizes = {f"g{i}": 1 for i in range(100)}
    where = assign_groups(sizes, valid=0.05, test=0.05, seed=0)
    counts = {s: sum(1 for v in where.values() if v == s) for s in ("train", "valid", "test")}
    assert counts == {"train": 90, "valid": 5, "test": 5}
    assert set(assign_groups({"a": 1, "b": 1}, valid=0.4, test=0.4, seed=0).values()) >= {"train"}
    assert assign_groups({"a": 3, "b": 1}, valid=0, test=0, seed=0) == {"a": "train", "b": "train"}


def test_missing_group_keys_fall_back_to_the_dialogue(tmp_path):
    recs = _records(10, 2) + [dialogue(f"x{i}", "hi", "there") for i in range(5)]
    rep = split(write_jsonl(tmp_path / "in.jsonl", recs), out_dir=tmp_path / "o", by="user")
    assert rep.ungrouped == 5 and sum(rep.dialogues.values()) == 25


def test_split_errors(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [dialogue("a", "hi", "yo"), dialogue("a", "hi", "yo")])
    with pytest.raises(DataError) as err:
        split(src, out_dir=tmp_path / "o")
    assert (
        str(err.value)
        == f"{src}:2: field 'id': this id is already used by the record at {src}:1; ids must be unique (run `personadlg clean`)"
    )
    with pytest.raises(UsageError, match="--valid and --test"):
        split(src, out_dir=tmp_path / "o", valid=0.6, test=0.5)
    with pytest.raises(UsageError, match="--by: expected dialogue, user, persona or a field path"):
        split(src, out_dir=tmp_path / "o", by="meta..x y")
    assert not (tmp_path / "o").exists()


def test_cli_split(cli, tmp_path, demo_path):
    r = cli(
        "split",
        demo_path,
        "--out-dir",
        tmp_path,
        "--by",
        "user",
        "--valid",
        "0.1",
        "--test",
        "0.1",
        "--json",
    )
    assert r.code == 0, r.stderr
    rep = r.json()
    assert sum(rep["dialogues"].values()) == 252 and rep["groups"]["test"] >= 1
    test_users = {x["user_id"] for x in read_jsonl(tmp_path / "test.jsonl")}
    train_users = {x["user_id"] for x in read_jsonl(tmp_path / "train.jsonl")}
    assert test_users and not test_users & train_users
