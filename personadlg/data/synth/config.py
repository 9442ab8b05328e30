"""Synth recipes: the client, limits, attribute space, targets, topics and output of a synthesis run.

A synth recipe is YAML with the sections below (no `method:` key). `load_synth_recipe` applies
dotted overrides and validates like training recipes do. The `client:` and `limits:` sections are
the engine's (`personadlg.llm.config`); the aspect format (`AspectSpec`) and `request_problems` are
shared with the other API recipes (method api, the judge).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from personadlg.config import apply_overrides, build_config, check, read_yaml, resolve_recipe
from personadlg.errors import ConfigError
from personadlg.llm.config import ClientConfig, LimitsConfig
from personadlg.llm.paths import cache_dir

PRICE_KEYS = ("input", "output")


def request_problems(
    attributes: dict[str, dict[str, Any]],
    completion_tokens_estimate: int,
    prices: dict[str, dict[str, float]] | None = None,
) -> list[str]:
    """The checks every API recipe shares: each declared attribute has aspects, the estimate is
    positive, each price is a known key with a value >= 0."""
    problems = [
        f"attributes.{attr}: expected at least one aspect"
        for attr, aspects in attributes.items()
        if not aspects
    ]
    if completion_tokens_estimate < 1:
        problems.append(
            f"completion_tokens_estimate: expected a number of tokens >= 1, got {completion_tokens_estimate}"
        )
    for model, p in (prices or {}).items():
        for key, usd in p.items():
            if key not in PRICE_KEYS:
                problems.append(
                    f"prices.{model}.{key}: unknown price; expected {' or '.join(PRICE_KEYS)} "
                    "(USD per million tokens)"
                )
            elif not usd >= 0:
                problems.append(f"prices.{model}.{key}: expected USD >= 0, got {usd}")
    return problems


@dataclass
class AspectSpec:
    """How the assistant shows one aspect."""

    description: str = field(
        default="",
        metadata={"help": "one to three sentences describing the speaker with this aspect"},
    )
    style: str = field(
        default="",
        metadata={"help": "how the speaker answers, e.g. 'answers in vivid, poetic images'"},
    )
    example: dict[str, str] = field(
        default_factory=dict,
        metadata={"help": "optional example exchange {user: ..., assistant: ...}"},
    )


@dataclass
class TurnsConfig:
    min: int = field(default=4, metadata={"help": "fewest user/assistant exchanges"})
    max: int = field(default=6, metadata={"help": "most user/assistant exchanges"})

    def __post_init__(self) -> None:
        check(
            []
            if 1 <= self.min <= self.max
            else [f"need 1 <= turns.min <= turns.max, got {self.min} and {self.max}"]
        )


@dataclass
class BatchConfig:
    """How `--mode batch` splits its requests into files and waits for them."""

    max_requests: int = field(
        default=50_000, metadata={"help": "requests per batch file (the API allows 50,000)"}
    )
    max_bytes: int = field(
        default=190_000_000, metadata={"help": "bytes per batch file (the API allows 200 MB)"}
    )
    poll_interval: float = field(
        default=30.0, metadata={"help": "seconds between status checks of --collect"}
    )
    collect_timeout: float = field(
        default=0.0,
        metadata={"help": "--collect waits at most this long for running batches (0 = check once)"},
    )

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.max_requests <= 50_000:
            problems.append(f"batch.max_requests: expected 1 to 50,000, got {self.max_requests}")
        if not 1_000 <= self.max_bytes <= 200_000_000:
            problems.append(
                f"batch.max_bytes: expected 1,000 to 200,000,000 bytes, got {self.max_bytes}"
            )
        if not 0 < self.poll_interval <= 3600:
            problems.append(
                f"batch.poll_interval: expected seconds > 0 and at most 3600, got {self.poll_interval}"
            )
        if not 0 <= self.collect_timeout <= 7 * 86400:
            problems.append(
                f"batch.collect_timeout: expected 0 to 604,800 seconds, got {self.collect_timeout}"
            )
        check(problems)


@dataclass
class SynthConfig:
    """A synthesis run."""

    client: ClientConfig = field(default_factory=ClientConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    attributes: dict[str, dict[str, AspectSpec]] = field(
        default_factory=dict,
        metadata={"help": "attribute -> aspect -> description / style / example"},
    )
    targets: Any = field(
        default="aspects",
        metadata={
            "help": "'aspects' (one per aspect), 'combinations' (one aspect of every attribute) or a list of {attribute: aspect}"
        },
    )
    topics: str | None = field(
        default=None,
        metadata={
            "help": "topic file: one per line, or JSONL {topic, persona}; default: the bundled list"
        },
    )
    max_topics: int = field(default=0, metadata={"help": "use only the first N topics (0 = all)"})
    per_target: int = field(default=1, metadata={"help": "dialogues per (topic, target)"})
    turns: TurnsConfig = field(default_factory=TurnsConfig)
    template: str | None = field(
        default=None,
        metadata={
            "help": "prompt template file ($topic, $style, $description, $examples, $aspects, $min_turns, $max_turns); default: the bundled one"
        },
    )
    output: str = field(
        default="synth/dialogues.jsonl",
        metadata={"help": "dialogues JSONL (rewritten atomically from the journal)"},
    )
    cache_dir: str | None = field(
        default=None,
        metadata={"help": "journal and batch state; default: OUTPUT.cache/ beside the output"},
    )
    mode: Literal["live", "batch"] = field(
        default="live", metadata={"help": "live requests, or the OpenAI Batch API (half price)"}
    )
    prices: dict[str, dict[str, float]] = field(
        default_factory=dict, metadata={"help": "model -> {input, output} USD per million tokens"}
    )
    completion_tokens_estimate: int = field(
        default=600, metadata={"help": "expected completion tokens per request, for --dry-run"}
    )
    batch: BatchConfig = field(default_factory=BatchConfig)
    source: str | None = field(default=None, metadata={"help": "(set by the loader)"})

    def __post_init__(self) -> None:
        problems = []
        if not self.attributes:
            problems.append("attributes: declare at least one attribute with its aspects")
        for attr, aspects in self.attributes.items():
            if len(aspects) < 1:
                problems.append(f"attributes.{attr}: expected at least one aspect")
        if self.per_target < 1:
            problems.append(f"per_target must be >= 1, got {self.per_target}")
        if self.max_topics < 0:
            problems.append(
                f"max_topics: expected 0 (all) or a number of topics, got {self.max_topics}"
            )
        if not self.output.strip():
            problems.append("output: expected a file path, got an empty string")
        problems += request_problems({}, self.completion_tokens_estimate, self.prices)
        try:
            self.target_list()
        except ConfigError as err:
            problems.extend(err.problems)
        check(problems)

    def target_list(self) -> list[dict[str, str]]:
        """The target aspect combinations to synthesize."""
        if self.targets == "aspects":
            return [{a: asp} for a, aspects in self.attributes.items() for asp in aspects]
        if self.targets == "combinations":
            names = list(self.attributes)
            return [
                dict(zip(names, combo))
                for combo in itertools.product(*(list(self.attributes[n]) for n in names))
            ]
        if isinstance(self.targets, list) and all(isinstance(t, dict) and t for t in self.targets):
            for t in self.targets:
                for a, asp in t.items():
                    if a not in self.attributes or asp not in self.attributes[a]:
                        raise ConfigError(f"targets: {a}={asp} is not a declared attribute aspect")
            return [dict(t) for t in self.targets]
        raise ConfigError(
            f"targets: expected 'aspects', 'combinations' or a list of {{attribute: aspect}}, got {self.targets!r}"
        )

    @property
    def output_path(self) -> Path:
        return Path(self.output)

    @property
    def cache_path(self) -> Path:
        return cache_dir(self.output_path, self.cache_dir)


SYNTH_KEYS = (
    "client",
    "limits",
    "attributes",
    "targets",
    "topics",
    "per_target",
    "turns",
    "template",
    "output",
    "cache_dir",
    "mode",
    "prices",
)


def is_synth_recipe(data: dict[str, Any]) -> bool:
    return (
        "method" not in data
        and "profile" not in data  # a `personadlg profile infer` recipe
        and "judge" not in data  # an `eval --judge` recipe
        and any(k in data for k in ("client", "targets", "attributes"))
    )


def load_synth_recipe(
    recipe: str | Path, overrides: list[str] | tuple[str, ...] = ()
) -> SynthConfig:
    """Load and validate a synth recipe (a YAML path or a bundled name such as `synth/miracle`)."""
    path = resolve_recipe(recipe)
    data = apply_overrides(read_yaml(path), overrides)
    if "method" in data:
        raise ConfigError(
            f"{path} is a training recipe (it has method: {data['method']}); use `personadlg train`"
        )
    data["source"] = str(path)
    return build_config(SynthConfig, data, source=str(path))
