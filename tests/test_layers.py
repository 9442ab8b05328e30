"""The house's layers: models do not reach up into generation/ or training/, and no two packages
import each other (directly or around a cycle), at module level or inside functions."""

from __future__ import annotations

import ast
import re
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


def _top_level_names(path: Path) -> set[str]:
    """Names a module's source defines at top level (def, class, assignment, import)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def _module_file(module: str) -> Path | None:
    base = PKG.parent.joinpath(*module.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def _string_targets() -> list[tuple[str, str, str]]:
    """(registry kind, name, "module:attr") of every lazily imported registry entry."""
    from personadlg.registry import FILTERS, FORMATS, METHODS, METRICS

    return [
        (reg.kind, e.name, e.target)
        for reg in (METHODS, METRICS, FORMATS, FILTERS)
        for e in reg.entries()
    ]


def test_every_string_target_is_a_name_its_module_defines():
    """Go-to-definition (and this test) find every registry target without importing it."""
    bad = []
    for kind, name, target in _string_targets():
        module, attr = target.split(":", 1)
        if not module.startswith("personadlg."):
            continue
        f = _module_file(module)
        if f is None or attr not in _top_level_names(f):
            bad.append(f"{kind} {name}: {target}")
    assert not bad, bad


def test_string_targets_keep_the_layers():
    """A method's target lives in its own folder under models/; the other registries point into
    their own packages, never into the CLI, training or generation."""
    bad = []
    for kind, name, target in _string_targets():
        module = target.split(":", 1)[0]
        if not module.startswith("personadlg."):
            continue  # a method an installed package adds (entry points): not our layers
        if kind == "method" and module != f"personadlg.models.{name}":
            bad.append(f"method {name} is declared outside its folder: {target}")
        if _package(module) in ("cli", "training", "generation"):
            bad.append(f"{kind} {name} reaches into {_package(module)}/: {target}")
    assert not bad, bad


def test_no_module_function_strings_outside_the_registry():
    """Code is reached by references (or by the registry, checked above), not by strings that
    the import checks cannot see."""
    pattern = re.compile(r"^personadlg(\.\w+)+:\w+$")
    found = [
        f"{f.relative_to(PKG.parent)}:{node.lineno}: {node.value}"
        for f in PKG.rglob("*.py")
        if f.name != "registry.py" or f.parent != PKG
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and pattern.match(node.value)
    ]
    assert not found, found


def test_only_the_cli_prints():
    """Library code logs; `personadlg/cli/` is the only package that writes to stdout."""
    found = []
    for f in PKG.rglob("*.py"):
        if f.relative_to(PKG).parts[0] == "cli":
            continue
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            fn = node.func
            if (isinstance(fn, ast.Name) and fn.id == "print") or (
                isinstance(fn, ast.Attribute)
                and fn.attr == "write"
                and isinstance(fn.value, ast.Attribute)
                and fn.value.attr in ("stdout", "stderr")
            ):
                found.append(f"{f.relative_to(PKG.parent)}:{node.lineno}")
    assert not found, found
