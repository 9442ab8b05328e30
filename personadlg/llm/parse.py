"""Replies the caller refuses (`ParseError`: the request is retried, then recorded as failed), and
the JSON values a reply may hold."""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.S)
_SURROGATE = re.compile("[\ud800-\udfff]")


class ParseError(ValueError):
    """The reply is not usable (the request is retried, then recorded as failed)."""

    kind = "unparseable"  # the class retries and failures are counted under


def has_lone_surrogate(text: str) -> bool:
    """Whether TEXT holds a lone surrogate (`\\ud800`), which cannot be written as UTF-8."""
    return _SURROGATE.search(text) is not None


def printable(text: str) -> str:
    """TEXT with each lone surrogate replaced by `?`, so it can be written as UTF-8 (a journal)."""
    return text.encode("utf-8", "replace").decode("utf-8") if has_lone_surrogate(text) else text


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is beyond a float")
    return value


def _float_sized_int(text: str) -> int:
    value = int(text)  # more than 4300 digits: ValueError
    if abs(value) > sys.float_info.max:
        raise ValueError(f"the number {text[:20]}... is beyond a float")
    return value


def _loads(text: str) -> Any:
    """Strict JSON: no NaN / Infinity, no number beyond a float, no lone surrogate in a string,
    nesting within the interpreter's recursion limit; ValueError otherwise."""
    try:
        value = json.loads(
            text,
            parse_constant=_no_constant,
            parse_float=_finite_float,
            parse_int=_float_sized_int,
        )
        # every string (keys too) must encode as UTF-8: a lone surrogate cannot be journalled
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (RecursionError, UnicodeEncodeError) as err:
        raise ValueError(str(err)) from None
    return value


def json_candidates(text: str) -> Iterator[Any]:
    """The JSON values in a reply, most likely first: the whole text, fenced code blocks, the outermost {...}.

    Only strict JSON counts: NaN / Infinity, numbers beyond a float, lone surrogates and nesting too
    deep to read make a candidate unparseable (skipped)."""
    candidates = [text.strip(), *(m.group(1).strip() for m in _FENCE.finditer(text))]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for c in candidates:
        try:
            yield _loads(c)
        except ValueError:  # json.JSONDecodeError included
            continue
