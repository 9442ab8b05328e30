"""Signals, kills and torn files: a stopped run says where it stands and resumes."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from personadlg.training.trainer import train
from tests.conftest import TINY, read_metrics, tiny_recipe, train_command

ROOT = Path(__file__).resolve().parents[2]


def _steps_logged(run: Path) -> int:
    path = run / "metrics.jsonl"
    return path.read_text().count("\n") if path.is_file() else 0


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_training_saves_the_current_step(small_data, tmp_path, sig, code):
    run = tmp_path / "run"
    p = subprocess.Popen(
        train_command(small_data, run, "train.max_steps=100000"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while _steps_logged(run) < 3:
        assert p.poll() is None and time.time() < deadline
        time.sleep(0.1)
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode == code, err
    lines = [ln for ln in err.splitlines() if ln.startswith("interrupted;")]
    assert len(lines) == 1 and "--resume auto" in lines[0], err
    assert "Traceback" not in err
    (ckpt,) = [d for d in run.iterdir() if d.name.startswith("step-")]
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert str(ckpt) in lines[0] and f"step {state['step']} of 100000" in lines[0]
    assert not (run / "final").exists() and not (run / ".lock").exists()
    # --resume auto continues from exactly there
    r = subprocess.run(
        [
            *train_command(small_data, run, f"train.max_steps={state['step'] + 2}"),
            "--resume",
            "auto",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert (
        json.loads((run / "final" / "trainer_state.json").read_text())["step"] == state["step"] + 2
    )


def test_ctrl_c_outside_training_prints_one_line(tmp_path):
    big = tmp_path / "big.jsonl"
    line = json.dumps(
        {
            "id": "x",
            "messages": [
                {"role": "user", "content": "hi " * 50},
                {"role": "assistant", "content": "yo " * 50},
            ],
        }
    )
    with open(big, "w") as f:
        for i in range(200_000):
            f.write(line.replace('"x"', f'"d{i}"', 1) + "\n")
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "personadlg",
            "convert",
            str(big),
            "--out",
            str(tmp_path / "o.jsonl"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130
    assert err.strip().splitlines() == [
        "interrupted; outputs are written atomically, so nothing half-written was left behind"
    ]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["big.jsonl"]


def test_timed_checkpoints_keep_a_killed_run_resumable(small_data, tmp_path):
    out = tmp_path / "run"
    train(tiny_recipe(small_data, out, "train.max_steps=6", "train.save_every_minutes=0.00001"))
    steps = sorted(p.name for p in out.iterdir() if p.name.startswith("step-"))
    assert steps == ["step-000004", "step-000005"]  # one every step, the newest keep_last=2 kept


def test_a_torn_metrics_line_is_repaired_on_resume_and_skipped_by_plot(small_data, tmp_path, cli):
    out = tmp_path / "run"
    train(tiny_recipe(small_data, out, "train.max_steps=4", "train.save_every=2"))
    shutil.rmtree(out / "final")
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "split": "tra')  # a kill in the middle of a write
    r = cli("plot", out)
    assert r.code == 0, r.stderr
    train(tiny_recipe(small_data, out, "train.max_steps=4", "train.save_every=2"), resume="auto")
    records = read_metrics(out)
    assert [m["step"] for m in records if m["split"] == "train"] == [1, 2, 3, 4]


def test_resume_auto_finds_a_complete_old_final(small_data, tmp_path):
    out = tmp_path / "run"
    train(tiny_recipe(small_data, out, "train.max_steps=3"))
    (out / "final").rename(out / ".old-final")  # killed between the two renames of a replace
    result = train(tiny_recipe(small_data, out, "train.max_steps=5"), resume="auto")
    assert result.steps == 5
    assert json.loads((out / "final" / "trainer_state.json").read_text())["step"] == 5


def test_final_is_swapped_in_one_step(tmp_path):
    from personadlg.training.checkpoint import replace_dir

    target, new = tmp_path / "final", tmp_path / ".tmp-final"
    target.mkdir()
    (target / "a").write_text("old")
    new.mkdir()
    (new / "a").write_text("new")
    replace_dir(new, target)
    assert (target / "a").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_resume_with_a_changed_result_field_is_refused_unless_allowed(small_data, tmp_path, cli):
    out = tmp_path / "run"
    train(tiny_recipe(small_data, out, "train.max_steps=2"))
    base = [
        "train",
        "finetune/tiny",
        *TINY,
        f"data.train={small_data['train']}",
        f"data.valid={small_data['valid']}",
        f"train.output_dir={out}",
        "train.max_steps=4",
        "--resume",
        "auto",
    ]
    r = cli(*base, "train.seed=7", "train.lr=1e-3")
    assert r.code == 2
    assert "train.seed: 0 -> 7" in r.stderr and "train.lr: 0.003 -> 0.001" in r.stderr
    assert json.loads((out / "final" / "trainer_state.json").read_text())["step"] == 2
    # max_steps alone only extends the run
    r = cli(*base[:-2], "train.max_steps=3", "--resume", "auto")
    assert r.code == 0, r.stderr
    r = cli(*base, "train.seed=7", "--allow-config-change")
    assert r.code == 0, r.stderr
    history = yaml.safe_load((out / "final" / "config.yaml").read_text())["history"]
    assert history[-1] == {
        "step": 3,
        "changed": {"train.max_steps": {"from": 3, "to": 4}, "train.seed": {"from": 0, "to": 7}},
    }
    assert history[0]["changed"] == {"train.max_steps": {"from": 2, "to": 3}}
