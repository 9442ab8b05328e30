"""Two real processes on the CPU (gloo): `accelerate launch` and `torchrun`, against one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY, read_metrics

BIN = Path(sys.executable).parent


def _args(small_data, out, batch_size):
    return [
        "train",
        "finetune/tiny",
        *TINY,
        f"data.train={small_data['train']}",
        f"data.valid={small_data['valid']}",
        f"train.output_dir={out}",
        "train.max_steps=4",
        f"train.batch_size={batch_size}",
        "train.save_every=2",
        "train.eval_every=2",
    ]


def _run(cmd, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def single(tmp_path_factory, small_data):
    tmp = tmp_path_factory.mktemp("single")
    _run([sys.executable, "-m", "personadlg", *_args(small_data, tmp / "run", 4)], tmp)
    return tmp / "run"


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["accelerate", "torchrun"])
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, small_data, single, launcher):
    out = tmp_path / "run"
    if launcher == "accelerate":
        cmd = [
            str(BIN / "accelerate"),
            "launch",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "-m",
            "personadlg",
            *_args(small_data, out, 2),
        ]
    else:
        cmd = [
            str(BIN / "torchrun"),
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "personadlg",
            *_args(small_data, out, 2),
        ]
    _run(cmd, tmp_path)
    state = json.loads((out / "final" / "trainer_state.json").read_text())
    assert state["processes"] == 2 and state["step"] == 4
    # every process saved its random state; only the main process wrote the rest, once
    assert {p.name for p in (out / "final").glob("rng_state_*.pt")} == {
        "rng_state_0.pt",
        "rng_state_1.pt",
    }
    one, two = read_metrics(single), read_metrics(out)
    assert [(m["step"], m["split"]) for m in two] == [
        (m["step"], m["split"]) for m in one
    ]  # each line written once
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=0.02, abs=0.02), (a, b)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("step-")) == ["step-000002"]


@pytest.mark.slow
def test_cvae_trains_in_two_processes(tmp_path, small_data):
    """The cvae under DDP: attribute-homogeneous global batches sliced per process, every parameter
    in the graph (no unused-parameter error), the diagnostics reduced over both processes."""
    from tests.models.test_cvae import TINY_CVAE

    out = tmp_path / "run"
    args = [
        "train",
        "cvae/tiny",
        *TINY_CVAE,
        f"data.train={small_data['train']}",
        f"data.valid={small_data['valid']}",
        f"train.output_dir={out}",
        "train.max_steps=6",
        "train.batch_size=2",
        "train.eval_every=3",
    ]
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "personadlg"]
    _run([*cmd, *args], tmp_path)
    state = json.loads((out / "final" / "trainer_state.json").read_text())
    assert state["processes"] == 2 and state["step"] == 6
    rows = read_metrics(out)
    train_rows = [m for m in rows if m["split"] == "train"]
    valid_rows = [m for m in rows if m["split"] == "valid"]
    assert [m["step"] for m in train_rows] == [1, 2, 3, 4, 5, 6]  # each line written once
    assert all({"rec", "kl", "cls", "gap", "beta"} <= set(m) for m in train_rows)
    assert [m["step"] for m in valid_rows] == [3, 6]
    assert all("active_units" in m and "acc_attitude" in m for m in valid_rows)
    assert (out / "latent_space.png").stat().st_size > 0
    assert (out / "final" / "latent.safetensors").exists()


@pytest.mark.slow
def test_codebook_stages_train_in_two_processes(tmp_path, small_data):
    """The codebook's three stages under DDP: the init stage runs EM on the main process and
    broadcasts the codebook (both processes train the same codes), the stage freezing leaves no
    unused parameter, and the diagnostics are reduced over both processes."""
    from tests.models.test_codebook import TINY_CODEBOOK

    out = tmp_path / "run"
    args = [
        "train",
        "codebook/tiny",
        *TINY_CODEBOOK,
        f"data.train={small_data['train']}",
        f"data.valid={small_data['valid']}",
        f"train.output_dir={out}",
        "train.batch_size=2",
        "model.stage_train={role: {max_steps: 2}, joint: {max_steps: 4}}",
    ]
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "personadlg"]
    _run([*cmd, *args], tmp_path)
    for d, steps in ((out / "stages" / "1-role", 2), (out / "stages" / "2-init", 0), (out, 4)):
        state = json.loads((d / "final" / "trainer_state.json").read_text())
        assert state["processes"] == 2 and state["step"] == steps, d
    assert json.loads((out / "stages" / "2-init" / "init_report.json").read_text())["codes"] == 8
    rows = read_metrics(out)
    assert [m["step"] for m in rows if m["split"] == "train"] == [1, 2, 3, 4]
    valid = [m for m in rows if m["split"] == "valid"]
    assert valid and all("codes_used" in m and "code_acc" in m for m in valid)
