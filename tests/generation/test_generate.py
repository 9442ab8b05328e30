"""generate: decoding options, per-example seeds, resume, targets; chat over stdin."""

from __future__ import annotations

import json

import pytest

from personadlg.errors import UsageError
from personadlg.generation.generate import (
    decoding_config,
    example_seed,
    generate_file,
)
from personadlg.generation.inputs import all_combinations
from personadlg.training.checkpoint import load_checkpoint
from tests.conftest import read_jsonl


@pytest.fixture(scope="module")
def loaded(trained_tiny):
    return load_checkpoint(trained_tiny)


def texts(path):
    return {
        (r["id"], json.dumps(r.get("target_attributes"), sort_keys=True)): r["generation"]
        for r in read_jsonl(path)
    }


def test_output_records(tmp_path, trained_tiny, small_data, loaded):
    out = tmp_path / "gen.jsonl"
    s = generate_file(trained_tiny, small_data["test"], out, loaded=loaded)
    recs = read_jsonl(out)
    expected = sum(
        1 for d in read_jsonl(small_data["test"]) for m in d["messages"] if m["role"] == "assistant"
    )
    assert s["generated"] == len(recs) == s["total"] == expected > 4
    r = recs[0]
    assert {
        "id",
        "dialogue_id",
        "context",
        "reference",
        "persona",
        "generation",
        "method",
        "checkpoint",
        "decoding",
        "seed",
    } <= r.keys()
    assert r["method"] == "finetune" and r["decoding"] == {"max_new_tokens": 12, "greedy": True}
    assert r["id"].endswith("#1") and r["context"][-1]["role"] == "user"
    assert (
        generate_file(
            trained_tiny, small_data["test"], tmp_path / "last.jsonl", turns="last", loaded=loaded
        )["total"]
        == 4
    )


def test_sampling_is_reproducible_and_independent_of_batching(
    tmp_path, trained_tiny, small_data, loaded
):
    opts = ["do_sample=true", "top_p=0.9", "top_k=50", "temperature=1.2", "seed=7"]
    a = generate_file(
        trained_tiny,
        small_data["test"],
        tmp_path / "a.jsonl",
        overrides=[*opts, "batch_size=8"],
        loaded=loaded,
    )
    generate_file(
        trained_tiny,
        small_data["test"],
        tmp_path / "b.jsonl",
        overrides=[*opts, "batch_size=1"],
        loaded=loaded,
    )
    generate_file(
        trained_tiny,
        small_data["test"],
        tmp_path / "c.jsonl",
        overrides=[*opts, "batch_size=8", "seed=8"],
        loaded=loaded,
    )
    ta, tb, tc = (
        texts(tmp_path / "a.jsonl"),
        texts(tmp_path / "b.jsonl"),
        texts(tmp_path / "c.jsonl"),
    )
    assert ta == tb
    assert ta != tc
    assert len(set(ta.values())) > 1
    assert a["decoding"] == {
        "max_new_tokens": 12,
        "do_sample": True,
        "temperature": 1.2,
        "top_k": 50,
        "top_p": 0.9,
    }


def test_rerun_resumes_and_skips_done_examples(tmp_path, trained_tiny, small_data, loaded):
    out = tmp_path / "gen.jsonl"
    opts = ["do_sample=true", "batch_size=3"]
    first = generate_file(
        trained_tiny, small_data["test"], out, overrides=opts, limit=7, loaded=loaded
    )
    assert first["generated"] == 7
    with open(out, "a") as f:
        f.write('{"id": "torn')  # an interrupted write
    second = generate_file(trained_tiny, small_data["test"], out, overrides=opts, loaded=loaded)
    assert second["skipped_done"] == 7 and second["generated"] == second["total"] - 7
    full = tmp_path / "full.jsonl"
    generate_file(trained_tiny, small_data["test"], full, overrides=opts, loaded=loaded)
    assert texts(out) == texts(full) and len(read_jsonl(out)) == second["total"]
    again = generate_file(trained_tiny, small_data["test"], out, overrides=opts, loaded=loaded)
    assert again["generated"] == 0


def test_beam_search_and_penalties(tmp_path, trained_tiny, small_data, loaded):
    s = generate_file(
        trained_tiny,
        small_data["test"],
        tmp_path / "b.jsonl",
        overrides=["num_beams=3", "repetition_penalty=1.3", "no_repeat_ngram_size=2"],
        turns="last",
        loaded=loaded,
    )
    assert s["decoding"] == {
        "max_new_tokens": 12,
        "num_beams": 3,
        "repetition_penalty": 1.3,
        "no_repeat_ngram_size": 2,
    }
    assert s["generated"] == 4


