"""`personadlg eval --by user`: per-user values, the macro average over users (no-user group and
small users left out), intervals and paired comparisons resampling users, CLI contract."""

from __future__ import annotations

import math

import numpy as np
import pytest

from personadlg.errors import UsageError
from personadlg.metrics import evaluate_texts
from personadlg.metrics.base import EvalData
from personadlg.metrics.compare import compare_files
from personadlg.metrics.evaluate import evaluate_data
from personadlg.metrics.options import EvalOptions
from tests.conftest import write_jsonl

WS = {"tokenize": "whitespace"}

# u1: 3 records, u2: 2 records, one record without a user
GENS = ["a b a", "b c", "c d e", "a a", "a", "x y z"]
REFS = ["a b", "b c", "c d", "a b", "a b", "x y"]
USERS: list[str | None] = ["u1", "u1", "u1", "u2", "u2", None]


def _data(gens=GENS, refs=REFS, users=USERS) -> EvalData:
    return EvalData(
        generations=list(gens),
        references=list(refs),
        users=list(users),
        ids=[f"d{i}#1" for i in range(len(gens))],
    )


def _report(data: EvalData, metrics, **kw):
    opts = EvalOptions(**{**WS, **kw.pop("opts", {})})
    return evaluate_data(data, metrics=metrics, opts=opts, by="user", **kw)


def _subset_value(name: str, rows: list[int]) -> float:
    """The existing metric on the user's records alone."""
    s = evaluate_texts(
        [GENS[i] for i in rows], references=[REFS[i] for i in rows], metrics=[name], **WS
    )
    return s[name].value


def test_per_user_values_are_the_metric_on_the_users_records():
    r = _report(_data(), ["dist-1", "bleu-1", "rouge-l", "sbleu"])
    by = r["by_user"]
    assert list(by) == ["u1", "u2", "(no user)"]
    assert [by[u]["n"] for u in by] == [3, 2, 1]
    # by hand: u1's unigrams a b a | b c | c d e: 8 tokens, 5 distinct; u2's a a | a: 3 tokens, 1 distinct
    assert by["u1"]["dist-1"] == pytest.approx(100 * 5 / 8)
    assert by["u2"]["dist-1"] == pytest.approx(100 / 3)
    # by hand: u2's corpus BLEU-1: 2 clipped matches of 3 unigrams, 3 hypothesis vs 4 reference tokens
    assert by["u2"]["bleu-1"] == pytest.approx(100 * 2 / 3 * math.exp(1 - 4 / 3), abs=1e-5)
    for user, rows in (("u1", [0, 1, 2]), ("u2", [3, 4]), ("(no user)", [5])):
        for name in ("dist-1", "bleu-1", "rouge-l"):
            assert by[user][name] == pytest.approx(_subset_value(name, rows), abs=1e-5)
    # self-BLEU is against the user's own other generations; undefined for a single record
    assert by["u1"]["sbleu"] == pytest.approx(_subset_value("sbleu", [0, 1, 2]), abs=1e-5)
    assert by["(no user)"]["sbleu"] is None
    # the overall (micro) values are unchanged by --by
    plain = evaluate_data(_data(), metrics=["dist-1", "bleu-1"], opts=EvalOptions(**WS))
    assert r["metrics"]["dist-1"] == plain["metrics"]["dist-1"]


def test_macro_is_the_mean_over_users_without_the_no_user_group():
    r = _report(_data(), ["dist-1", "bleu-1"])
    by, macro = r["by_user"], r["macro"]
    for name in ("dist-1", "bleu-1"):
        assert macro[name]["value"] == pytest.approx((by["u1"][name] + by["u2"][name]) / 2)
        assert macro[name]["users"] == 2
        assert macro[name]["low"] is None and macro[name]["high"] is None  # no --bootstrap
    assert by["(no user)"]["in_macro"] is False and by["u1"]["in_macro"] is True
    assert "without user_id" in r["grouping"]["excluded"]["(no user)"]
    assert r["grouping"]["users"] == 2 and r["grouping"]["in_macro"] == 2
    assert r["grouping"]["records_without_field"] == 1
    # signature: the metric's own, plus by:user
    sig = r["metrics"]["bleu-1"]["signature"]
    assert macro["bleu-1"]["signature"] == sig.replace("|v:", "|by:user|v:")


