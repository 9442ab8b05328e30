"""A run directory is never overwritten behind the user's back, and damaged checkpoints are clear
errors: a fresh run (or `--resume auto`) in a directory whose checkpoints are incomplete is
refused; `train.output_dir` that is a file is a usage error; a truncated weights file or a pickle
in place of the optimizer state is exit 2 naming the file (and the pickle never runs)."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
from pathlib import Path

import pytest

from tests.conftest import TINY


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def run_copy(trained_tiny: Path, tmp_path: Path) -> Path:
    """A copy of the tiny finetune run (its final/ and config)."""
    run = tmp_path / "run"
    shutil.copytree(trained_tiny.parent, run, ignore=shutil.ignore_patterns(".lock"))
    return run


def train_args(small_data: dict[str, Path], run: Path, *extra: str) -> list[str]:
    return [
        "train",
        "finetune/tiny",
        *TINY,
        f"data.train={small_data['train']}",
        f"data.valid={small_data['valid']}",
        f"train.output_dir={run}",
        *extra,
    ]


@pytest.mark.parametrize("resume", [[], ["--resume", "auto"]], ids=["fresh", "--resume auto"])
def test_a_run_with_incomplete_checkpoints_is_not_overwritten(run_copy, small_data, cli, resume):
    (run_copy / "final" / "trainer_state.json").unlink()
    weights = digest(run_copy / "final" / "model.safetensors")
    metrics = (run_copy / "metrics.jsonl").read_text()
    r = cli(*train_args(small_data, run_copy, "train.max_steps=3"), *resume)
    assert r.code == 2 and "Traceback" not in r.stderr, r.stderr
    assert "final" in r.stderr and "no trainer_state.json" in r.stderr
    assert digest(run_copy / "final" / "model.safetensors") == weights
    assert (run_copy / "metrics.jsonl").read_text() == metrics


@pytest.mark.parametrize("where", ["afile", "afile/sub"])
def test_an_output_dir_that_is_a_file_is_a_usage_error(tmp_path, small_data, cli, where):
    (tmp_path / "afile").write_text("mine\n")
    r = cli(*train_args(small_data, tmp_path / where, "train.max_steps=2"))
    assert r.code == 2 and r.stderr.startswith("error: train.output_dir: expected a directory")
    assert (tmp_path / "afile").read_text() == "mine\n"


def test_truncated_weights_are_a_clear_error(run_copy, small_data, cli, tmp_path):
    weights = run_copy / "final" / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(1000)
    r = cli("generate", run_copy / "final", "-i", small_data["test"], "-o", tmp_path / "g.jsonl")
    assert r.code == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"{run_copy / 'final'}: cannot load the finetune model: SafetensorError" in r.stderr
    assert not (tmp_path / "g.jsonl").exists()


class Payload:
    def __reduce__(self):  # what a tampered optimizer.pt would run when unpickled
        return (os.mkdir, (str(Path(os.environ["PDLG_PWNED_DIR"]) / "pwned"),))


def test_a_pickle_in_the_optimizer_state_is_refused_and_never_runs(
    run_copy, small_data, cli, tmp_path, monkeypatch
):
    monkeypatch.setenv("PDLG_PWNED_DIR", str(tmp_path))
    (run_copy / "final" / "optimizer.pt").write_bytes(pickle.dumps(Payload()))
    r = cli(*train_args(small_data, run_copy, "train.max_steps=40"), "--resume", "auto")
    assert r.code == 2 and "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {run_copy / 'final' / 'optimizer.pt'}: holds objects other")
    assert "weights_only" not in r.stderr  # torch's advice to unpickle it is not passed on
    assert not (tmp_path / "pwned").exists()
