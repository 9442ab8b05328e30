"""Replies the caller refuses (`ParseError`: the request is retried, then recorded as failed), and
the JSON values a reply may hold."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from personadlg.json_values import has_lone_surrogate, parse_json

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.S)


class ParseError(ValueError):
    """The reply is not usable (the request is retried, then recorded as failed)."""

    kind = "unparseable"  # the class retries and failures are counted under


def printable(text: str) -> str:
    """TEXT with each lone surrogate replaced by `?`, so it can be written as UTF-8 (a journal)."""
    return text.encode("utf-8", "replace").decode("utf-8") if has_lone_surrogate(text) else text


def _loads(text: str) -> Any:
    """Strict JSON, as every reader of the project takes it (`parse_json`: no NaN / Infinity, no
    number beyond a float, no lone surrogate), and nesting within the recursion limit; ValueError."""
    try:
        return parse_json(text)
    except RecursionError:
        raise ValueError("JSON nested too deep") from None


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
