"""A model's reply → a profile over the declared keys, or an error that gets the request retried.

Accepted: a JSON object (alone, in a fenced code block, or the outermost `{...}` of the text),
optionally wrapped as `{"profile": {...}}`. Keys match the declared ones ignoring case; a value
must be one of the key's allowed values (ignoring case, written back in the declared spelling) or,
for a `free` key, a non-empty string of at most FREE_MAX_CHARS characters.
"""

from __future__ import annotations

from typing import Any

from personadlg.data.profile.config import FREE
from personadlg.errors import describe_value
from personadlg.llm.parse import ParseError, json_candidates

FREE_MAX_CHARS = 100


class InvalidProfile(ParseError):
    """JSON, but not a profile over the declared keys and values."""

    kind = "invalid_profile"


def parse_profile(text: str | None, keys: dict[str, Any]) -> dict[str, str]:
    """The profile in TEXT, in the declared key order; ParseError (not JSON) or InvalidProfile."""
    if not text or not text.strip():
        raise ParseError("empty reply")
    obj = next((o for o in json_candidates(text) if isinstance(o, dict)), None)
    if obj is None:
        raise ParseError("the reply is not a JSON object")
    declared = {k.casefold(): k for k in keys}
    if set(obj) == {"profile"} and "profile" not in declared and isinstance(obj["profile"], dict):
        obj = obj["profile"]
    out: dict[str, str] = {}
    seen: set[str] = set()
    problems = []
    for raw_key, value in obj.items():
        key = declared.get(str(raw_key).strip().casefold())
        if key is None:
            problems.append(f"unknown key {raw_key!r}")
            continue
        if key in seen:
            problems.append(f"key {key!r} given twice")
            continue
        seen.add(key)
        allowed = keys[key]
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            problems.append(f"{key}: expected a string, got {describe_value(value)}")
            continue
        text_value = " ".join(str(value).split())
        if allowed == FREE:
            if not text_value or len(text_value) > FREE_MAX_CHARS:
                problems.append(
                    f"{key}: expected a non-empty text of at most {FREE_MAX_CHARS} characters, got {describe_value(text_value)}"
                )
            else:
                out[key] = text_value
            continue
        match = {a.casefold(): a for a in allowed}.get(text_value.casefold())
        if match is None:
            problems.append(
                f"{key}: expected one of {', '.join(allowed)}, got {describe_value(text_value)}"
            )
        else:
            out[key] = match
    missing = [k for k in keys if k not in seen]
    if missing:
        problems.append(f"missing key(s) {', '.join(missing)}")
    if problems:
        raise InvalidProfile("; ".join(problems))
    return {k: out[k] for k in keys}
