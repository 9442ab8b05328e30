"""Reading YAML: PyYAML's safe loader, refusing duplicate keys, with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from personadlg.errors import ConfigError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        try:
            hash(key)
        except TypeError:
            continue
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first on line {seen[key] + 1}); each key may appear once",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _no_duplicates,  # type: ignore[arg-type]
)


MAX_EXPANDED_VALUES = 100_000
"""The most values (scalars, lists, mappings) a YAML document may expand to through its aliases."""


class YamlAliasBombError(yaml.constructor.ConstructorError):
    """A YAML document whose aliases expand to more than MAX_EXPANDED_VALUES values (or forever)."""

    def __init__(self) -> None:
        super().__init__(
            None,
            None,
            f"the YAML expands to more than {MAX_EXPANDED_VALUES} values through its aliases "
            "(&anchors / *aliases); write the values out",
        )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def expanded_size(root: yaml.Node, limit: int = MAX_EXPANDED_VALUES) -> int:
    """How many values ROOT stands for once every alias is expanded (counted over the node graph
    with memoisation, so a bomb costs time linear in its text); YamlAliasBombError when aliases
    add more than LIMIT values to those written out, or for a recursive alias (an infinite
    expansion). A long document without aliases is never refused."""
    written: set[int] = set()
    todo = [root]
    while todo:
        node = todo.pop()
        if id(node) not in written:
            written.add(id(node))
            todo.extend(_children(node))
    limit += len(written)
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            size = 1 + sum(sizes[id(c)] for c in _children(node))
            if size > limit:
                raise YamlAliasBombError()
            sizes[key] = size
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise YamlAliasBombError()  # an alias inside its own anchor: expands forever
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                raise YamlAliasBombError()
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def load_yaml_text(text: str) -> Any:
    """`yaml.safe_load` that refuses duplicate keys and alias bombs (YamlAliasBombError: the
    document expands to more than MAX_EXPANDED_VALUES values through its aliases)."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded_size(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping at the top of YAML file PATH (empty file: {}); ConfigError naming the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        data = load_yaml_text(text)
    except YamlAliasBombError as err:
        raise ConfigError(f"{path}: {err.problem}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data
