"""Recipes: YAML → typed dataclasses, with dotted `KEY=VALUE` overrides and strict validation.

A recipe has `method`, then sections `data`, `model`, `train` and `generate`, each mapping onto a
dataclass (`model` onto the method's own config class). Values are coerced to the field type
(PyYAML reads `1e-3` as a string), unknown keys are errors that list the valid keys with a
did-you-mean, and all problems are collected and reported at once.

Modules: `coercion` (values → field types, dataclasses from mappings), `yaml_io` (strict YAML),
`overrides` (dotted KEY=VALUE), `dump` (configs → plain data / YAML), `schema` (the shared
sections and RunConfig), `recipes` (finding recipes), `load` (a recipe → RunConfig).

Example:
    >>> cfg = load_recipe("finetune/tiny", ["train.lr=3e-4", "train.max_steps=20"])
    >>> cfg.train.lr
    0.0003
"""

from __future__ import annotations

from personadlg.config.coercion import build_config, check, coerce, replace
from personadlg.config.dump import dump_yaml, field_help, to_dict
from personadlg.config.load import build_run_config, load_recipe, method_config_class
from personadlg.config.overrides import apply_overrides, parse_override
from personadlg.config.recipes import bundled_recipes, recipe_summary, recipes_dir, resolve_recipe
from personadlg.config.schema import (
    RECIPE_SECTIONS,
    DataConfig,
    GenerateConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)
from personadlg.config.yaml_io import load_yaml_text, read_yaml
from personadlg.errors import ConfigError

__all__ = [
    "RECIPE_SECTIONS",
    "ConfigError",
    "DataConfig",
    "GenerateConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "build_config",
    "build_run_config",
    "bundled_recipes",
    "check",
    "coerce",
    "dump_yaml",
    "field_help",
    "load_recipe",
    "load_yaml_text",
    "method_config_class",
    "parse_override",
    "read_yaml",
    "recipe_summary",
    "recipes_dir",
    "replace",
    "resolve_recipe",
    "to_dict",
]
