"""What a model is called in a metric's signature: its name and a short hash of its weights.

`model_id("runs/cls-att/final")` → `cls-att@sha256:0123456789ab` (a personadlg checkpoint is named
after its run), `model_id("sentence-transformers/all-MiniLM-L6-v2")` → that hub id plus the hash of
the files it was loaded from (the Hub cache, or the installed package that carries them), so two
numbers computed with different weights never share a signature.
"""

from __future__ import annotations

import contextlib
import json
from functools import lru_cache
from pathlib import Path

from personadlg.models.fingerprint import short, weights_fingerprint
from personadlg.models.loading import hub_name, is_hub_id, resolve_model


def model_name(ref: str | Path) -> str:
    """A readable name: the hub id, a checkpoint's run name (plus step-N), or the config's name."""
    path = Path(resolve_model(ref))
    if not path.is_dir():
        return str(ref)
    bundled = hub_name(path)
    if bundled:
        return bundled
    recipe = path / "config.yaml"
    if recipe.is_file():
        import yaml

        with contextlib.suppress(OSError, yaml.YAMLError, AttributeError, TypeError):
            run = Path(str(yaml.safe_load(recipe.read_text())["train"]["output_dir"])).name
            return run if path.name == "final" else f"{run}/{path.name}"
    with contextlib.suppress(OSError, ValueError):
        declared = json.loads((path / "config.json").read_text()).get("_name_or_path")
        if isinstance(declared, str) and is_hub_id(declared) and not Path(declared).exists():
            return declared
    return path.name


def _hub_snapshot(hub_id: str) -> Path | None:
    with contextlib.suppress(Exception):
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(hub_id, "config.json")
        if isinstance(found, str):
            return Path(found).parent
    return None


@lru_cache(maxsize=64)
def model_id(ref: str) -> str:
    """`name@sha256:<12 hex>` of the model REF names (just the name when its files are not local)."""
    path = Path(resolve_model(ref))
    if not path.is_dir():
        path = _hub_snapshot(str(ref)) or path
    digest = weights_fingerprint(path) if path.is_dir() else ""
    return f"{model_name(ref)}@{short(digest)}" if digest else model_name(ref)
