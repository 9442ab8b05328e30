from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from personadlg.config import (
    DataConfig,
    RunConfig,
    TrainConfig,
    apply_overrides,
    build_config,
    bundled_recipes,
    load_recipe,
    recipe_summary,
    recipes_dir,
)
from personadlg.errors import ConfigError


@dataclass
class Inner:
    size: int = 4
    names: list[str] = field(default_factory=list)


@dataclass
class Outer:
    lr: float = 1e-3
    steps: int = 10
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    path: str | None = None
    inner: Inner = field(default_factory=Inner)
    table: dict[str, list[str]] = field(default_factory=dict)


@pytest.mark.parametrize(
    "data,attr,expected",
    [
        ({"lr": "1e-3"}, "lr", 0.001),  # PyYAML reads 1e-3 as a string
        ({"lr": 2}, "lr", 2.0),
        ({"steps": "20"}, "steps", 20),
        ({"steps": 3.0}, "steps", 3),
        ({"steps": "1e3"}, "steps", 1000),
        ({"flag": "yes"}, "flag", True),
        ({"flag": "off"}, "flag", False),
        ({"flag": 1}, "flag", True),
        ({"mode": "b"}, "mode", "b"),
        ({"path": None}, "path", None),
        ({"path": 12}, "path", "12"),
    ],
)
def test_values_are_coerced_to_the_field_type(data, attr, expected):
    cfg = build_config(Outer, data)
    value = getattr(cfg, attr)
    assert value == expected and type(value) is type(expected)


def test_nested_sections_and_lists():
    cfg = build_config(Outer, {"inner": {"size": "8", "names": "a, b"}, "table": {"x": ["p", "q"]}})
    assert cfg.inner == Inner(size=8, names=["a", "b"])
    assert cfg.table == {"x": ["p", "q"]}


def test_all_problems_reported_at_once_with_suggestions():
    with pytest.raises(ConfigError) as err:
        build_config(Outer, {"lrr": 1, "steps": "many", "mode": "c", "inner": {"sise": 3}})
    msg = str(err.value)
    assert "4 problems" in msg
    assert "unknown key 'lrr' (did you mean 'lr'?)" in msg
    assert "valid keys: lr, steps, flag, mode, path, inner, table" in msg
    assert "steps: expected an integer, got 'many'" in msg
    assert "mode: expected one of 'a', 'b', got 'c'" in msg
    assert "unknown key 'inner.sise' (did you mean 'size'?)" in msg


def test_overrides_use_dotted_keys_and_yaml_values():
    data = apply_overrides(
        {"train": {"lr": 1}},
        [
            "train.lr=3e-5",
            "train.seed=7",
            "model.tokenizer.train=true",
            "data.attributes={a: [x, y]}",
        ],
    )
    assert data == {
        "train": {"lr": "3e-5", "seed": 7},
        "model": {"tokenizer": {"train": True}},
        "data": {"attributes": {"a": ["x", "y"]}},
    }
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["train.lr"])
    with pytest.raises(ConfigError, match="is not a section"):
        apply_overrides({"train": 3}, ["train.lr=1"])


def test_every_bundled_recipe_loads_and_documents_itself():
    names = bundled_recipes()
    assert {"finetune/tiny", "finetune/gpt2", "finetune/dialogpt"} <= set(names)
    for name in names:
        path = recipes_dir() / f"{name}.yaml"
        lines = path.read_text().splitlines()
        assert lines[0].startswith("# ") and recipe_summary(path), (
            f"{name}: first line must say what it reproduces"
        )
        assert any("personadlg " in ln for ln in lines if ln.startswith("#")), (
            f"{name}: header must give the command"
        )
        from personadlg.config import read_yaml
        from personadlg.data.synth import is_synth_recipe, load_synth_recipe

        if is_synth_recipe(read_yaml(path)):
            assert load_synth_recipe(name).target_list()
            continue
        from personadlg.data.profile import is_profile_recipe, load_profile_recipe

        if is_profile_recipe(read_yaml(path)):
            assert load_profile_recipe(name).profile.keys
            continue
        from personadlg.models.api import is_api_recipe, load_api_recipe
        from personadlg.models.api.prompt import load_template

        if is_api_recipe(read_yaml(path)):
            assert load_template(load_api_recipe(name))[1].startswith("sha256:")
            continue
        if "judge" in read_yaml(path):
            from personadlg.metrics.judge import load_judge_recipe

            assert load_judge_recipe(name).client.model
            continue
        try:
            cfg = load_recipe(name)
        except ConfigError as err:
            if "not available in this version" in str(err):
                continue  # a method whose issue has not landed
            raise
        assert isinstance(cfg, RunConfig) and cfg.method == name.split("/")[0]


def test_load_recipe_with_overrides_and_paths(tmp_path):
    cfg = load_recipe("finetune/tiny", ["train.lr=3e-4", "train.max_steps=20"])
    assert cfg.train.lr == 3e-4 and cfg.train.max_steps == 20
    assert cfg.data.attributes["attitude"] == ["pessimistic", "optimistic"]
    assert load_recipe(recipes_dir() / "finetune" / "tiny.yaml").train.lr == 2e-3
    assert load_recipe("recipes/finetune/tiny.yaml").method == "finetune"
    dumped = yaml.safe_load(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    assert list(dumped) == ["method", "data", "model", "train", "generate"]
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(dumped))
    again = load_recipe(p)
    assert again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize(
    "text,match",
    [
        ("method: finetun\n", r"unknown method 'finetun' \(did you mean 'finetune'\?\)"),
        ("data: {}\n", "missing required key 'method'"),
        ("method: finetune\nmodle: {}\n", r"unknown key 'modle' \(did you mean 'model'\?\)"),
        ("method: finetune\nmodel: {backbone: gpt2}\ntrain: {lr: -1}\n", "train.lr must be > 0"),
        ("method: finetune\nmodel: {}\n", "set exactly one of model.backbone"),
        (
            "method: finetune\nmodel: {backbone: gpt2, from_config: {model_type: gpt2}}\n",
            "set exactly one",
        ),
        ("method: [\n", r"not valid YAML"),
        ("- a\n- b\n", "expected a mapping at the top level"),
        (
            "method: finetune\nmodel: {backbone: gpt2}\ndata: {attributes: {a: [x]}}\n",
            "at least two distinct aspects",
        ),
    ],
)
def test_bad_recipes_fail_with_a_clear_message(tmp_path, text, match):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_recipe(p)


def test_unknown_recipe_name_suggests_bundled_ones():
    with pytest.raises(ConfigError, match=r"did you mean 'finetune/tiny'"):
        load_recipe("finetune/tin")


def test_cross_field_checks_name_the_override_path():
    with pytest.raises(ConfigError, match="train.warmup_ratio must be in"):
        TrainConfig(warmup_ratio=1.5)
    with pytest.raises(ConfigError, match="data.max_context_turns must be >= 0"):
        DataConfig(max_context_turns=-1)
