"""Data written for personadlg and shipped with it: the demo corpus and the synth topic list.

See `personadlg/assets/README.md` (the data card).
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent

#: The attribute space of MIRACLE, which the demo corpus is labelled with.
DEMO_ATTRIBUTES: dict[str, list[str]] = {
    "language_style": ["plain", "lyrical"],
    "attitude": ["pessimistic", "optimistic"],
    "mental_characteristics": ["emotional", "critical"],
}


def demo_corpus() -> Path:
    """The bundled demo dialogues (personadlg dialogue JSONL)."""
    return ASSETS / "demo_dialogues.jsonl"


def topics() -> Path:
    """The bundled topic list for `personadlg synth` (one topic per line)."""
    return ASSETS / "topics.txt"