def test_min_new_tokens(tmp_path, trained_tiny, small_data, loaded):
    import torch

    from personadlg.config import GenerateConfig
    from personadlg.models.decoding import generate_ids

    s = generate_file(
        trained_tiny,
        small_data["test"],
        tmp_path / "m.jsonl",
        overrides=["min_new_tokens=6", "max_new_tokens=6"],
        loaded=loaded,
    )
    assert s["decoding"] == {"max_new_tokens": 6, "min_new_tokens": 6, "greedy": True}
    tok = loaded[1].tokenizer
    ids = torch.tensor([tok("User: hi\nAssistant:")["input_ids"]])
    for do_sample in (False, True):
        new = generate_ids(
            loaded[1].lm,
            ids,
            torch.ones_like(ids),
            cfg=GenerateConfig(max_new_tokens=6, min_new_tokens=6, do_sample=do_sample),
            seeds=[0],
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        assert new.shape == (1, 6) and (new != tok.eos_token_id).all()


def test_targets_and_all_combinations(tmp_path, trained_tiny, small_data, loaded):
    out = tmp_path / "all.jsonl"
    s = generate_file(
        trained_tiny, small_data["test"], out, combinations=True, turns="last", loaded=loaded
    )
    assert s["targets"] == 8 and s["generated"] == 32
    combos = {json.dumps(r["target_attributes"], sort_keys=True) for r in read_jsonl(out)}
    assert len(combos) == 8
    s = generate_file(
        trained_tiny,
        small_data["test"],
        tmp_path / "one.jsonl",
        targets={"attitude": "optimistic"},
        turns="last",
        loaded=loaded,
    )
    assert all(
        r["target_attributes"] == {"attitude": "optimistic"}
        for r in read_jsonl(tmp_path / "one.jsonl")
    )
    with pytest.raises(UsageError, match=r"unknown aspect 'happy' of attitude"):
        generate_file(
            trained_tiny,
            small_data["test"],
            tmp_path / "x.jsonl",
            targets={"attitude": "happy"},
            loaded=loaded,
        )


def test_example_file_input(tmp_path, trained_tiny, small_data, loaded):
    src = tmp_path / "gen.jsonl"
    generate_file(trained_tiny, small_data["test"], src, turns="last", loaded=loaded)
    s = generate_file(
        trained_tiny, src, tmp_path / "again.jsonl", loaded=loaded
    )  # example records in, example records out
    assert s["generated"] == 4


def test_helpers():
    assert (
        example_seed(0, "d#1", None) == example_seed(0, "d#1", None) != example_seed(1, "d#1", None)
    )
    assert example_seed(0, "d#1", {"a": "x"}) != example_seed(0, "d#1", {"a": "y"})
    assert len(all_combinations({"a": ["x", "y"], "b": ["p", "q", "r"]})) == 6
    from personadlg.config import GenerateConfig

    assert decoding_config(GenerateConfig(), ["top_p=0.5", "generate.seed=3"]).top_p == 0.5
    with pytest.raises(Exception, match="unknown key 'generate.topp'"):
        decoding_config(GenerateConfig(), ["topp=0.5"])


def test_cli_generate_and_errors(cli, tmp_path, trained_tiny, small_data):
    r = cli(
        "generate",
        trained_tiny,
        "--input",
        small_data["test"],
        "--out",
        tmp_path / "g.jsonl",
        "--turns",
        "last",
        "--json",
    )
    assert r.code == 0, r.stderr and r.json()["generated"] == 4
    r = cli("generate", tmp_path, "--input", small_data["test"], "--out", tmp_path / "x.jsonl")
    assert r.code == 2 and "not a personadlg checkpoint" in r.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"id": "a", "messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "yo"}]}\n'
    )
    r = cli("generate", trained_tiny, "--input", bad, "--out", tmp_path / "y.jsonl")
    assert r.code == 2 and f"{bad}:1: field 'messages[1].role'" in r.stderr


def test_chat_over_stdin(trained_tiny, monkeypatch, capsys):
    import io

    from personadlg.cli import main

    script = "/persona i keep bees.\nhello there\n/attributes attitude=optimistic\nhow are you?\n/attributes attitude=happy\n/reset\n/nope\n/codes\nbye\n/quit\nnever read\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(script))
    with pytest.raises(SystemExit) as e:
        main(["chat", str(trained_tiny), "max_new_tokens=8"])
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert e.value.code == 0
    assert lines[0] == "(persona: i keep bees.)"
    assert lines[1].startswith("bot> ") and lines[3].startswith("bot> ")
    assert lines[2] == "(attributes: attitude=optimistic)"
    assert lines[4].startswith("error: --attributes: unknown aspect 'happy' of attitude")
    assert lines[5] == "(conversation reset)"
    assert lines[6] == "unknown command /nope; /help lists the commands"
    assert lines[7] == "unknown command /codes; /help lists the commands"  # codebook's command
    assert lines[8].startswith("bot> ") and len(lines) == 9  # /quit ends before the last line


def test_generate_writes_what_the_method_records_per_record(trained_tiny, tmp_path, small_data):
    """A method may say per record what served it (an adapter, a fallback): it lands in that
    record's `decoding`, beside what it says for the whole call."""
    from personadlg.generation.generate import generate_file
    from personadlg.models.base import Generations
    from personadlg.training.checkpoint import load_config

    class Stub:
        name = "finetune"

        def generate(self, examples, *, decoding, seeds, targets):
            return Generations(
                [f"reply {i}" for i in range(len(examples))],
                shared={"served_by": "stub"},
                records=[{"adapter": "u1" if i % 2 else "base"} for i in range(len(examples))],
            )

    cfg = load_config(trained_tiny)
    out = tmp_path / "g.jsonl"
    generate_file(trained_tiny, small_data["test"], out, loaded=(cfg, Stub()), limit=4)
    rows = read_jsonl(out)
    assert [r["decoding"]["adapter"] for r in rows] == ["base", "u1", "base", "u1"]
    assert all(r["decoding"]["served_by"] == "stub" for r in rows)
