"""The house's layers: models do not reach up into generation/ or training/, and no two packages
import each other (directly or around a cycle), at module level or inside functions."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "personadlg"


def _imports() -> dict[str, set[tuple[str, str]]]:
    """{importing module: {(imported personadlg module, file)}} for every file of the package."""
    out: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for f in PKG.rglob("*.py"):
        mod = ".".join(f.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("personadlg")
            ):
                out[mod].add((node.module, str(f)))
            elif isinstance(node, ast.Import):
                out[mod].update(
                    (a.name, str(f)) for a in node.names if a.name.startswith("personadlg")
                )
    return out


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "personadlg"


def test_models_do_not_import_generation_or_training():
    bad = [
        (mod, target)
        for mod, targets in _imports().items()
        if mod.startswith("personadlg.models")
        for target, _ in targets
        if _package(target) in ("generation", "training", "cli")
    ]
    assert not bad, bad


def test_no_package_level_import_cycles():
    edges: dict[str, set[str]] = defaultdict(set)
    for mod, targets in _imports().items():
        for target, _ in targets:
            a, b = _package(mod), _package(target)
            if a != b and b != "personadlg":  # the package root (version) is a leaf
                edges[a].add(b)

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            for nxt in edges.get(node, ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    cycles = sorted((a, b) for a in edges for b in edges[a] if reaches(b, a))
    assert not cycles, f"package import cycles: {cycles}"
