"""generate / eval given bad or contradictory settings: each is one clear error (exit 2), found
before the model's weights are loaded."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from personadlg.errors import UsageError
from personadlg.generation.generate import config_new_tokens_limit, decoding_config
from personadlg.training.checkpoint import load_checkpoint, load_config
from tests.conftest import write_jsonl

BEAMS = "num_beams: beam search (num_beams=4) cannot be combined with do_sample=true in personadlg"


@pytest.fixture
def broken(tmp_path: Path, trained_tiny: Path) -> Path:
    """A copy of the tiny checkpoint whose weights are garbage: loading it fails."""
    ckpt = tmp_path / "broken"
    shutil.copytree(trained_tiny, ckpt, ignore=shutil.ignore_patterns("optimizer.pt", "*.pt"))
    (ckpt / "model.safetensors").write_bytes(b"not a safetensors file" * 10)
    return ckpt


def one_error(r, *needles: str) -> None:
    assert r.code == 2, (r.code, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr  # no "loaded ..." line before it
    assert lines[0].startswith("error: ")
    for n in needles:
        assert n in lines[0], lines[0]


def test_beam_sampling_refused(trained_tiny):
    cfg = load_config(trained_tiny)
    with pytest.raises(UsageError, match=re.escape(BEAMS)):
        decoding_config(cfg.generate, ["num_beams=4", "do_sample=true", "seed=1"])
    decoding_config(cfg.generate, ["num_beams=4"])  # each alone is fine
    decoding_config(cfg.generate, ["do_sample=true", "num_beams=1"])


def test_beam_sampling_cli(cli, tmp_path, broken, small_data):
    out = tmp_path / "out.jsonl"
    r = cli(
        "generate", broken, "-i", small_data["test"], "-o", out,
        "num_beams=4", "do_sample=true", "seed=1",
    )  # fmt: skip
    one_error(r, BEAMS)
    assert not out.exists()


def test_garbage_weights_fail_to_load(cli, tmp_path, broken, small_data):
    """The fixture really cannot be loaded: the refusals below come before loading."""
    r = cli("generate", broken, "-i", small_data["test"], "-o", tmp_path / "o.jsonl")
    assert r.code != 0
    assert "max_new_tokens" not in r.stderr and "--out" not in r.stderr


def test_positions_checked_before_loading(cli, tmp_path, broken, small_data):
    r = cli(
        "generate", broken, "-i", small_data["test"], "-o", tmp_path / "o.jsonl",
        "max_new_tokens=1000000000",
    )  # fmt: skip
    one_error(r, "generate.max_new_tokens: expected at most", "got 1000000000")
    assert not (tmp_path / "o.jsonl").exists()


def test_limit_from_config_file_matches_model(trained_tiny):
    cfg, model = load_checkpoint(trained_tiny)
    assert config_new_tokens_limit(trained_tiny, cfg) == model.max_new_tokens_limit()


def test_foreign_out_refused_before_loading(cli, tmp_path, broken, small_data):
    out = tmp_path / "notes.jsonl"
    out.write_text("my notes\n")
    r = cli("generate", broken, "-i", small_data["test"], "-o", out)
    one_error(r, "was not written by `personadlg generate`")
    assert out.read_text() == "my notes\n"


def test_unreadable_sidecar_refused_before_loading(cli, tmp_path, broken, small_data):
    out = tmp_path / "gen.jsonl"
    out.write_text("")
    (tmp_path / "gen.jsonl.meta.json").write_text("{not json")
    r = cli("generate", broken, "-i", small_data["test"], "-o", out)
    one_error(r, "not a generate sidecar (unreadable JSON)")


def test_other_settings_refused_before_loading(cli, tmp_path, trained_tiny, broken, small_data):
    out = tmp_path / "gen.jsonl"
    ok = cli("generate", trained_tiny, "-i", small_data["test"], "-o", out, "--limit", "2")
    assert ok.code == 0, ok.stderr
    before = out.read_text()
    r = cli(
        "generate", broken, "-i", small_data["test"], "-o", out, "--limit", "2",
        "do_sample=true", "top_p=0.5",
    )  # fmt: skip
    one_error(r, "holds generations made with other settings", "decoding.top_p: 1.0 -> 0.5")
    assert out.read_text() == before


def test_resume_same_settings_still_works(cli, tmp_path, trained_tiny, small_data):
    out = tmp_path / "gen.jsonl"
    assert (
        cli("generate", trained_tiny, "-i", small_data["test"], "-o", out, "--limit", "2").code == 0
    )
    r = cli("generate", trained_tiny, "-i", small_data["test"], "-o", out, "--limit", "3", "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout[r.stdout.index("{") :])["skipped_done"] == 2


def test_eval_column_on_jsonl_refused(cli, tmp_path):
    gen = write_jsonl(
        tmp_path / "gen.jsonl",
        [
            {
                "id": "a",
                "context": [{"role": "user", "content": "hi"}],
                "reference": "yo",
                "generation": "yo there",
            }
        ],
    )
    r = cli("eval", gen, "--column", "bogus=x", "--metrics", "bleu-1")
    one_error(r, "--column: applies to CSV / TSV / Parquet inputs;", "gen.jsonl is JSONL")
    r = cli("eval", gen, "--column", "generation=x", "--metrics", "bleu-1")
    one_error(r, "--column: applies to CSV / TSV / Parquet inputs;")
    assert cli("eval", gen, "--metrics", "bleu-1").code == 0


def test_eval_column_on_csv_still_works(cli, tmp_path):
    csv = tmp_path / "g.csv"
    csv.write_text("ctx,reply,gen\nhi,yo,yo there\n")
    r = cli(
        "eval", csv, "--column", "context=ctx", "--column", "response=reply",
        "--column", "generation=gen", "--metrics", "bleu-1",
    )  # fmt: skip
    assert r.code == 0, r.stderr


def test_generate_column_on_jsonl_refused(cli, tmp_path, broken, small_data):
    r = cli(
        "generate", broken, "-i", small_data["test"], "-o", tmp_path / "o.jsonl",
        "--column", "context=x",
    )  # fmt: skip
    one_error(r, "--column: applies to CSV / TSV / Parquet inputs;")
