from __future__ import annotations

from tests.conftest import read_jsonl


def test_demo_runs_end_to_end(cli, tmp_path):
    r = cli("demo", "--out-dir", tmp_path, "--json")
    assert r.code == 0, r.stderr
    summary = r.json()
    assert summary["clean"]["clean"] == 252 and summary["clean"]["rejected"] == 0
    parts = {s: read_jsonl(tmp_path / "data" / f"{s}.jsonl") for s in ("train", "valid", "test")}
    assert sum(len(v) for v in parts.values()) == 252 and all(parts.values())
    assert {p.name for p in tmp_path.iterdir()} == {
        "clean.jsonl",
        "clean.rejects.jsonl",
        "clean.report.json",
        "data",
    }
    r = cli("demo", "--out-dir", tmp_path)  # idempotent, human-readable output
    assert r.code == 0 and "split by dialogue" in r.stdout
