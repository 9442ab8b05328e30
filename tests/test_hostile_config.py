"""Hostile recipes are refused with one clear line (exit 2) before any work starts: YAML alias
bombs, bad per-stage train overrides, and `model.from_config` values no model can be built from."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from personadlg.config import load_recipe, load_yaml_text
from personadlg.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
FINETUNE_TINY = (ROOT / "recipes" / "finetune" / "tiny.yaml").read_text(encoding="utf-8")


def _bomb(indent: str) -> str:
    lines = [f'{indent}a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{indent}{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    return "\n".join(lines) + "\n"


# --- 1. YAML alias bombs --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        FINETUNE_TINY.replace("train:\n", "train:\n  param_lr:\n" + _bomb("    "), 1),
        FINETUNE_TINY + "lineage:\n" + _bomb("  "),
    ],
    ids=["param_lr", "lineage"],
)
def test_alias_bomb_is_refused_quickly(cli, tmp_path: Path, text: str) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(text, encoding="utf-8")
    start = time.monotonic()
    r = cli("validate", path)
    assert time.monotonic() - start < 30
    assert r.code == 2
    assert (
        f"{path}: the YAML expands to more than 100000 values through its aliases "
        "(&anchors / *aliases); write the values out"
    ) in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_recursive_alias_is_refused() -> None:
    with pytest.raises(Exception, match="expands to more than 100000 values"):
        load_yaml_text("a: &x [1, *x]\n")


def test_alias_bomb_in_an_override_is_refused(cli) -> None:
    items = ["&a [" + ",".join(["x"] * 9) + "]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        items.append(f"&{name} [{','.join(['*' + prev] * 9)}]")
    r = cli("validate", "finetune/tiny", f"train.param_lr=[{', '.join(items)}]")
    assert r.code == 2
    assert "expands to more than 100000 values through its aliases" in r.stderr


def test_ordinary_anchors_and_aliases_still_work(cli, tmp_path: Path) -> None:
    text = FINETUNE_TINY.replace("  from_config: {", "  from_config: &arch {", 1)
    text += "lineage:\n  arch: *arch\n  twice: [*arch, *arch]\n"
    path = tmp_path / "alias.yaml"
    path.write_text(text, encoding="utf-8")
    cfg = load_recipe(str(path))
    assert cfg.lineage["twice"] == [cfg.model.from_config] * 2
    assert cli("validate", path).code == 0
    big = "a: &a [" + ",".join(["1"] * 1000) + "]\nb: [" + ",".join(["*a"] * 50) + "]\n"
    assert len(load_yaml_text(big)["b"]) == 50  # 51,000 values: under the bound


# --- 2. per-stage train overrides -----------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("lr=abc", "model.stage_train.joint.lr: expected a number, got 'abc'"),
        ("lr=nan", "model.stage_train.joint.lr: expected a finite number"),
        ("bogus=1", "unknown key 'model.stage_train.joint.bogus'"),
        ("max_steps=-1", "model.stage_train.joint.max_steps must be >= 0, got -1"),
        ("keep_last=0", "model.stage_train.joint.keep_last must be >= 1"),
        ("lr=0", "model.stage_train.joint.lr must be > 0, got 0"),
    ],
)
def test_stage_train_overrides_are_checked_at_load(cli, override: str, expected: str) -> None:
    r = cli("validate", "codebook/tiny", f"model.stage_train.joint.{override}")
    assert r.code == 2
    assert expected in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_stage_train_refused_by_train_before_any_stage(cli, tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = cli("train", "codebook/tiny", f"train.output_dir={out}", "model.stage_train.role.lr=abc")
    assert r.code == 2
    assert "model.stage_train.role.lr: expected a number, got 'abc'" in r.stderr
    assert not out.exists()


def test_good_stage_train_overrides_still_load() -> None:
    cfg = load_recipe("codebook/tiny", ["model.stage_train.joint.lr=1e-4"])
    assert float(cfg.model.stage_train["joint"]["lr"]) == 1e-4


def test_train_range_messages_name_the_value() -> None:
    with pytest.raises(ConfigError, match=r"train.weight_decay must be >= 0, got -1"):
        load_recipe("finetune/tiny", ["train.weight_decay=-1"])


# --- 3. model.from_config -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipe", "override", "expected"),
    [
        (
            "finetune/tiny",
            "model.from_config.n_positions=16",
            "model.from_config.n_positions: expected at least 192 positions",
        ),
        (
            "finetune/tiny",
            "model.from_config.n_embd=130",
            "model.from_config.n_embd: expected a multiple of n_head (4), got 130",
        ),
        (
            "finetune/tiny",
            "model.from_config.n_layer=-1",
            "model.from_config.n_layer: expected a positive integer, got -1",
        ),
        (
            "finetune/tiny",
            "model.from_config.n_head=0",
            "model.from_config.n_head: expected a positive integer, got 0",
        ),
        (
            "codebook/tiny",
            "model.decoder_from_config.n_positions=100",
            "model.decoder_from_config.n_positions: expected at least 196 positions",
        ),
        (
            "classifier/nli-tiny",
            "model.from_config.hidden_size=65",
            "model.from_config.hidden_size: expected a multiple of num_attention_heads (2), got 65",
        ),
    ],
)
def test_from_config_values_are_checked(cli, recipe: str, override: str, expected: str) -> None:
    r = cli("validate", recipe, override)
    assert r.code == 2
    assert expected in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_from_config_refused_by_train_before_work(cli, tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = cli("train", "finetune/tiny", f"train.output_dir={out}", "model.from_config.n_layer=-1")
    assert r.code == 2
    assert "model.from_config.n_layer: expected a positive integer, got -1" in r.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "recipe",
    ["finetune/tiny", "lora/tiny", "codebook/tiny", "codebook/small", "classifier/nli-tiny"],
)
def test_bundled_from_config_recipes_still_validate(cli, recipe: str) -> None:
    assert cli("validate", recipe).code == 0


def test_a_long_document_without_aliases_is_not_refused() -> None:
    text = "values: [" + ",".join(["1"] * 150_000) + "]\n"
    assert len(load_yaml_text(text)["values"]) == 150_000
