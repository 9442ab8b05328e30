"""Outputs never overwrite inputs or each other; two runs never share an output; failed writes leave nothing."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DEMO, dialogue, read_jsonl, train_command, write_jsonl

ROOT = Path(__file__).resolve().parents[2]


def _no_temp_files(d: Path) -> None:
    left = [p.name for p in d.rglob("*") if ".tmp-" in p.name or p.name.startswith(".tmp")]
    assert not left, left


@pytest.fixture
def data(tmp_path: Path) -> Path:
    lines = DEMO.read_text(encoding="utf-8").splitlines()[:6]
    p = tmp_path / "in.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


@pytest.mark.parametrize(
    "extra",
    [
        ["--out", "s.jsonl", "--rejects", "s.jsonl"],
        ["--out", "s.jsonl", "--report", "s.jsonl"],
        ["--out", "s.jsonl", "--rejects", "r.jsonl", "--report", "r.jsonl"],
        ["--out", "in.jsonl"],
        ["--out", "s.jsonl", "--rejects", "in.jsonl"],
        ["--out", "./sub/../s.jsonl", "--rejects", "s.jsonl"],
        ["--out", "hard.jsonl"],  # a hard link to the input
    ],
)
def test_clean_refuses_outputs_that_are_one_file(tmp_path, data, cli, monkeypatch, extra):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    os.link(data, tmp_path / "hard.jsonl")
    before = data.read_bytes()
    r = cli("clean", "in.jsonl", *extra)
    assert r.code == 2, r.stderr
    assert "same file" in r.stderr or "is also the input" in r.stderr
    assert data.read_bytes() == before
    assert not (tmp_path / "s.jsonl").exists()


def test_convert_split_and_eval_refuse_to_write_their_input(tmp_path, data, cli):
    before = data.read_bytes()
    assert cli("convert", data, "--out", data).code == 2
    train = tmp_path / "train.jsonl"
    train.write_bytes(before)
    r = cli("split", train, "--out-dir", tmp_path, "--valid", "0.2", "--test", "0.2")
    assert r.code == 2 and "is also the input" in r.stderr
    assert train.read_bytes() == before
    gen = write_jsonl(
        tmp_path / "gen.jsonl",
        [{"id": "a#1", "dialogue_id": "a", "context": [], "reference": "x y", "generation": "x"}],
    )
    assert cli("eval", gen, "--out", gen).code == 2
    assert cli("eval", gen, "--per-example", gen).code == 2
    assert (
        cli("eval", gen, "--out", tmp_path / "r.json", "--per-example", tmp_path / "r.json").code
        == 2
    )
    assert data.read_bytes() == before and gen.stat().st_size > 0


def test_generate_never_appends_to_its_input(trained_tiny, tmp_path, data, cli):
    before = data.read_bytes()
    r = cli("generate", trained_tiny, "-i", data, "-o", data)
    assert r.code == 2 and "is also the input" in r.stderr
    assert data.read_bytes() == before


def test_generate_resumes_only_its_own_output_with_the_same_settings(
    trained_tiny, tmp_path, data, cli
):
    out = tmp_path / "g.jsonl"
    assert cli("generate", trained_tiny, "-i", data, "-o", out, "--limit", "2").code == 0
    sidecar = json.loads((tmp_path / "g.jsonl.meta.json").read_text())
    assert (
        sidecar["checkpoint_sha256"].startswith("sha256:") and sidecar["decoding"]["max_new_tokens"]
    )
    first = out.read_text()
    # the same settings continue where it stopped
    r = cli("generate", trained_tiny, "-i", data, "-o", out, "--limit", "4")
    assert r.code == 0 and out.read_text().startswith(first)
    n = len(read_jsonl(out))
    # other decoding settings are refused, with the differences listed
    r = cli("generate", trained_tiny, "-i", data, "-o", out, "do_sample=true", "top_p=0.5")
    assert r.code == 2
    assert (
        "decoding.do_sample: False -> True" in r.stderr and "decoding.top_p: 1.0 -> 0.5" in r.stderr
    )
    assert len(read_jsonl(out)) == n
    # another checkpoint too
    other = tmp_path / "other"
    import shutil

    shutil.copytree(trained_tiny, other)
    from safetensors.torch import load_file, save_file

    w = load_file(str(other / "model.safetensors"))
    k = next(iter(w))
    w[k] = w[k] + 1
    save_file(w, str(other / "model.safetensors"), metadata={"format": "pt"})
    r = cli("generate", other, "-i", data, "-o", out)
    assert r.code == 2 and "checkpoint_sha256" in r.stderr
    # --overwrite starts afresh
    r = cli("generate", other, "-i", data, "-o", out, "--overwrite", "--limit", "1")
    assert r.code == 0 and len(read_jsonl(out)) == 1
    # a file generate did not write is never appended to
    foreign = write_jsonl(tmp_path / "foreign.jsonl", [{"id": "x", "generation": "hi"}])
    r = cli("generate", trained_tiny, "-i", data, "-o", foreign)
    assert r.code == 2 and "was not written by `personadlg generate`" in r.stderr
    assert len(read_jsonl(foreign)) == 1


def _holder(lock_file: Path, target: Path) -> subprocess.Popen:
    code = (
        "import sys, time\n"
        "from personadlg.data.lock import exclusive_lock\n"
        f"with exclusive_lock({str(lock_file)!r}, target={str(target)!r}, what='test'):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(60)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert p.stdout is not None and p.stdout.readline().strip() == "locked"
    return p


def test_two_generates_on_one_output_the_second_is_refused(trained_tiny, tmp_path, data, cli):
    out = tmp_path / "g.jsonl"
    holder = _holder(tmp_path / ".g.jsonl.lock", out)
    try:
        r = cli("generate", trained_tiny, "-i", data, "-o", out)
        assert r.code == 2 and f"pid {holder.pid}" in r.stderr
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    # the OS released the lock of the killed holder: the next run goes ahead
    assert cli("generate", trained_tiny, "-i", data, "-o", out, "--limit", "1").code == 0
    assert not (tmp_path / ".g.jsonl.lock").exists()


def test_two_trains_in_one_output_dir_the_second_is_refused(small_data, tmp_path):
    run = tmp_path / "run"
    args = train_command(small_data, run, "train.max_steps=100000")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.time() + 120
        while not (run / "metrics.jsonl").is_file() or not (run / "metrics.jsonl").read_text():
            assert first.poll() is None and time.time() < deadline, (
                first.stderr.read() if first.stderr else ""
            )
            time.sleep(0.2)
        second = subprocess.run(
            args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert second.returncode == 2, second.stderr
        assert f"pid {first.pid}" in second.stderr and "in use by another `train`" in second.stderr
    finally:
        first.terminate()
        first.communicate(timeout=120)


def test_a_failed_write_leaves_no_temporary_file(tmp_path, data, cli, monkeypatch):
    import personadlg.data.jsonl as jsonl

    # the output is a directory
    (tmp_path / "dir").mkdir()
    r = cli("convert", data, "--out", tmp_path / "dir")
    assert r.code == 2 and "is a directory" in r.stderr
    gen = write_jsonl(
        tmp_path / "gen.jsonl",
        [{"id": "a#1", "dialogue_id": "a", "context": [], "reference": "x y", "generation": "x"}],
    )
    r = cli("eval", gen, "--per-example", tmp_path / "dir")
    assert r.code == 2 and "is a directory" in r.stderr
    # the disk is full: fsync fails (convert), or a write does (split)
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(jsonl.os, "fsync", full)
    r = cli("convert", data, "--out", tmp_path / "c.jsonl")
    assert r.code == 1 and "No space left on device" in r.stderr and "Traceback" not in r.stderr
    monkeypatch.setattr(jsonl.os, "fsync", real_fsync)
    real_open = open

    class Full:
        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, text):
            self.n += len(text)
            if self.n > 2000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(text)

        def __getattr__(self, name):
            return getattr(self.f, name)

    def opener(path, mode="r", *a, **k):
        f = real_open(path, mode, *a, **k)
        return Full(f) if "w" in mode else f

    monkeypatch.setattr(jsonl, "open", opener, raising=False)
    r = cli("split", data, "--out-dir", tmp_path / "parts", "--valid", "0.2", "--test", "0.2")
    assert r.code == 1 and "No space left on device" in r.stderr
    monkeypatch.undo()
    assert not (tmp_path / "c.jsonl").exists() and not (tmp_path / "parts" / "train.jsonl").exists()
    _no_temp_files(tmp_path)


def test_a_real_full_disk_leaves_no_temporary_file(tmp_path, cli):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True
        ).returncode
    ):
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        big = write_jsonl(
            tmp_path / "big.jsonl",
            [dialogue(f"d{i}", "hello " * 40, "hi " * 40) for i in range(200)],
        )
        for command in (
            ["convert", big, "--out", mnt / "c.jsonl"],
            ["split", big, "--out-dir", mnt, "--valid", "0.1", "--test", "0.1"],
            ["clean", big, "--out", mnt / "k.jsonl", "--disable", "near_dup,exact_dup"],
        ):
            r = cli(*command)
            assert r.code == 1 and "No space left on device" in r.stderr, r.stderr
            assert sorted(p.name for p in mnt.iterdir()) == [], command
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
