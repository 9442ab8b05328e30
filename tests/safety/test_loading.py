"""Loading runs no code from a checkpoint and unpickles nothing unless the user asks on the command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from personadlg.models.loading import load_policy, pretrained_kwargs
from tests.conftest import dialogue, write_jsonl


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    return write_jsonl(
        tmp_path / "in.jsonl", [dialogue("a", "hello there", "hi", "how are you?", "fine")]
    )


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _with_remote_code(ckpt: Path, marker: Path) -> Path:
    """A checkpoint whose config.json asks for custom code that would leave MARKER if it ran."""
    conf = json.loads((ckpt / "config.json").read_text())
    conf["auto_map"] = {
        "AutoConfig": "evil_model.EvilConfig",
        "AutoModelForCausalLM": "evil_model.EvilLM",
    }
    (ckpt / "config.json").write_text(json.dumps(conf))
    (ckpt / "evil_model.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import GPT2Config, GPT2LMHeadModel\n"
        "class EvilConfig(GPT2Config):\n    pass\n"
        "class EvilLM(GPT2LMHeadModel):\n    config_class = EvilConfig\n"
    )
    cfg = yaml.safe_load((ckpt / "config.yaml").read_text())
    cfg["model"]["trust_remote_code"] = True  # a file must not be able to turn it on
    (ckpt / "config.yaml").write_text(yaml.safe_dump(cfg))
    return ckpt


def test_remote_code_in_a_checkpoint_never_runs_without_the_flag(
    trained_tiny, tmp_path, inputs, cli
):
    marker = tmp_path / "MARKER"
    ckpt = _with_remote_code(_copy(trained_tiny, tmp_path / "ckpt"), marker)
    for command in (
        ["generate", ckpt, "-i", inputs, "-o", tmp_path / "g.jsonl"],
        ["chat", ckpt],
    ):
        r = cli(*command)
        assert r.code == 2, r.stderr
        assert "evil_model.py" in r.stderr and "--trust-remote-code" in r.stderr
        assert "Traceback" not in r.stderr
        assert not marker.exists()
    assert not (tmp_path / "g.jsonl").exists()


def test_trust_remote_code_names_the_files_before_they_run(trained_tiny, tmp_path, inputs, cli):
    marker = tmp_path / "MARKER"
    ckpt = _with_remote_code(_copy(trained_tiny, tmp_path / "ckpt"), marker)
    r = cli("generate", ckpt, "-i", inputs, "-o", tmp_path / "g.jsonl", "--trust-remote-code")
    assert "about to run code from" in r.stderr and str(ckpt / "evil_model.py") in r.stderr
    assert marker.exists()  # the user asked for it


def test_a_recipe_cannot_enable_remote_code(small_data, tmp_path, cli):
    from tests.conftest import TINY

    r = cli(
        "train",
        "finetune/tiny",
        *TINY,
        f"data.train={small_data['train']}",
        f"train.output_dir={tmp_path / 'run'}",
        "train.max_steps=1",
        "model.trust_remote_code=true",
    )
    assert r.code == 2 and "--trust-remote-code" in r.stderr
    assert not (tmp_path / "run" / "final").exists()


def _pickled(ckpt: Path) -> Path:
    import torch
    from safetensors.torch import load_file

    state = load_file(str(ckpt / "model.safetensors"))
    (ckpt / "model.safetensors").unlink()
    torch.save(state, ckpt / "pytorch_model.bin")
    (ckpt / "fingerprint.json").unlink()
    return ckpt


def test_pickled_weights_are_refused_by_name_unless_allowed(trained_tiny, tmp_path, inputs, cli):
    ckpt = _pickled(_copy(trained_tiny, tmp_path / "ckpt"))
    r = cli("generate", ckpt, "-i", inputs, "-o", tmp_path / "g.jsonl")
    assert r.code == 2 and "pytorch_model.bin" in r.stderr and "--allow-pickle" in r.stderr
    assert not (tmp_path / "g.jsonl").exists()
    r = cli("generate", ckpt, "-i", inputs, "-o", tmp_path / "g.jsonl", "--allow-pickle")
    assert r.code == 0, r.stderr
    assert (tmp_path / "g.jsonl").read_text().count("\n") == 2


def test_hub_models_load_with_safetensors_only_unless_allowed():
    assert pretrained_kwargs("gpt2") == {"trust_remote_code": False, "use_safetensors": True}
    with load_policy(allow_pickle=True):
        assert pretrained_kwargs("gpt2") == {"trust_remote_code": False}
    with load_policy(trust_remote_code=True):
        assert pretrained_kwargs("gpt2")["trust_remote_code"] is True
    assert pretrained_kwargs("gpt2", weights=False) == {"trust_remote_code": False}


def test_a_run_directory_is_not_a_checkpoint(trained_tiny, tmp_path, inputs, cli):
    run = trained_tiny.parent
    for command in (["generate", run, "-i", inputs, "-o", tmp_path / "g.jsonl"], ["chat", run]):
        r = cli(*command)
        assert r.code == 2
        assert "this is a run directory" in r.stderr and f"use {run / 'final'}" in r.stderr
