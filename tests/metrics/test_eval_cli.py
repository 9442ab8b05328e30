"""`personadlg eval` on files: report contract, per-example output, by-target, compare, errors."""

from __future__ import annotations

import json

from tests.conftest import read_jsonl, write_jsonl


def gen(
    rid, generation, reference="the cat sat on the mat", target=None, persona=("i like cats .",)
):
    rec = {
        "id": rid,
        "dialogue_id": rid.split("#")[0],
        "context": [{"role": "user", "content": "what do you like?"}],
        "reference": reference,
        "persona": list(persona),
        "generation": generation,
    }
    if target:
        rec["target_attributes"] = target
    return rec


def test_report_contract(cli, tmp_path):
    p = write_jsonl(
        tmp_path / "g.jsonl",
        [
            gen("a#1", "the cat sat on a mat"),
            gen("b#1", "i like cats a lot"),
            gen("c#1", "dogs are fine"),
            gen("d#1", "a mat for the cat"),
        ],
    )
    r = cli(
        "eval",
        p,
        "--out",
        tmp_path / "r.json",
        "--per-example",
        tmp_path / "pe.jsonl",
        "--bootstrap",
        "50",
        "--json",
    )
    assert r.code == 0, r.stderr
    report = r.json()
    assert report == json.loads((tmp_path / "r.json").read_text())
    assert report["n"] == 4 and report["version"] == "0.1.0" and len(report["input_sha256"]) == 64
    assert list(report["metrics"]) == [
        "bleu-1",
        "bleu-2",
        "rouge-l",
        "dist-1",
        "dist-2",
        "sbleu",
        "p-co",
        "persona-copy",
    ]
    # one persona for every record: the lift has nothing to compare against, and says so
    assert "two different personas" in report["skipped"]["p-co-lift"]
    for m in report["metrics"].values():
        assert {"value", "higher_is_better", "signature", "ci95", "ci95_method", "n"} <= m.keys()
        assert m["signature"].endswith("|v:0.1.0")
        assert m["ci95"][0] <= m["value"] <= m["ci95"][1]
    assert report["metrics"]["dist-2"]["ci95_method"].startswith("half-sampling")
    assert report["metrics"]["rouge-l"]["ci95_method"].startswith("bootstrap")
    assert report["metrics"]["sbleu"]["higher_is_better"] is False
    rows = read_jsonl(tmp_path / "pe.jsonl")
    assert (
        [x["id"] for x in rows] == ["a#1", "b#1", "c#1", "d#1"]
        and "rouge-l" in rows[0]
        and "bleu-1" not in rows[0]
    )  # corpus BLEU has no per-example score
    r = cli("eval", p)
    assert r.code == 0 and "signatures" in r.stdout and "bleu|n:1|tok:13a" in r.stdout


def test_by_target_and_metric_choice(cli, tmp_path):
    recs = [
        gen(f"d{i}#1", f"reply {i}", target={"attitude": "optimistic" if i % 2 else "pessimistic"})
        for i in range(6)
    ]
    p = write_jsonl(tmp_path / "g.jsonl", recs)
    r = cli(
        "eval",
        p,
        "--metrics",
        "dist-1,bleu-1",
        "--by-target",
        "--tokenize",
        "whitespace",
        "--lowercase",
        "--json",
    )
    assert r.code == 0, r.stderr
    rep = r.json()
    assert (
        list(rep["metrics"]) == ["dist-1", "bleu-1"]
        and "tok:whitespace|lc:yes" in rep["metrics"]["bleu-1"]["signature"]
    )
    assert set(rep["by_target"]) == {"attitude=optimistic", "attitude=pessimistic"}
    assert rep["by_target"]["attitude=optimistic"]["n"] == 3


def test_compare_systems(cli, tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [gen("x#1", "the cat sat"), gen("y#1", "on the mat")])
    b = write_jsonl(
        tmp_path / "b.jsonl", [gen("x#1", "the cat sat on the mat"), gen("y#1", "the mat")]
    )
    r = cli("eval", a, "--compare", b, "--metrics", "bleu-1,rouge-l", "--json")
    assert r.code == 0, r.stderr
    systems = r.json()["systems"]
    assert (
        list(systems) == [str(a), str(b)]
        and systems[str(b)]["metrics"]["rouge-l"]["value"]
        > systems[str(a)]["metrics"]["rouge-l"]["value"]
    )
    c = write_jsonl(tmp_path / "c.jsonl", [gen("x#1", "x"), gen("z#1", "y")])
    r = cli("eval", a, "--compare", c)
    assert r.code == 2 and "do not hold the same examples" in r.stderr


def test_bad_input(cli, tmp_path):
    p = write_jsonl(tmp_path / "g.jsonl", [{"id": "a#1", "context": [], "reference": "x"}])
    r = cli("eval", p)
    assert r.code == 2 and f"{p}:1: field 'generation': expected a string" in r.stderr
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    assert cli("eval", empty).code == 2
    ok = write_jsonl(tmp_path / "ok.jsonl", [gen("a#1", "x")])
    r = cli("eval", ok, "--metrics", "blue-1")
    assert r.code == 2 and "unknown metric 'blue-1' (did you mean 'bleu-1'?)" in r.stderr
    r = cli("eval", ok, "--metrics", "nli-prob")
    assert r.code == 2 and "needs --nli DIR" in r.stderr
    r = cli("eval", ok, "--tokenize", "spacy")
    assert r.code == 2 and "--tokenize 'spacy'" in r.stderr