def test_min_user_records_lists_small_users_but_leaves_them_out():
    r = _report(_data(), ["dist-1"], min_group_records=3)
    assert set(r["by_user"]) == {"u1", "u2", "(no user)"}
    assert r["by_user"]["u2"]["in_macro"] is False
    assert "fewer than --min-user-records 3" in r["grouping"]["excluded"]["u2"]
    assert r["macro"]["dist-1"]["value"] == pytest.approx(r["by_user"]["u1"]["dist-1"])
    assert r["macro"]["dist-1"]["users"] == 1
    assert "min-records:3" in r["macro"]["dist-1"]["signature"]
    with pytest.raises(UsageError, match="--min-user-records"):
        _report(_data(), ["dist-1"], min_group_records=0)


def _many_users(k: int = 8, shift: int = 0):
    rng = np.random.default_rng(7)
    words = list("abcdefghij")
    gens, refs, users = [], [], []
    for u in range(k):
        for _ in range(1 + u % 3):
            gens.append(" ".join(rng.choice(words, size=4 + (u + shift) % 3)))
            refs.append(" ".join(rng.choice(words, size=4)))
            users.append(f"u{u}")
    return gens, refs, users


def test_macro_interval_resamples_users_and_is_seeded():
    gens, refs, users = _many_users()
    data = _data(gens, refs, users)
    r = _report(data, ["dist-1", "bleu-1", "rouge-l"], opts={"bootstrap": 300, "seed": 3})
    for name, m in r["macro"].items():
        assert m["low"] <= m["value"] <= m["high"], (name, m)
        assert m["ci95_method"] == "bootstrap-percentile:300:clusters=user"
    # exactly the percentile bootstrap of the mean over resampled users (clusters)
    per_user = np.array([r["by_user"][f"u{u}"]["rouge-l"] for u in range(8)])
    rng = np.random.default_rng(3)
    means = [per_user[rng.integers(0, 8, size=8)].mean() for _ in range(300)]
    lo, hi = np.percentile(means, [2.5, 97.5])
    assert r["macro"]["rouge-l"]["low"] == pytest.approx(lo, abs=1e-5)
    assert r["macro"]["rouge-l"]["high"] == pytest.approx(hi, abs=1e-5)
    again = _report(data, ["dist-1", "bleu-1", "rouge-l"], opts={"bootstrap": 300, "seed": 3})
    assert again["macro"] == r["macro"]
    other = _report(data, ["dist-1", "bleu-1", "rouge-l"], opts={"bootstrap": 300, "seed": 4})
    assert other["macro"]["rouge-l"]["low"] != r["macro"]["rouge-l"]["low"]


def _records(gens, refs, users):
    out = []
    for i, (g, ref, u) in enumerate(zip(gens, refs, users)):
        rec = {
            "id": f"d{i}#1",
            "context": [{"role": "user", "content": "hi"}],
            "reference": ref,
            "generation": g,
        }
        if u is not None:
            rec["user_id"] = u
        out.append(rec)
    return out


