"""`fit` on one loaded model many times; `model.init_from` with lineage; checkpoints that hold only
what trained."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import yaml
from torch import nn

from personadlg.training.checkpoint import load_checkpoint
from personadlg.training.trainer import train
from tests.conftest import tiny_recipe


def test_fit_runs_many_times_on_one_loaded_model(trained_tiny, small_data, tmp_path):
    from personadlg.training.data import dialogue_examples, encode_examples
    from personadlg.training.distributed import make_accelerator
    from personadlg.training.fit import fit

    cfg, model = load_checkpoint(trained_tiny)
    acc = make_accelerator()
    feats = encode_examples(small_data["train"], cfg, model.encode, dialogue_examples)
    valid = encode_examples(small_data["valid"], cfg, model.encode, dialogue_examples)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    results = []
    for name, steps in (("stage-a", 3), ("stage-b", 2)):
        tc = dataclasses.replace(cfg.train, max_steps=steps, lr=1e-3, eval_every=0, save_every=0)
        run_cfg = dataclasses.replace(cfg, train=tc)
        results.append(
            fit(model, run_cfg, feats, valid, out_dir=tmp_path / name, acc=acc, figures=False)
        )
    a, b = results
    assert (a.steps, b.steps) == (3, 2) and a.final_dir.parent.name == "stage-a"
    metrics_b = [
        json.loads(x) for x in (tmp_path / "stage-b" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [m["step"] for m in metrics_b if m["split"] == "train"] == [1, 2]  # its own schedule
    after = model.module.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # the second fit continued from the first fit's weights
    _, after_a = load_checkpoint(a.final_dir)
    _, after_b = load_checkpoint(b.final_dir)
    sa, sb = after_a.module.state_dict(), after_b.module.state_dict()
    assert any(not torch.equal(sa[k], sb[k]) for k in sa)


def test_init_from_starts_from_another_runs_weights_and_records_the_lineage(
    trained_tiny, small_data, tmp_path
):
    out = tmp_path / "warm"
    result = train(
        tiny_recipe(
            small_data,
            out,
            "train.max_steps=1",
            f"model.init_from={trained_tiny.parent}",
            "train.lr=1e-12",
        )
    )
    _, src = load_checkpoint(trained_tiny)
    _, warm = load_checkpoint(result.final_dir)
    s, w = src.module.state_dict(), warm.module.state_dict()
    assert all(torch.allclose(s[k], w[k], atol=1e-6) for k in s)  # lr ~0: still the source weights
    lineage = yaml.safe_load((out / "final" / "config.yaml").read_text())["lineage"]
    assert lineage["init_from"] == str(trained_tiny) and lineage["weights_sha256"].startswith(
        "sha256:"
    )
    assert (
        lineage["method"] == "finetune" and lineage["missing"] == [] and lineage["copied"] == len(s)
    )
    state = json.loads((out / "final" / "trainer_state.json").read_text())
    assert state["lineage"]["weights_sha256"] == lineage["weights_sha256"]
    # the tokenizer came from the source too (not trained anew)
    assert (out / "tokenizer").exists() is False


def test_init_from_with_mismatched_modules_lists_them(trained_tiny, small_data, tmp_path, cli):
    from tests.models.test_cvae import TINY_CVAE

    args = [
        "train",
        "cvae/tiny",
        *TINY_CVAE,
        f"data.train={small_data['train']}",
        f"train.output_dir={tmp_path / 'c'}",
        "train.max_steps=1",
        f"model.init_from={trained_tiny}",
    ]
    r = cli(*args)
    assert r.code == 2 and "not in the source" in r.stderr and "model.init_strict=false" in r.stderr
    r = cli(
        *args,
        "model.init_strict=false",
        "model.decoder_from_config={model_type: gpt2, n_layer: 2, n_head: 2, n_embd: 32, n_positions: 128}",
    )
    assert r.code in (0, 2), r.stderr  # matching names copied, or a clear shape error
    if r.code == 2:
        assert "other shapes" in r.stderr


class _Head(nn.Module):
    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.head = nn.Linear(4, 2)
        for p in self.base.parameters():
            p.requires_grad_(False)


def test_a_partial_checkpoint_holds_only_what_trained_and_checks_its_base(tiny_gpt2_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from personadlg.models.partial import base_identity, load_trainable, save_trainable

    base_dir = tmp_path / "base"
    shutil.copytree(tiny_gpt2_dir, base_dir)
    torch.manual_seed(0)
    model = _Head(nn.Linear(4, 4))
    save_trainable(model, tmp_path / "ck", base=base_identity(base_dir))
    saved = load_file(str(tmp_path / "ck" / "trainable.safetensors"))
    assert set(saved) == {"head.weight", "head.bias"}  # the frozen base is not stored
    fresh = _Head(nn.Linear(4, 4))
    load_trainable(fresh, tmp_path / "ck", base=base_identity(base_dir))
    assert torch.equal(fresh.head.weight, model.head.weight)
    # another base (changed weights) is refused
    w = load_file(str(base_dir / "model.safetensors"))
    k = next(iter(w))
    w[k] = w[k] + 1
    save_file(w, str(base_dir / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(Exception, match="has other weights"):
        load_trainable(_Head(nn.Linear(4, 4)), tmp_path / "ck", base=base_identity(base_dir))


def test_param_lr_gives_matching_parameters_their_own_learning_rate(small_data, tmp_path, cli):
    """`train.param_lr`: the first matching glob sets a parameter's peak learning rate (a method's
    new parts can learn faster than its pretrained body); decay stays off biases and norms; a glob
    that matches nothing is a usage error naming the parameter prefixes."""
    from personadlg.training.optim import param_groups

    module = nn.ModuleDict({"body": nn.Linear(4, 4), "heads": nn.Sequential(nn.Linear(4, 2))})
    groups = param_groups(module, 0.1, 1e-4, {"heads.*": 1e-2})
    by_lr = {(g["lr"], g["weight_decay"]): len(g["params"]) for g in groups}
    assert by_lr == {(1e-4, 0.1): 1, (1e-4, 0.0): 1, (1e-2, 0.1): 1, (1e-2, 0.0): 1}
    with pytest.raises(Exception, match="matches no parameter.*body, heads"):
        param_groups(module, 0.0, 1e-4, {"head.*": 1e-2})
    # a frozen part may be named (a stage that freezes it): no error, no group
    module["heads"].requires_grad_(False)
    assert {g["lr"] for g in param_groups(module, 0.0, 1e-4, {"heads.*": 1e-2})} == {1e-4}
    # end to end: a recipe's globs reach the optimizer; a typo exits 2 before training
    result = train(
        tiny_recipe(
            small_data,
            tmp_path / "run",
            "train.max_steps=2",
            "train.param_lr={'lm.transformer.h.*': 0.01}",
        )
    )
    assert result.steps == 2
    r = cli(
        "train",
        "finetune/tiny",
        f"data.train={small_data['train']}",
        f"train.output_dir={tmp_path / 'typo'}",
        "train.param_lr={'lm.head.*': 0.5}",
        "train.max_steps=1",
    )
    assert r.code == 2 and "train.param_lr" in r.stderr and "Traceback" not in r.stderr
