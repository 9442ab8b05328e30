"""Strict JSON values, as every reader of the project takes them: no NaN or Infinity, no number
beyond a 64-bit float, no lone surrogate (a `\\ud800` escape no UTF-8 text can hold). The JSONL
readers (`data/jsonl.py`) and the LLM engine's reply parsing (`llm/parse.py`) share it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
SURROGATE = re.compile("[\ud800-\udfff]")
WS = " \t\r\n"
"""What JSON counts as whitespace between values."""


class JsonValueError(ValueError):
    """A parsed JSON value that cannot be kept (NaN, a number out of range, a lone surrogate)."""

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(f"field '{field}': {detail}" if field else detail)
        self.detail, self.field = detail, field


class _Unfit:
    """Stands in for a number JSON text may spell but no record can hold, so parsing goes on."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


class Parser:
    """A JSON decoder that parses NaN, Infinity and out-of-range numbers as `_Unfit` markers, and
    counts them, so a strict caller can refuse the value (naming its field) yet find its end."""

    def __init__(self) -> None:
        self.unfit = 0
        self.decoder = json.JSONDecoder(
            parse_constant=self._constant, parse_float=self._float, parse_int=self._int
        )

    def _mark(self, problem: str) -> _Unfit:
        self.unfit += 1
        return _Unfit(problem)

    def _constant(self, name: str) -> Any:
        return self._mark(f"{name} is not a JSON value (JSON has no NaN or Infinity)")

    def _float(self, text: str) -> Any:
        value = float(text)
        if math.isfinite(value):
            return value
        return self._mark(f"{text[:40]} is a number out of range (beyond a 64-bit float)")

    def _int(self, text: str) -> Any:
        try:
            return int(text)
        except ValueError:  # more digits than int() converts
            return self._mark(f"a number out of range (an integer of {len(text)} digits)")

    def decode(self, text: str, pos: int = 0) -> tuple[Any, int]:
        """(value, end) of the JSON value at POS; json.JSONDecodeError when it is not JSON."""
        self.unfit = 0
        return self.decoder.raw_decode(text, pos)

    def parse(self, text: str) -> Any:
        """TEXT as one JSON value, refused (ValueError) as `parse_json` says."""
        value, end = self.decode(text, len(text) - len(text.lstrip(WS)))
        rest = text[end:]
        if rest.strip(WS):
            raise json.JSONDecodeError("Extra data", text, len(text) - len(rest.lstrip(WS)))
        self.check(text, value)
        return value

    def check(self, raw: str, value: Any) -> None:
        """Raise JsonValueError for a marker or a lone surrogate in VALUE (parsed from RAW)."""
        if self.unfit:
            field, marker = _first_unfit(value)
            raise JsonValueError(marker.problem, field)
        check_json_value(raw, value)


def _first_unfit(value: Any) -> tuple[str | None, _Unfit]:
    """The first `_Unfit` marker in VALUE (document order) and the field path to it."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, _Unfit):
            return path or None, v
        if isinstance(v, dict):
            stack.extend((f"{path}.{k}" if path else str(k), x) for k, x in reversed(v.items()))
        elif isinstance(v, list):
            stack.extend((f"{path}[{i}]", v[i]) for i in range(len(v) - 1, -1, -1))
    raise AssertionError("no _Unfit marker")


def _lone_surrogate(value: Any) -> str | None:
    """The first lone surrogate in any string of VALUE (JSON escapes can encode them; UTF-8 cannot)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            m = SURROGATE.search(v)
            if m:
                return m.group()
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return None


def check_json_value(raw: str, value: Any) -> None:
    """Raise ValueError when VALUE (parsed from RAW) holds text that cannot be written as UTF-8."""
    if "\\u" in raw and _SURROGATE_ESCAPE.search(raw):
        bad = _lone_surrogate(value)
        if bad is not None:
            raise JsonValueError(
                f"not valid Unicode: the escape \\u{ord(bad):04x} is a lone surrogate, which no UTF-8 text can hold"
            )


def parse_json(text: str) -> Any:
    """json.loads that refuses NaN / Infinity, numbers out of range and lone surrogate escapes
    (ValueError; JsonValueError names the field)."""
    return Parser().parse(text)


def has_lone_surrogate(text: str) -> bool:
    """Whether TEXT holds a lone surrogate (`\\ud800`), which cannot be written as UTF-8."""
    return SURROGATE.search(text) is not None
