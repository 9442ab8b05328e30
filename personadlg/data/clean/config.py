"""Options of `personadlg clean`, one dataclass (the CLI flags map onto its fields)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from personadlg.config import check
from personadlg.data.stopwords import STOPWORDS
from personadlg.registry import FILTERS, did_you_mean

SCRIPTS = ("latin", "cjk", "cyrillic", "greek", "arabic", "hebrew", "devanagari", "thai", "any")
MAX_NUM_PERM = 1024
"""More permutations add no accuracy that matters (the estimate's error is ~1/sqrt(num_perm), 3% at
1,024) but cost time and 4 bytes per permutation and record."""
MAX_SHINGLE_SIZE = 32
"""Longer shingles match only verbatim passages, and each shingle word costs a pass per record."""

# field: (name in messages, lowest, highest or None). Outside, a value is meaningless (a word "run"
# of 1 is every word) or only burns time and memory (20M permutations: 30 s and 360 MB on 3 records)
_INT_RANGES: dict[str, tuple[str, int, int | None]] = {
    "min_words": ("--min-words", 0, None),
    "max_words": ("--max-words", 1, None),
    "min_assistant_turns": ("--min-assistant-turns", 0, None),
    "max_word_run": ("--max-word-run", 2, None),
    "max_ngram_repeats": ("max_ngram_repeats", 2, None),
    "persona_copy_ngram": ("--persona-copy-ngram", 2, None),
    "num_perm": ("--num-perm", 8, MAX_NUM_PERM),
    "shingle_size": ("--shingle-size", 1, MAX_SHINGLE_SIZE),
    "seed": ("seed", 0, None),
}
_SHARES = {
    "min_distinct_ratio": "min_distinct_ratio",
    "min_script_share": "--min-script-share",
    "persona_copy_max_share": "--persona-copy-max-share",
}


def _range_problems(cfg: CleanConfig) -> list[str]:
    """`--name: expected ..., got ...` for each numeric option outside its range (NaN included)."""
    problems = []
    for name, (label, lo, hi) in _INT_RANGES.items():
        value = getattr(cfg, name)
        if not (lo <= value and (hi is None or value <= hi)):
            want = f"an integer >= {lo}" if hi is None else f"an integer in {lo}..{hi}"
            problems.append(f"{label}: expected {want}, got {value}")
    for name, label in _SHARES.items():
        value = getattr(cfg, name)
        if not 0 <= value <= 1:
            problems.append(f"{label}: expected a share in [0, 1], got {value}")
    if not 0 < cfg.near_dup_threshold <= 1:
        problems.append(
            f"--near-dup-threshold: expected a similarity in (0, 1], got {cfg.near_dup_threshold}"
        )
    if not problems and cfg.max_words < cfg.min_words:
        problems.append(
            f"--max-words: expected at least --min-words ({cfg.min_words}), got {cfg.max_words}"
        )
    return problems


@dataclass
class CleanConfig:
    """What `clean` normalizes and which filters it applies, with their options."""

    enable: list[str] = field(
        default_factory=list, metadata={"help": "filters to turn on that are off by default"}
    )
    disable: list[str] = field(default_factory=list, metadata={"help": "filters to turn off"})
    # normalization
    strip_speaker_prefixes: bool = field(
        default=True,
        metadata={"help": "remove 'PersonB:', 'Assistant:', '[PersonA]:' at the start of messages"},
    )
    merge_same_role: bool = field(
        default=True, metadata={"help": "merge consecutive messages of the same role"}
    )
    # length
    min_words: int = field(default=1, metadata={"help": "shortest message, in words"})
    max_words: int = field(default=256, metadata={"help": "longest message, in words"})
    # min_turns
    min_assistant_turns: int = field(
        default=1, metadata={"help": "fewest assistant messages per dialogue"}
    )
    # refusal
    extra_refusal_patterns: list[str] = field(
        default_factory=list, metadata={"help": "more regexes marking refusals / AI disclaimers"}
    )
    # repetition
    max_word_run: int = field(
        default=5, metadata={"help": "a word repeated this many times in a row is degenerate"}
    )
    max_ngram_repeats: int = field(
        default=4,
        metadata={"help": "a 2-4-gram repeated back to back this many times is degenerate"},
    )
    min_distinct_ratio: float = field(
        default=0.25,
        metadata={"help": "distinct/total words below this (messages of 20+ words) is degenerate"},
    )
    # script / language
    script: str = field(
        default="latin", metadata={"help": "expected writing system: " + ", ".join(SCRIPTS)}
    )
    min_script_share: float = field(
        default=0.8, metadata={"help": "share of letters that must be in the expected script"}
    )
    lang: str | None = field(
        default=None,
        metadata={
            "help": f"expected language ({', '.join(STOPWORDS)}); turns the language filter on"
        },
    )
    # persona copying
    persona_copy_ngram: int = field(
        default=8,
        metadata={
            "help": "copying this many consecutive persona words (or a whole shorter sentence) counts as a copy"
        },
    )
    persona_copy_max_share: float = field(
        default=0.5,
        metadata={
            "help": "reject when more than this share of assistant messages copy the persona"
        },
    )
    # attribute space
    attributes: dict[str, list[str]] = field(
        default_factory=dict,
        metadata={"help": "declared attribute space; turns the attributes filter on"},
    )
    # near duplicates
    near_dup_threshold: float = field(
        default=0.8,
        metadata={
            "help": "estimated Jaccard similarity of word shingles above which a dialogue is a near-duplicate"
        },
    )
    num_perm: int = field(default=128, metadata={"help": "MinHash permutations"})
    shingle_size: int = field(default=3, metadata={"help": "words per shingle"})
    seed: int = field(default=1, metadata={"help": "seed of the MinHash permutations"})

    def __post_init__(self) -> None:
        problems = []
        for name in (*self.enable, *self.disable):
            if name not in FILTERS:
                problems.append(
                    f"unknown filter '{name}'{did_you_mean(name, FILTERS.names())}; filters: {', '.join(FILTERS.names())}"
                )
        if self.script not in SCRIPTS:
            problems.append(
                f"script: expected one of {', '.join(SCRIPTS)}, got {self.script!r}{did_you_mean(self.script, SCRIPTS)}"
            )
        problems += _range_problems(self)
        for pattern in self.extra_refusal_patterns:
            try:
                re.compile(pattern)
            except re.error as err:
                problems.append(
                    f"--refusal-pattern {pattern!r}: expected a regular expression, got an invalid one ({err})"
                )
        if self.lang is not None and self.lang not in STOPWORDS:
            problems.append(
                f"--lang: expected one of {', '.join(STOPWORDS)}, got {self.lang!r}"
                f"{did_you_mean(self.lang, list(STOPWORDS))}"
            )
        check(problems)

    def enabled(self) -> list[str]:
        """Names of the filters that run, in registry order."""
        on = []
        for entry in FILTERS.entries():
            default = bool(entry.meta.get("default"))
            if entry.name == "attributes" and self.attributes:
                default = True
            if entry.name == "language" and self.lang:
                default = True
            if (default or entry.name in self.enable) and entry.name not in self.disable:
                on.append(entry.name)
        return on
