"""Type coercion: build any dataclass from a mapping, converting each value to its field's type.

PyYAML reads `1e-3` as a string and overrides arrive as text, so values are converted, not only
checked. Every problem is collected with the dotted path of its value and raised at once.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from personadlg.errors import ConfigError
from personadlg.registry import did_you_mean

T = TypeVar("T")

_TRUE = {"true", "yes", "on", "1", "y"}
_FALSE = {"false", "no", "off", "0", "n"}


def type_name(tp: Any) -> str:
    """How a field type reads in an error message or in `ls methods --fields`."""
    origin = get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in get_args(tp))
    if origin in (list, Sequence, tuple):
        args = get_args(tp)
        return f"a list of {type_name(args[0])}" if args else "a list"
    if origin in (dict, Mapping):
        return "a mapping"
    if is_dataclass(tp):
        return "a mapping"
    return {
        int: "an integer",
        float: "a number",
        bool: "true or false",
        str: "a string",
        Path: "a path",
    }.get(tp, getattr(tp, "__name__", str(tp)))


def coerce(value: Any, tp: Any, path: str) -> Any:
    """Convert VALUE to type TP or raise ConfigError naming PATH."""
    problems: list[str] = []
    out = _coerce(value, tp, path, problems)
    if problems:
        raise ConfigError(problems)
    return out


def _fail(problems: list[str], path: str, expected: str, value: Any) -> Any:
    """Append "PATH: expected EXPECTED, got VALUE" to PROBLEMS; None, the failed conversion."""
    problems.append(f"{path}: expected {expected}, got {value!r}")
    return None


def _coerce(value: Any, tp: Any, path: str, problems: list[str]) -> Any:
    """VALUE as type TP; on failure None, with the reason appended to PROBLEMS."""
    if tp is Any or tp is object:
        return value
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, tp, path, problems)
    if origin is Literal:
        return _coerce_literal(value, tp, path, problems)
    if is_dataclass(tp) and isinstance(tp, type):
        return build_section(tp, value, path, problems)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        return _coerce_list(value, tp, path, problems)
    if origin in (dict, Mapping) or tp is dict:
        return _coerce_mapping(value, tp, path, problems)
    scalar = next((fn for kind, fn in _SCALARS if tp is kind), None)
    if scalar is not None:
        return scalar(value, path, problems)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _coerce_enum(value, tp, path, problems)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    return _fail(problems, path, type_name(tp), value)


def _coerce_union(value: Any, tp: Any, path: str, problems: list[str]) -> Any:
    """The first member of the union TP that takes VALUE (a lone dataclass member reports its own)."""
    args = get_args(tp)
    if value is None:
        if type(None) not in args:
            problems.append(f"{path}: expected {type_name(tp)}, got null")
        return None
    inner = [a for a in args if a is not type(None)]
    if len(inner) == 1 and is_dataclass(inner[0]) and isinstance(value, dict):
        return _coerce(value, inner[0], path, problems)  # its own, more precise, problems
    for arg in inner:
        trial: list[str] = []
        out = _coerce(value, arg, path, trial)
        if not trial:
            return out
    return _fail(problems, path, type_name(tp), value)


def _coerce_literal(value: Any, tp: Any, path: str, problems: list[str]) -> Any:
    """One of the allowed values of `Literal[...]` TP (a number matches its string form)."""
    allowed = get_args(tp)
    for a in allowed:
        if value == a or (isinstance(a, str) and not isinstance(value, str) and str(value) == a):
            return a
    problems.append(
        f"{path}: expected {type_name(tp)}, got {value!r}{did_you_mean(str(value), [str(a) for a in allowed])}"
    )
    return None


def _coerce_list(value: Any, tp: Any, path: str, problems: list[str]) -> Any:
    """A list (a tuple for tuple types) of converted items; `a, b` text splits for string items."""
    (item_tp,) = get_args(tp)[:1] or (Any,)
    if isinstance(value, str) and item_tp in (str, Any):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)):
        return _fail(problems, path, type_name(tp), value)
    out = [_coerce(v, item_tp, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    return tuple(out) if get_origin(tp) is tuple or tp is tuple else out


def _coerce_mapping(value: Any, tp: Any, path: str, problems: list[str]) -> Any:
    """A dict with string keys and converted values (null is an empty mapping)."""
    args = get_args(tp)
    val_tp = args[1] if len(args) == 2 else Any
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        return _fail(problems, path, "a mapping", value)
    return {str(k): _coerce(v, val_tp, f"{path}.{k}", problems) for k, v in value.items()}


def _to_bool(value: Any, path: str, problems: list[str]) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    return _fail(problems, path, "true or false", value)


def _to_int(value: Any, path: str, problems: list[str]) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = None
    if isinstance(value, (str, float)):
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is not None and math.isfinite(number) and number.is_integer():
        return int(number)
    return _fail(problems, path, "an integer", value)


def _to_float(value: Any, path: str, problems: list[str]) -> float | None:
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None:
        return _fail(problems, path, "a number", value)
    if not math.isfinite(number):
        return _fail(problems, path, "a finite number", value)
    return number


def _to_str(value: Any, path: str, problems: list[str]) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return _fail(problems, path, "a string", value)


def _to_path(value: Any, path: str, problems: list[str]) -> Path | None:
    if isinstance(value, (str, Path)):
        return Path(value)
    return _fail(problems, path, "a path", value)


_SCALARS: tuple[tuple[type, Callable[[Any, str, list[str]], Any]], ...] = (
    (bool, _to_bool),
    (int, _to_int),
    (float, _to_float),
    (str, _to_str),
    (Path, _to_path),
)


def _coerce_enum(value: Any, tp: type[enum.Enum], path: str, problems: list[str]) -> Any:
    try:
        return tp(value)
    except ValueError:
        return _fail(problems, path, f"one of {', '.join(str(m.value) for m in tp)}", value)


def build_section(cls: type[T], data: Any, path: str, problems: list[str]) -> T:
    """Dataclass CLS from DATA at dotted PATH, or None with the reasons appended to PROBLEMS."""
    data = {} if data is None else data
    if is_dataclass(data) and isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        problems.append(f"{path or 'recipe'}: expected a mapping, got {data!r}")
        return None  # type: ignore[return-value]
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls) if f.init]  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key)
        sub = f"{path}.{key}" if path else key
        if key not in names:
            problems.append(
                f"unknown key '{sub}'{did_you_mean(key, names)}; valid keys{' under ' + repr(path) if path else ''}: {', '.join(names)}"
            )
            continue
        kwargs[key] = _coerce(value, hints[key], sub, problems)
    for f in fields(cls):  # type: ignore[arg-type]
        if (
            f.init
            and f.name not in kwargs
            and f.default is MISSING
            and f.default_factory is MISSING
        ):
            problems.append(f"missing required key '{path + '.' if path else ''}{f.name}'")
    if problems:
        return None  # type: ignore[return-value]
    try:
        return cls(**kwargs)
    except ConfigError as err:
        problems.extend(err.problems)
    except (ValueError, TypeError) as err:
        problems.append(f"{path or cls.__name__}: {err}")
    return None  # type: ignore[return-value]


def build_config(
    cls: type[T], data: Mapping[str, Any] | None, *, path: str = "", source: str | None = None
) -> T:
    """Build dataclass CLS from DATA (a mapping), coercing types; raise ConfigError listing every problem."""
    problems: list[str] = []
    out = build_section(cls, data or {}, path, problems)
    if problems:
        raise ConfigError(problems, source=source)
    return out


def check(problems: list[str]) -> None:
    """Raise one ConfigError for a list of cross-field problems (call at the end of `__post_init__`)."""
    if problems:
        raise ConfigError(problems)


def replace(cfg: T, **changes: Any) -> T:
    """dataclasses.replace that re-runs validation."""
    return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]
