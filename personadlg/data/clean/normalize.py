"""Text and dialogue normalization: NFC, whitespace, speaker prefixes, same-role merging.

Normalization repairs records instead of rejecting them; the counts of each repair go into the
clean report.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

from personadlg.data.schema import Dialogue, Message

_INVISIBLE = re.compile(r"[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANKS = re.compile(r"\n{3,}")
SPEAKER_PREFIX = re.compile(
    r"^\s*(?:\[\s*(?:person\s*[ab12]|speaker\s*[ab12]|user|assistant|human|gpt|bot|ai|a|b)\s*\]"
    r"|(?:person\s*[ab12]|speaker\s*[ab12]|user|assistant|human|gpt|bot|a|b))\s*[:：]\s*",
    re.IGNORECASE,
)


def normalize_text(text: str, counts: Counter[str] | None = None) -> str:
    """NFC, no invisible/control characters, single spaces, trimmed lines, at most one blank line."""
    out = text
    if not out.isascii():
        nfc = unicodedata.normalize("NFC", out)
        if nfc != out and counts is not None:
            counts["nfc"] += 1
        out = _INVISIBLE.sub("", nfc)
    before = out
    out = _CONTROL.sub("", out.replace("\r\n", "\n").replace("\r", "\n"))
    if "\n" in out:
        out = "\n".join(_SPACES.sub(" ", line).strip() for line in out.split("\n"))
        out = _BLANKS.sub("\n\n", out).strip()
    else:
        out = _SPACES.sub(" ", out).strip()
    if out != before and counts is not None:
        counts["whitespace"] += 1
    return out


def strip_speaker_prefix(text: str) -> tuple[str, bool]:
    """Remove one leading speaker tag such as `PersonB:`, `Assistant:`, `[PersonA]:`."""
    m = SPEAKER_PREFIX.match(text)
    if m is None:
        return text, False
    return text[m.end() :].lstrip(), True


def normalize_dialogue(
    d: Dialogue,
    *,
    strip_prefixes: bool = True,
    merge_same_role: bool = True,
    counts: Counter[str] | None = None,
) -> Dialogue:
    """Return a normalized copy of D. COUNTS (if given) gets one increment per kind of repair."""
    c: Counter[str] = counts if counts is not None else Counter()
    messages: list[Message] = []
    for m in d.messages:
        text = normalize_text(m.content, c)
        if strip_prefixes:
            text, stripped = strip_speaker_prefix(text)
            if stripped:
                c["speaker_prefix"] += 1
        if not text:
            c["empty_message_removed"] += 1
            continue
        if merge_same_role and messages and messages[-1].role == m.role:
            messages[-1] = Message(m.role, messages[-1].content + "\n" + text)
            c["merged_messages"] += 1
            continue
        messages.append(Message(m.role, text))
    persona = [p for p in (normalize_text(s, c) for s in d.persona) if p]
    topic = normalize_text(d.topic, c) if d.topic is not None else None
    return Dialogue(
        id=d.id,
        messages=messages,
        persona=persona,
        attributes=dict(d.attributes),
        user_id=d.user_id,
        profile=dict(d.profile),
        topic=topic,
        meta=dict(d.meta),
        extra=dict(d.extra),
    )