def test_compare_pairs_macro_averages_by_user(tmp_path, cli):
    gens, refs, users = _many_users()
    better = [ref if i % 2 else g for i, (g, ref) in enumerate(zip(gens, refs))]
    a = write_jsonl(tmp_path / "a.jsonl", _records(gens, refs, users))
    b = write_jsonl(tmp_path / "b.jsonl", _records(better, refs, users))
    opts = EvalOptions(**WS, bootstrap=400, seed=1)
    res = compare_files([a, b], metrics=["bleu-1", "rouge-l"], opts=opts, by="user")
    sa, sb = res["systems"][str(a)], res["systems"][str(b)]
    d = res["comparisons"]["macro_vs_base"][str(b)]["rouge-l"]
    assert d["diff"] == pytest.approx(
        sb["macro"]["rouge-l"]["value"] - sa["macro"]["rouge-l"]["value"]
    )
    assert d["users"] == 8 and d["method"] == "paired-bootstrap:400:clusters=user"
    assert d["ci95"][0] <= d["diff"] <= d["ci95"][1] and d["diff"] > 0
    # the same resampled users for both systems: the bootstrap of the mean per-user difference
    diff_u = np.array(
        [sb["by_user"][f"u{u}"]["rouge-l"] - sa["by_user"][f"u{u}"]["rouge-l"] for u in range(8)]
    )
    rng = np.random.default_rng(1)
    means = [diff_u[rng.integers(0, 8, size=8)].mean() for _ in range(400)]
    lo, hi = np.percentile(means, [2.5, 97.5])
    assert d["ci95"] == pytest.approx([lo, hi], abs=1e-5)
    assert compare_files([a, b], metrics=["bleu-1", "rouge-l"], opts=opts, by="user") == res
    # through the CLI, with the table
    r = cli(
        "eval",
        a,
        "--compare",
        b,
        "--metrics",
        "rouge-l",
        "--by",
        "user",
        "--tokenize",
        "whitespace",
    )
    assert r.code == 0, r.stderr
    assert "difference of macro averages" in r.stdout and "clusters=user" in r.stdout
    # a user id that differs between the files cannot be paired
    moved = list(users)
    moved[0] = "u7"
    c = write_jsonl(tmp_path / "c.jsonl", _records(gens, refs, moved))
    r = cli("eval", a, "--compare", c, "--by", "user", "--metrics", "bleu-1")
    assert r.code == 2 and "'d0#1' has user_id 'u0'" in r.stderr


def test_cli_by_user(tmp_path, cli):
    p = write_jsonl(tmp_path / "g.jsonl", _records(GENS, REFS, USERS))
    r = cli("eval", p, "--by", "nonsense")
    assert r.code == 2 and "--by 'nonsense': expected one of user" in r.stderr
    r = cli("eval", p, "--per-user")
    assert r.code == 2 and "need --by user" in r.stderr
    r = cli("eval", p, "--by", "user", "--min-user-records", "0")
    assert r.code == 2 and "--min-user-records" in r.stderr
    args = ("eval", p, "--metrics", "dist-1,bleu-1", "--tokenize", "whitespace", "--by", "user")
    r = cli(*args, "--out", tmp_path / "r.json", "--json")
    assert r.code == 0, r.stderr
    rep = r.json()
    assert set(rep["by_user"]) == {"u1", "u2", "(no user)"}
    assert rep["by_user"]["u2"]["dist-1"] == pytest.approx(100 / 3)
    assert set(rep["macro"]["dist-1"]) >= {"value", "low", "high", "users", "signature"}
    assert (
        rep["metrics"]["dist-1"]["signature"]
        == "distinct|n:1|tok:whitespace|lc:no|agg:corpus|v:0.1.0"
    )
    assert rep["macro"]["dist-1"]["signature"].endswith("|by:user|v:0.1.0")
    r = cli(*args)
    assert r.code == 0, r.stderr
    assert "macro average over 2 of 2 users" in r.stdout
    assert "not in the macro average (but reported): (no user)" in r.stdout
    flat = " ".join(r.stdout.split())  # the table's title may wrap
    assert "1 of the 6 records have no user_id (the group (no user)" in flat
    assert "\nper user\n" not in r.stdout and "a row per user: --per-user" in r.stdout
    r = cli(*args, "--per-user")
    assert r.code == 0 and "\nper user\n" in r.stdout and "u2" in r.stdout
