"""Finding recipes: the bundled ones by name (`finetune/tiny`), or any YAML path."""

from __future__ import annotations

from pathlib import Path

from personadlg.errors import ConfigError
from personadlg.registry import did_you_mean


def recipes_dir() -> Path:
    """Bundled recipes: `personadlg/_recipes` in a wheel, `recipes/` in a source checkout."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "_recipes", here.parent / "recipes"):
        if candidate.is_dir():
            return candidate
    return here.parent / "recipes"


def bundled_recipes() -> list[str]:
    """Names of bundled recipes, e.g. `finetune/tiny`."""
    root = recipes_dir()
    if not root.is_dir():
        return []
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def recipe_summary(path: Path) -> str:
    """The first comment line of a recipe: what it reproduces."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""


def resolve_recipe(recipe: str | Path) -> Path:
    """A YAML path, or a bundled recipe name (`finetune/tiny`, `finetune/tiny.yaml`)."""
    path = Path(recipe)
    if path.is_file():
        return path
    name = str(recipe).removesuffix(".yaml").removesuffix(".yml")
    name = name.removeprefix("recipes/")
    candidate = recipes_dir() / f"{name}.yaml"
    if candidate.is_file():
        return candidate
    names = bundled_recipes()
    raise ConfigError(
        f"recipe {str(recipe)!r} is neither a file nor a bundled recipe{did_you_mean(name, names)}; "
        f"bundled: {', '.join(names) or 'none'}"
    )
