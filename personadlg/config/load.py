"""Loading a training recipe: YAML and overrides → a validated RunConfig, the `model:` section
typed by the method's own config class."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from personadlg.config.coercion import build_section
from personadlg.config.overrides import apply_overrides
from personadlg.config.recipes import resolve_recipe
from personadlg.config.schema import (
    RECIPE_SECTIONS,
    DataConfig,
    GenerateConfig,
    RunConfig,
    TrainConfig,
)
from personadlg.config.yaml_io import read_yaml
from personadlg.errors import ConfigError, NotAvailableError
from personadlg.registry import METHODS, did_you_mean


def method_config_class(method: str) -> type:
    """The dataclass for the `model:` section of METHOD (its spec imports only light modules)."""
    try:
        cls = METHODS.get(method).config_cls
    except NotAvailableError:
        raise ConfigError(
            f"method '{method}' is not available in this version of personadlg"
        ) from None
    if cls is None:
        raise ConfigError(f"method '{method}' has no `model:` section (it trains nothing)")
    return cls


def load_recipe(recipe: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Load a training recipe, apply dotted overrides, coerce and validate everything.

    Args:
        recipe: a YAML path or a bundled recipe name such as `finetune/tiny`.
        overrides: `KEY=VALUE` strings with dotted keys; they win over the file.

    Raises:
        ConfigError: listing every unknown key, bad type and failed cross-field check.
    """
    path = resolve_recipe(recipe)
    data = apply_overrides(read_yaml(path), overrides)
    return build_run_config(data, source=str(path))


def _trained_method(data: Mapping[str, Any], problems: list[str], source: str | None) -> str:
    """The recipe's `method`, a registered trained method; ConfigError (with PROBLEMS) otherwise."""
    method = data.get("method")
    if not isinstance(method, str) or not method:
        problems.append(f"missing required key 'method' (one of: {', '.join(METHODS.names())})")
        raise ConfigError(problems, source=source)
    if method not in METHODS:
        problems.append(
            f"method: unknown method '{method}'{did_you_mean(method, METHODS.names())}; available: {', '.join(METHODS.names())}"
        )
        raise ConfigError(problems, source=source)
    if not METHODS.get(method).trained:
        raise ConfigError(
            f"method {method} is not trained: it is a recipe for `personadlg generate` (e.g. "
            f"`personadlg generate {source or 'RECIPE'} --input test.jsonl --out gen.jsonl`); "
            f"check it with `personadlg validate`",
            source=source,
        )
    return method


def stage_train_problems(model: Any, train: TrainConfig) -> list[str]:
    """Each `model.stage_train.<stage>` applied to the `train:` section (as the stage driver does
    when the stage starts) must make a valid train section: the same names, types and ranges,
    checked when the recipe loads rather than after the earlier stages have trained."""
    from personadlg.config.dump import to_dict

    stage_train = getattr(model, "stage_train", None)
    if not isinstance(stage_train, Mapping):
        return []
    problems: list[str] = []
    base = to_dict(train)
    for stage, over in stage_train.items():
        if not isinstance(over, Mapping) or not over:
            continue  # the method's own checks name a stage_train entry that is not a mapping
        path = f"model.stage_train.{stage}"
        found: list[str] = []
        build_section(TrainConfig, {**base, **over}, path, found)
        # TrainConfig's range checks name `train.x`: name the stage's override instead
        problems += [re.sub(r"(?<![\w.])train\.", f"{path}.", p) for p in found]
    return problems


def build_run_config(data: Mapping[str, Any], *, source: str | None = None) -> RunConfig:
    """Build a RunConfig from an already-parsed recipe mapping."""
    problems: list[str] = []
    for key in data:
        if key not in RECIPE_SECTIONS:
            problems.append(
                f"unknown key '{key}'{did_you_mean(str(key), RECIPE_SECTIONS)}; valid keys: {', '.join(RECIPE_SECTIONS)}"
            )
    method = _trained_method(data, problems, source)
    sections: dict[str, Any] = {}
    for name, cls in (
        ("data", DataConfig),
        ("model", method_config_class(method)),
        ("train", TrainConfig),
        ("generate", GenerateConfig),
    ):
        sections[name] = build_section(cls, data.get(name) or {}, name, problems)
    history = data.get("history") or []
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        problems.append("history: expected a list of mappings (written by `train --resume`)")
    lineage = data.get("lineage") or {}
    if not isinstance(lineage, dict):
        problems.append("lineage: expected a mapping (written by `train` with model.init_from)")
    if not problems:
        problems += stage_train_problems(sections["model"], sections["train"])
    if problems:
        raise ConfigError(problems, source=source)
    return RunConfig(
        method=method, source=source, history=list(history), lineage=dict(lineage), **sections
    )
