"""Finding recipes: the bundled ones by name (`finetune/tiny`), or any YAML path."""

from __future__ import annotations

import re
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


_LABEL = re.compile(r"^[A-Z][A-Za-z ]{0,30}:\s")
"""`Run:  ...`, `Data: ...`, `Local vLLM: ...`: a header line that starts another paragraph."""


def recipe_summary(path: Path) -> str:
    """What a recipe reproduces: its header's first paragraph, the leading `# ` comment lines up to
    a blank or non-comment line, an indented comment line (an example) or a labelled one
    (`# Run:  ...`, `# Data: ...`), joined into one line."""
    parts: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line[1:].removeprefix(" ")
        if not text.strip() or (parts and (text[0].isspace() or _LABEL.match(text))):
            break
        parts.append(text.strip())
    return " ".join(parts)


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
