"""Token ids → the text personadlg writes: one function for every generated reply.

Byte-level BPE tokenizers (GPT-2, the trained tiny ones) decode to the exact text. WordPiece
tokenizers (BERT, all-MiniLM-L6-v2) do not keep spaces: they decode every piece of punctuation as a
word of its own ("i ' m here , ok ?"). For them `decode` puts English spacing back
(`english_spacing`: contractions, punctuation, brackets, quotes, hyphens, times and decimals), and
with `truecase` capitalises sentence starts and the pronoun "i", for uncased models trained on
cased text. Both are plain functions of the text, so the same rules hold in `generate`, `chat`
and `serve`.

    decode(tokenizer, ids)                 # "i'm here, ok?"
    decode(tokenizer, ids, truecase=True)  # "I'm here, ok?"
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_ORPHAN = re.compile(r"(?:^|(?<=\s))##(?=\S)")  # a word-continuation piece with nothing before it
_CONTRACTION = re.compile(r"(?<=\w) ' (?=(?:s|m|d|t|ll|re|ve)\b)", re.IGNORECASE)
_NT = re.compile(r"\b(\w+)n ' t\b", re.IGNORECASE)
_ELISION = re.compile(r"\b([oy]) ' (\w)", re.IGNORECASE)  # o'clock, y'all
_BEFORE = re.compile(r" ([.,!?;:%)\]}]|\.\.\.)")
_AFTER = re.compile(r"([(\[{$#@]) ")
_JOINED = re.compile(r"(?<=\w) ([-/&]) (?=\w)")
_NUMBER = re.compile(r"(?<=\d)([.,:]) (?=\d)")
_INITIALS = re.compile(r"\b([a-z])\. ([a-z])\.", re.IGNORECASE)
_QUOTE = re.compile(r'"')
_SENTENCE = re.compile(r"(^|[.!?]\s+|\n\s*)([a-z])")
_PRONOUN = re.compile(r"\bi\b(?=$|[\s'.,!?;:])")


def is_wordpiece(tokenizer: Any) -> bool:
    """TOKENIZER decodes WordPiece pieces (BERT-style), which lose the original spacing."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    return type(decoder).__name__ == "WordPiece" or "WordPiece" in repr(decoder)


def _quotes(text: str) -> str:
    """Pair straight double quotes: the opening one loses the space after it, the closing one the
    space before it."""
    out: list[str] = []
    opening = True
    for i, part in enumerate(_QUOTE.split(text)):
        if i:
            if opening:
                out.append('"')
                part = part.lstrip(" ")
            else:
                if out:
                    out[-1] = out[-1].rstrip(" ")
                out.append('"')
            opening = not opening
        out.append(part)
    return "".join(out)


def english_spacing(text: str) -> str:
    """Re-attach what a WordPiece decode spaces out: `i ' m` → `i'm`, `don ' t` → `don't`,
    `ok , then .` → `ok, then.`, `( yes )` → `(yes)`, `e - mail` → `e-mail`, `5 : 30` → `5:30`,
    `p. m.` → `p.m.`, `" hi "` → `"hi"`; a continuation piece with nothing before it (`##ing`, a
    reply's first token) loses its marker."""
    text = _ORPHAN.sub("", text)
    text = _NT.sub(r"\1n't", text)
    text = _CONTRACTION.sub("'", text)
    text = _ELISION.sub(r"\1'\2", text)
    text = _BEFORE.sub(r"\1", text)
    text = _AFTER.sub(r"\1", text)
    text = _JOINED.sub(r"\1", text)
    text = _NUMBER.sub(r"\1", text)
    text = _INITIALS.sub(r"\1.\2.", text)
    text = _quotes(text)
    return re.sub(r" {2,}", " ", text).strip()


def truecase(text: str) -> str:
    """Capitalise the first letter of each sentence and the pronoun "i" (with its contractions)."""
    text = _PRONOUN.sub("I", text)
    return _SENTENCE.sub(lambda m: m.group(1) + m.group(2).upper(), text)


def decode(tokenizer: Any, ids: Sequence[int], *, truecase_text: bool = False) -> str:
    """The text of generated token IDS: special tokens dropped, WordPiece spacing repaired,
    optionally truecased."""
    text = tokenizer.decode(list(ids), skip_special_tokens=True).strip()
    if is_wordpiece(tokenizer):
        text = english_spacing(text)
    return truecase(text) if truecase_text else text
