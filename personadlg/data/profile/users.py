"""The users of a dialogue file: their records, whether their profile is complete, and a sample of their utterances.

A user's utterances are the assistant messages of the dialogues with that `user_id`. The sample is
the SAMPLE_UTTERANCES of them with the smallest hash of (seed, user, dialogue id, message index,
text): deterministic, independent of the file's order, and kept in memory per user only (the file
is streamed). The sample is given in input order.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass, field
from pathlib import Path

from personadlg.data.formats import read_dialogues
from personadlg.data.profile.config import ProfileSpec


@dataclass
class User:
    """One `user_id`: how many records it has, whether each already has every key, its utterance sample."""

    user_id: str
    records: int = 0
    complete: bool = True
    _heap: list[tuple[int, int, int, str]] = field(default_factory=list, repr=False)

    def offer(self, priority: int, position: tuple[int, int], text: str, k: int) -> None:
        item = (-priority, position[0], position[1], text)
        if len(self._heap) < k:
            heapq.heappush(self._heap, item)
        elif -self._heap[0][0] > priority:
            heapq.heapreplace(self._heap, item)

    def sample(self) -> list[str]:
        """The sampled utterances, in input order."""
        return [t for _, _, _, t in sorted(self._heap, key=lambda x: (x[1], x[2]))]


@dataclass
class Scan:
    """What one pass over the input found."""

    users: dict[str, User]
    records: int
    without_user: int


def clip(text: str, max_chars: int) -> str:
    """TEXT on one line, cut to MAX_CHARS (an ellipsis marks the cut)."""
    line = " ".join(text.split())
    return line if len(line) <= max_chars else line[: max_chars - 1].rstrip() + "…"


def _priority(seed: int, user_id: str, dialogue_id: str, index: int, text: str) -> int:
    blob = f"{seed}\0{user_id}\0{dialogue_id}\0{index}\0{text}".encode()
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "big")


def scan_users(path: str | Path, *, spec: ProfileSpec, fmt: str = "auto") -> Scan:
    """Stream PATH once (DataError `FILE:LINE: ...` on a bad record); users in order of first appearance."""
    users: dict[str, User] = {}
    records = without_user = 0
    for ordinal, d in enumerate(read_dialogues(path, fmt)):
        records += 1
        if d.user_id is None or not d.user_id.strip():  # a blank id names no one
            without_user += 1
            continue
        user = users.setdefault(d.user_id, User(d.user_id))
        user.records += 1
        user.complete = user.complete and all(d.profile.get(k) not in (None, "") for k in spec.keys)
        for j, m in enumerate(d.messages):
            text = clip(m.content, spec.max_chars) if m.role == "assistant" else ""
            if text:
                p = _priority(spec.seed, d.user_id, d.id, j, m.content)
                user.offer(p, (ordinal, j), text, spec.sample_utterances)
    return Scan(users, records, without_user)
