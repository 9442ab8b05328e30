"""Adding a method: a toy method in one folder (tests/toy_method/), copied into a temporary package
and registered with one line, trains, generates, chats and serves — nothing outside its folder
names it. The README's "Adding a method" is this test in prose."""

from __future__ import annotations

import io
import shutil
import sys
import time
from pathlib import Path

import pytest

from personadlg.registry import METHODS
from tests.conftest import read_jsonl

TOY = Path(__file__).parent / "toy_method"


@pytest.fixture
def lastturn(tmp_path, monkeypatch):
    """The toy method as the package `lastturn`, registered for this test only."""
    pkg = tmp_path / "plugins" / "lastturn"
    shutil.copytree(TOY, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.syspath_prepend(str(pkg.parent))
    METHODS.register("lastturn", "lastturn:SPEC")  # the one line
    yield pkg
    METHODS.unregister("lastturn")
    for name in [m for m in sys.modules if m == "lastturn" or m.startswith("lastturn.")]:
        del sys.modules[name]


def _wait_ready(url: str) -> None:
    import httpx2 as httpx

    deadline = time.monotonic() + 120
    while httpx.get(url + "/health", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "server not ready"
        time.sleep(0.05)


def test_a_method_in_one_folder_trains_generates_chats_and_serves(
    lastturn, cli, small_data, tmp_path, monkeypatch
):
    import httpx2 as httpx

    run = tmp_path / "lastturn-run"
    r = cli(
        "train",
        lastturn / "tiny.yaml",
        f"data.train={small_data['train']}",
        f"train.output_dir={run}",
    )
    assert r.code == 0, r.stderr
    final = run / "final"
    assert (final / "model.safetensors").is_file()

    r = cli("ls", "methods", "--json")
    assert r.code == 0 and "lastturn" in r.stdout

    out = tmp_path / "gen.jsonl"
    r = cli("generate", final, "-i", small_data["test"], "-o", out, "--limit", "3")
    assert r.code == 0, r.stderr
    records = read_jsonl(out)
    assert len(records) == 3 and all(isinstance(rec["generation"], str) for rec in records)

    monkeypatch.setattr("sys.stdin", io.StringIO("hello there\n/quit\n"))
    r = cli("chat", final, "max_new_tokens=4")
    assert r.code == 0 and r.stdout.startswith("bot> "), (r.stdout, r.stderr)

    from personadlg.serving.app import create_app
    from personadlg.serving.server import serve_in_thread

    with serve_in_thread(create_app([final])) as server:
        _wait_ready(server.url)
        models = httpx.get(server.url + "/v1/models", timeout=30).json()["data"]
        assert models[0]["personadlg"]["method"] == "lastturn"
        assert models[0]["personadlg"]["description"].startswith("toy:")
        body = {
            "model": "lastturn-run",
            "messages": [{"role": "user", "content": "hi, how are you?"}],
            "max_tokens": 4,
        }
        reply = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)
        assert reply.status_code == 200, reply.text
        assert isinstance(reply.json()["choices"][0]["message"]["content"], str)
        assert reply.json()["personadlg"]["method"] == "lastturn"


def test_nothing_outside_the_folder_names_the_toy_method():
    """The one registration line lives in the test; personadlg's own sources never name it."""
    pkg = Path(__file__).resolve().parents[1] / "personadlg"
    hits = [str(f) for f in pkg.rglob("*.py") if "lastturn" in f.read_text(encoding="utf-8")]
    assert not hits


def test_an_installed_package_adds_its_method_through_an_entry_point(tmp_path):
    """`pip install` of a package declaring `[project.entry-points."personadlg.methods"]` is all
    the CLI needs: here a dist-info with that entry point, beside the package, on PYTHONPATH."""
    import json
    import os
    import subprocess

    site = tmp_path / "site"
    shutil.copytree(TOY, site / "lastturn", ignore=shutil.ignore_patterns("__pycache__"))
    info = site / "lastturn_method-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lastturn-method\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[personadlg.methods]\nlastturn = lastturn:SPEC\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(Path.cwd())])}
    r = subprocess.run(
        [sys.executable, "-m", "personadlg", "ls", "methods", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    methods = {m["name"]: m for m in json.loads(r.stdout)}
    assert methods["lastturn"]["help"].startswith("toy:") and "finetune" in methods
