"""Replies the caller refuses (`ParseError`: the request is retried, then recorded as failed), and
the JSON values a reply may hold."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.S)


class ParseError(ValueError):
    """The reply is not usable (the request is retried, then recorded as failed)."""

    kind = "unparseable"  # the class retries and failures are counted under


def json_candidates(text: str) -> Iterator[Any]:
    """The JSON values in a reply, most likely first: the whole text, fenced code blocks, the outermost {...}."""
    candidates = [text.strip(), *(m.group(1).strip() for m in _FENCE.finditer(text))]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for c in candidates:
        try:
            yield json.loads(c)
        except json.JSONDecodeError:
            continue
