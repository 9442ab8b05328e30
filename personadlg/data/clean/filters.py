"""Record-level clean filters. Each is `(dialogue, config) -> reason | None` (None keeps the record).

Dedup filters need the whole stream and live in `dedup.py`. Filters are registered by name in
`personadlg.registry.FILTERS`; their options are fields of `CleanConfig`.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

from personadlg.data.clean.config import CleanConfig
from personadlg.data.schema import Dialogue
from personadlg.data.stopwords import STOPWORDS
from personadlg.registry import did_you_mean

WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)


@lru_cache(maxsize=8192)
def words(text: str) -> tuple[str, ...]:
    """Lower-cased word tokens (letters and digits; apostrophes inside words kept). Cached: filters share them."""
    return tuple(WORD.findall(text.lower()))


def dialogue_words(d: Dialogue) -> list[str]:
    """Word tokens of all messages of D, in order (built from the per-message cache)."""
    return [t for m in d.messages for t in words(m.content)]


def _nwords(text: str) -> int:
    return len(text.split())


# -- length, min_turns ----------------------------------------------------------------------------


def length(d: Dialogue, cfg: CleanConfig) -> str | None:
    for i, m in enumerate(d.messages):
        n = _nwords(m.content)
        if n < cfg.min_words:
            return f"messages[{i}] ({m.role}) has {n} words, fewer than {cfg.min_words}"
        if n > cfg.max_words:
            return f"messages[{i}] ({m.role}) has {n} words, more than {cfg.max_words}"
    return None


def min_turns(d: Dialogue, cfg: CleanConfig) -> str | None:
    n = sum(1 for m in d.messages if m.role == "assistant")
    if n < cfg.min_assistant_turns:
        return f"{n} assistant message(s), fewer than {cfg.min_assistant_turns}"
    return None


# -- refusals / AI disclaimers --------------------------------------------------------------------

REFUSAL_PATTERNS = [
    r"\bas an? (?:ai|artificial intelligence)\b",
    r"\bas an? (?:large )?language model\b",
    r"\bi(?:'m| am) (?:just |only )?an? (?:ai|artificial intelligence|language model|chatbot|virtual assistant)\b",
    r"\bi (?:do not|don't) have (?:personal )?(?:experiences|opinions|feelings|emotions|preferences|a body)\b",
    r"\bi (?:cannot|can't|am unable to|'m unable to) (?:fulfill|comply with|assist with|help with) (?:that|this|your)\b",
    r"\bi(?:'m| am) sorry,? but i (?:cannot|can't|am unable|'m unable|won't)\b",
    r"\b(?:openai|chatgpt|gpt-[34]|my training data|my knowledge cutoff)\b",
]


@lru_cache(maxsize=16)
def _refusal_re(extra: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in (*REFUSAL_PATTERNS, *extra)), re.IGNORECASE)


def refusal(d: Dialogue, cfg: CleanConfig) -> str | None:
    pattern = _refusal_re(tuple(cfg.extra_refusal_patterns))
    for i, m in enumerate(d.messages):
        if m.role != "assistant":
            continue
        hit = pattern.search(m.content.replace("’", "'"))
        if hit:
            return f"messages[{i}] contains {hit.group(0)!r}"
    return None


# -- degenerate repetition ------------------------------------------------------------------------


def repetition_reason(tokens: Sequence[str], cfg: CleanConfig) -> str | None:
    """Why a token list is degenerate: a word run, a looping n-gram, or too few distinct words.

    An n-gram repeated k times back to back means tokens[i] == tokens[i + n] for (k - 1) * n
    consecutive positions, so each order n costs one linear pass.
    """
    run = 1
    for a, b in itertools.pairwise(tokens):
        run = run + 1 if a == b else 1
        if run >= cfg.max_word_run:
            return f"the word {a!r} repeats {run} times in a row"
    for n in (2, 3, 4):
        need = (cfg.max_ngram_repeats - 1) * n
        if len(tokens) < need + n:
            break
        run = 0
        for i, (a, b) in enumerate(zip(tokens, tokens[n:])):
            run = run + 1 if a == b else 0
            if run >= need:
                gram = tokens[i - need + 1 : i - need + 1 + n]
                if len(set(gram)) > 1:
                    return f"{' '.join(gram)!r} repeats {cfg.max_ngram_repeats} times in a row"
    if len(tokens) >= 20 and len(set(tokens)) / len(tokens) < cfg.min_distinct_ratio:
        return f"only {len(set(tokens))} distinct words out of {len(tokens)}"
    return None


def repetition(d: Dialogue, cfg: CleanConfig) -> str | None:
    for i, m in enumerate(d.messages):
        reason = repetition_reason(words(m.content), cfg)
        if reason:
            return f"messages[{i}]: {reason}"
    return None


# -- writing system and language -------------------------------------------------------------------

_SCRIPT_OF_NAME = {
    "LATIN": "latin",
    "CJK": "cjk",
    "HIRAGANA": "cjk",
    "KATAKANA": "cjk",
    "HANGUL": "cjk",
    "BOPOMOFO": "cjk",
    "CYRILLIC": "cyrillic",
    "GREEK": "greek",
    "ARABIC": "arabic",
    "HEBREW": "hebrew",
    "DEVANAGARI": "devanagari",
    "THAI": "thai",
}


_ASCII_LETTER = re.compile(r"[A-Za-z]")


@lru_cache(maxsize=65536)
def script_of(ch: str) -> str | None:
    """The script family of a letter, or None for non-letters."""
    if ch.isascii():
        return "latin" if ch.isalpha() else None
    if not ch.isalpha():
        return None
    name = unicodedata.name(ch, "")
    return _SCRIPT_OF_NAME.get(name.split(" ", 1)[0], "other")


def script_shares(text: str) -> dict[str, float]:
    """Share of letters per script family."""
    counts: dict[str, int] = {}
    total = 0
    if text.isascii():
        return {"latin": 1.0} if _ASCII_LETTER.search(text) else {}
    for ch in text:
        s = script_of(ch)
        if s is not None:
            counts[s] = counts.get(s, 0) + 1
            total += 1
    return {k: v / total for k, v in counts.items()} if total else {}


def script(d: Dialogue, cfg: CleanConfig) -> str | None:
    if cfg.script == "any":
        return None
    text = " ".join(m.content for m in d.messages)
    shares = script_shares(text)
    if not shares:
        return None
    share = shares.get(cfg.script, 0.0)
    if share < cfg.min_script_share:
        top = max(shares, key=lambda k: shares[k])
        return f"{share:.0%} of letters are {cfg.script} (need {cfg.min_script_share:.0%}); most are {top} ({shares[top]:.0%})"
    return None


def language_scores(tokens: Sequence[str]) -> dict[str, float]:
    """Share of tokens that are stop words of each language."""
    n = len(tokens) or 1
    return {lang: sum(1 for t in tokens if t in sw) / n for lang, sw in STOPWORDS.items()}


def language(d: Dialogue, cfg: CleanConfig) -> str | None:
    if not cfg.lang:
        return None
    if cfg.lang not in STOPWORDS:
        raise ValueError(
            f"--lang {cfg.lang!r} is not supported{did_you_mean(cfg.lang, list(STOPWORDS))}; supported: {', '.join(STOPWORDS)}"
        )
    tokens = dialogue_words(d)
    if len(tokens) < 8:
        return None
    scores = language_scores(tokens)
    best = max(scores, key=lambda k: scores[k])
    if best != cfg.lang and scores[best] > scores[cfg.lang] + 0.05:
        return f"looks like {best} ({scores[best]:.0%} {best} stop words vs {scores[cfg.lang]:.0%} {cfg.lang})"
    if scores[cfg.lang] < 0.08:
        return f"only {scores[cfg.lang]:.0%} of words are {cfg.lang} stop words"
    return None


# -- persona copying ---------------------------------------------------------------------------------


def copied_spans(message: Sequence[str], persona: list[tuple[str, ...]], ngram: int) -> list[str]:
    """Persona word sequences copied into MESSAGE: runs of >= NGRAM words, or whole sentences shorter than that (3+ words)."""
    grams: set[tuple[str, ...]] = set()
    for sent in persona:
        if len(sent) < ngram:
            if len(sent) >= 3:
                grams.add(tuple(sent))
        else:
            grams.update(tuple(sent[i : i + ngram]) for i in range(len(sent) - ngram + 1))
    if not grams:
        return []
    sizes = sorted({len(g) for g in grams})
    hits = []
    for n in sizes:
        for i in range(len(message) - n + 1):
            g = tuple(message[i : i + n])
            if g in grams:
                hits.append(" ".join(g))
    return hits


def persona_copy(d: Dialogue, cfg: CleanConfig) -> str | None:
    if not d.persona:
        return None
    persona = [words(p) for p in d.persona]
    assistant = [(i, m.content) for i, m in enumerate(d.messages) if m.role == "assistant"]
    copies = [
        (i, spans[0])
        for i, text in assistant
        if (spans := copied_spans(words(text), persona, cfg.persona_copy_ngram))
    ]
    if assistant and len(copies) / len(assistant) > cfg.persona_copy_max_share:
        i, span = copies[0]
        return f"{len(copies)} of {len(assistant)} assistant messages copy the persona (e.g. messages[{i}]: {span!r})"
    return None


# -- attribute space ----------------------------------------------------------------------------------


def attributes(d: Dialogue, cfg: CleanConfig) -> str | None:
    space = cfg.attributes
    if not space:
        return None
    for attr, aspect in d.attributes.items():
        if attr not in space:
            return f"unknown attribute {attr!r}{did_you_mean(attr, list(space))}; declared: {', '.join(space)}"
        if aspect not in space[attr]:
            return f"unknown aspect {aspect!r} of {attr}{did_you_mean(aspect, space[attr])}; declared: {', '.join(space[attr])}"
    return None
