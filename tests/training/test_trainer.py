"""The trainer with the finetune method: steps change weights, resume reproduces, checkpoints, logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from personadlg.training import checkpoint as ckpt
from personadlg.training.fit_state import Progress, early_stop
from personadlg.training.trainer import train
from tests.conftest import read_metrics, tiny_recipe


class Killed(Exception):
    pass


def weights(d):
    return load_file(d / "model.safetensors")


def test_every_parameter_changes_after_one_step(tmp_path, small_data):
    from personadlg.models.base import BuildContext
    from personadlg.registry import METHODS
    from personadlg.training.data import iter_examples

    cfg = tiny_recipe(small_data, tmp_path / "run", "train.max_steps=1")
    result = train(cfg)
    ctx = BuildContext(
        train_examples=lambda: iter_examples(small_data["train"], cfg.data),
        work_dir=tmp_path / "again",
    )
    fresh = METHODS.get("finetune").build(cfg, ctx)  # same seed → the same initial weights
    before = {k: v.detach().clone() for k, v in fresh.lm.state_dict().items()}
    after = weights(result.final_dir)
    trained = [k for k, p in fresh.lm.named_parameters() if p.requires_grad]
    unchanged = [k for k in trained if k in after and torch.equal(before[k], after[k])]
    assert trained and not unchanged, f"parameters that did not move: {unchanged}"


def test_resume_reproduces_the_uninterrupted_run(tmp_path, small_data):
    extra = ("train.max_steps=8", "train.grad_accum=2", "train.save_every=4", "train.eval_every=4")
    full = train(tiny_recipe(small_data, tmp_path / "full", *extra))

    def kill_after_first_checkpoint(kind, payload):
        if kind == "save" and payload["step"] == 4:
            raise Killed

    with pytest.raises(Killed):
        train(
            tiny_recipe(small_data, tmp_path / "split", *extra),
            on_event=kill_after_first_checkpoint,
        )
    assert not (tmp_path / "split" / "final").exists()
    resumed = train(tiny_recipe(small_data, tmp_path / "split", *extra), resume="auto")
    assert resumed.steps == 8
    a, b = weights(full.final_dir), weights(resumed.final_dir)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    # the logs agree too, and the resumed log has each step once
    ma, mb = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "split")
    assert [m["step"] for m in ma] == [m["step"] for m in mb]
    for x, y in zip(ma, mb):
        assert x.get("loss") == pytest.approx(y.get("loss"), abs=1e-6)


def test_checkpoint_directories_describe_themselves(tmp_path, small_data):
    out = tmp_path / "run"
    train(
        tiny_recipe(small_data, out, "train.max_steps=6", "train.save_every=2", "train.keep_last=1")
    )
    names = sorted(
        p.name for p in out.iterdir()
    )  # step-000002 was pruned (keep_last 1); step 6 is final/
    assert names == [
        "config.yaml",
        "final",
        "loss.png",
        "metrics.jsonl",
        "step-000004",
        "tokenizer",
    ]
    expected = {
        "config.yaml",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "trainer_state.json",
        "optimizer.pt",
        "scheduler.pt",
        "rng_state_0.pt",
        "rng_state_0.json",
        "fingerprint.json",
    }
    assert {p.name for p in (out / "step-000004").iterdir()} == expected
    assert {p.name for p in (out / "final").iterdir()} == expected | {
        "eval_results.json"
    }  # the final validation
    assert json.loads((out / "final" / "eval_results.json").read_text())["step"] == 6
    state = json.loads((out / "final" / "trainer_state.json").read_text())
    assert state["step"] == 6 and state["total_steps"] == 6 and state["seed"] == 0
    assert ckpt.resolve_resume(out, "auto") == out / "final"
    cfg, model = ckpt.load_checkpoint(out / "step-000004")  # needs nothing but the directory
    assert cfg.method == "finetune" and model.tokenizer is not None
    assert not list(out.glob(".tmp-*")) and not list(out.glob(".old-*"))


def test_metrics_and_plot(tmp_path, small_data, cli):
    out = tmp_path / "run"
    train(
        tiny_recipe(small_data, out, "train.max_steps=4", "train.eval_every=2", "train.log_every=2")
    )
    metrics = read_metrics(out)
    train_lines = [m for m in metrics if m["split"] == "train"]
    valid_lines = [m for m in metrics if m["split"] == "valid"]
    assert [m["step"] for m in train_lines] == [2, 4] and [m["step"] for m in valid_lines] == [2, 4]
    for m in train_lines:
        assert {"loss", "lr", "tokens_per_s", "grad_norm", "epoch"} <= m.keys() and m[
            "tokens_per_s"
        ] > 0
    assert valid_lines[-1]["ppl"] == pytest.approx(2.718281828 ** valid_lines[-1]["loss"], rel=1e-6)
    png = out / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = cli("plot", out, "--out", tmp_path / "again.png")
    assert r.code == 0 and (tmp_path / "again.png").stat().st_size > 1000


def test_loss_goes_down_when_overfitting_a_few_examples(tmp_path, small_data):
    result = train(
        tiny_recipe(
            small_data,
            tmp_path / "run",
            "train.max_steps=60",
            "train.lr=1e-2",
            "model.from_config.n_embd=64",
            "data.valid=null",
        )
    )
    losses = [m["loss"] for m in read_metrics(tmp_path / "run")]
    assert losses[-1] < losses[0] - 1.0
    assert result.last_valid == {}


def test_early_stopping_rule():
    progress = Progress()
    assert [early_stop(progress, {"loss": x}, 2) for x in (3.0, 2.0, 2.5, 2.1, 1.0, 1.5, 1.6)] == [
        False,
        False,
        False,
        True,
        False,
        False,
        True,
    ]


def test_early_stopping_stops_training(tmp_path, small_data):
    result = train(
        tiny_recipe(
            small_data,
            tmp_path / "run",
            "train.max_steps=40",
            "train.eval_every=1",
            "train.early_stopping_patience=1",
            "train.lr=5.0",
        )
    )
    assert result.stopped_early and result.steps < 40
    assert (result.final_dir / "model.safetensors").exists()


def test_an_earlier_run_is_not_overwritten_silently(tmp_path, small_data):
    from personadlg.errors import UsageError

    cfg = tiny_recipe(small_data, tmp_path / "run", "train.max_steps=2")
    train(cfg)
    with pytest.raises(
        UsageError, match="already holds checkpoints of an earlier run; pass --resume auto"
    ):
        train(cfg)
    again = train(
        tiny_recipe(small_data, tmp_path / "run", "train.max_steps=4"), resume="auto"
    )  # continue to more steps
    assert again.steps == 4


def test_too_little_data_is_a_clear_error(tmp_path, small_data):
    from personadlg.errors import UsageError

    with pytest.raises(UsageError, match="fewer than one optimizer step needs"):
        train(tiny_recipe(small_data, tmp_path / "run", "train.batch_size=512"))


def test_seq2seq_backbone_from_config(tmp_path, small_data):
    from personadlg.generation.generate import generate_file

    result = train(
        tiny_recipe(
            small_data,
            tmp_path / "run",
            "train.max_steps=3",
            "model.from_config={model_type: t5, d_model: 32, d_kv: 16, d_ff: 64, num_layers: 2, num_heads: 2}",
        )
    )
    summary = generate_file(
        result.final_dir, small_data["test"], tmp_path / "gen.jsonl", turns="last"
    )
    assert summary["generated"] == 4


def test_pretrained_backbone_by_directory(tmp_path, small_data, tiny_gpt2_dir):
    cfg = tiny_recipe(
        small_data,
        tmp_path / "run",
        "train.max_steps=2",
        "model.from_config={}",
        f"model.backbone={tiny_gpt2_dir}",
        "model.tokenizer.train=false",
    )
    result = train(cfg)
    before, after = load_file(tiny_gpt2_dir / "model.safetensors"), weights(result.final_dir)
    assert not torch.equal(
        before["transformer.h.0.attn.c_attn.weight"], after["transformer.h.0.attn.c_attn.weight"]
    )


def test_cli_train_with_debug_tokens(cli, tmp_path, small_data):
    from tests.conftest import TINY

    r = cli(
        "train",
        "finetune/tiny",
        *TINY,
        f"data.train={small_data['train']}",
        "data.valid=null",
        f"train.output_dir={tmp_path / 'run'}",
        "train.max_steps=2",
        "--debug-tokens",
        "1",
    )
    assert r.code == 0, r.stderr
    assert "--debug-tokens" in r.stdout and "trained" in r.stdout and "training done" in r.stdout
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()
    r = cli(
        "train",
        "finetune/tiny",
        f"data.train={tmp_path / 'missing.jsonl'}",
        f"train.output_dir={tmp_path / 'x'}",
    )
    assert r.code == 2 and "no such file" in r.stderr


def test_features_keep_their_kind_and_nested_lists_pad_in_both_dimensions():
    import numpy as np
    import torch

    from personadlg.models.collate import feature_array, pad_nested, pad_sequences

    ids, weight, flag = feature_array([5, 7]), feature_array([0.5, 0.25]), feature_array([True])
    assert ids.dtype == np.int32 and weight.dtype == np.float32 and flag.dtype == np.bool_
    assert weight.tolist() == [0.5, 0.25]  # not truncated to 0
    assert feature_array([2**40]).dtype == np.int64
    segments = feature_array([[1, 2, 3], [4], [5, 6]])  # M persona segments, ragged
    assert isinstance(segments, list) and [s.tolist() for s in segments] == [[1, 2, 3], [4], [5, 6]]
    values, lengths = pad_nested([segments, feature_array([[9, 9]])], 0)
    assert values.shape == (2, 3, 3) and lengths.tolist() == [[3, 1, 2], [2, 0, 0]]
    assert values[0, 1].tolist() == [4, 0, 0] and values[1, 0].tolist() == [9, 9, 0]
    w, mask = pad_sequences([weight, feature_array([1.5])], 0.0, dtype=torch.float32)
    assert w.tolist() == [[0.5, 0.25], [1.5, 0.0]] and mask.tolist() == [[1, 1], [1, 0]]


def test_encode_examples_keeps_float_and_ragged_features(small_data):
    import numpy as np

    from personadlg.training.data import encode_examples

    cfg = tiny_recipe(small_data, Path("unused"))

    def encode(ex):
        return {"score": [len(ex.reference) / 100.0], "segments": [[1, 2], [3]], "ids": [1, 2, 3]}

    feats = encode_examples(small_data["valid"], cfg, encode)
    assert feats[0]["score"].dtype == np.float32 and feats[0]["score"][0] > 0
    assert [s.tolist() for s in feats[0]["segments"]] == [[1, 2], [3]]
