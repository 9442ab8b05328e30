"""A judge's reply → a judgement, or an error that gets the request retried.

Accepted: a JSON object (alone, in a fenced code block, or the outermost `{...}` of the text) with
`score`, an integer from 1 to 5 (an integral number or a string of digits), or `answer`, "yes" or
"no" (any case); an optional `reason` is kept (cut at REASON_MAX_CHARS characters).
"""

from __future__ import annotations

from typing import Any

from personadlg.errors import describe_value
from personadlg.llm.parse import ParseError, json_candidates

SCALE = (1, 5)
REASON_MAX_CHARS = 300


class InvalidJudgement(ParseError):
    """JSON, but not a judgement: a missing key, a score out of range, an answer that is not yes/no."""

    kind = "invalid_judgement"


def _object(text: str | None) -> dict[str, Any]:
    if not text or not text.strip():
        raise ParseError("empty reply")
    obj = next((o for o in json_candidates(text) if isinstance(o, dict)), None)
    if obj is None:
        raise ParseError("the reply is not a JSON object")
    return {str(k).strip().lower(): v for k, v in obj.items()}


def _reason(obj: dict[str, Any]) -> str:
    reason = obj.get("reason")
    return " ".join(str(reason).split())[:REASON_MAX_CHARS] if reason is not None else ""


def parse_score(text: str | None) -> dict[str, Any]:
    """`{"score": 1..5, "reason": ...}` from TEXT; ParseError (not JSON) or InvalidJudgement."""
    obj = _object(text)
    if "score" not in obj:
        raise InvalidJudgement(f"missing key 'score' (got keys {sorted(obj)})")
    raw = obj["score"]
    value: int | None = None
    if isinstance(raw, bool):
        value = None
    elif isinstance(raw, int):
        value = raw
    elif isinstance(raw, float) and raw.is_integer():
        value = int(raw)
    elif isinstance(raw, str) and raw.strip().isdigit():
        value = int(raw.strip())
    lo, hi = SCALE
    if value is None or not lo <= value <= hi:
        raise InvalidJudgement(
            f"score: expected an integer from {lo} to {hi}, got {describe_value(raw)}"
        )
    return {"score": value, "reason": _reason(obj)}


def parse_answer(text: str | None) -> dict[str, Any]:
    """`{"answer": "yes" | "no", "reason": ...}` from TEXT; ParseError (not JSON) or InvalidJudgement."""
    obj = _object(text)
    if "answer" not in obj:
        raise InvalidJudgement(f"missing key 'answer' (got keys {sorted(obj)})")
    raw = obj["answer"]
    answer = raw.strip().lower().rstrip(".!") if isinstance(raw, str) else None
    if answer not in ("yes", "no"):
        raise InvalidJudgement(f"answer: expected 'yes' or 'no', got {describe_value(raw)}")
    return {"answer": answer, "reason": _reason(obj)}
