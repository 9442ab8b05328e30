"""Turning a model's reply into dialogue messages, and checking them.

Accepted: a JSON object `{"messages": [...]}`, a JSON list of messages, JSON inside a fenced code
block, and plain transcripts whose lines start with `PersonA:` / `PersonB:`, `[PersonA]:` /
`[PersonB]:`, `User:` / `Assistant:` or `A:` / `B:` (continuation lines join the turn above).
"""

from __future__ import annotations

import re
from typing import Any

from personadlg.data.synth.config import TurnsConfig
from personadlg.llm.parse import ParseError, json_candidates

_SPEAKER = re.compile(
    r"^\s*(?:\*\*)?\[?\s*(person\s*a|person\s*b|user|assistant|a|b)\s*\]?(?:\*\*)?\s*[:：]\s*(.*)$",
    re.IGNORECASE,
)
_ROLE = {
    "persona": "user",
    "user": "user",
    "a": "user",
    "personb": "assistant",
    "assistant": "assistant",
    "b": "assistant",
    "human": "user",
    "gpt": "assistant",
}
MAX_WORDS = 150


def _from_json(obj: Any) -> list[dict[str, str]] | None:
    if isinstance(obj, dict) and isinstance(obj.get("messages"), list):
        obj = obj["messages"]
    if not isinstance(obj, list):
        return None
    out = []
    for m in obj:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise ParseError("a message is not an object with a string 'content'")
        role = str(m.get("role", "")).lower().replace(" ", "")
        if role not in _ROLE:
            raise ParseError(f"unknown role {m.get('role')!r}")
        out.append({"role": _ROLE[role], "content": m["content"].strip()})
    return out


def _from_transcript(text: str) -> list[dict[str, str]] | None:
    out: list[dict[str, str]] = []
    for line in text.splitlines():
        m = _SPEAKER.match(line)
        if m:
            out.append(
                {"role": _ROLE[m.group(1).lower().replace(" ", "")], "content": m.group(2).strip()}
            )
        elif out and line.strip():
            out[-1]["content"] = (out[-1]["content"] + " " + line.strip()).strip()
    return out or None


def parse_reply(text: str | None) -> list[dict[str, str]]:
    """Messages from a reply in any accepted shape; ParseError when there is none."""
    if not text or not text.strip():
        raise ParseError("empty reply")
    for obj in json_candidates(text):
        msgs = _from_json(obj)
        if msgs is not None:
            return msgs
    msgs = _from_transcript(text)
    if msgs is None:
        raise ParseError("neither JSON messages nor a speaker-tagged transcript")
    return msgs


def check_dialogue(messages: list[dict[str, str]], turns: TurnsConfig) -> None:
    """User first, roles alternating, ends with the assistant, turns within bounds, no empty or runaway message."""
    if not messages or messages[0]["role"] != "user":
        raise ParseError("the dialogue must start with the user")
    for i, m in enumerate(messages):
        if i and m["role"] == messages[i - 1]["role"]:
            raise ParseError(f"messages[{i}]: two {m['role']} messages in a row")
        if not m["content"]:
            raise ParseError(f"messages[{i}] is empty")
        if len(m["content"].split()) > MAX_WORDS:
            raise ParseError(f"messages[{i}] has more than {MAX_WORDS} words")
    if messages[-1]["role"] != "assistant":
        raise ParseError("the dialogue must end with the assistant")
    n = len(messages) // 2
    if not turns.min <= n <= turns.max:
        raise ParseError(f"{n} exchanges, expected {turns.min}-{turns.max}")
