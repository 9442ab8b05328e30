"""Profile-inference recipes: the engine's `client`, `limits` and `prices`, plus a `profile:` section.

    profile:
      keys: {age: [teens, 20s, 30s], gender: [female, male], occupation: free}
      sample_utterances: 20      # of each user's assistant messages, chosen with `seed`
      max_chars: 300             # per utterance
      max_invalid: 2             # retries of replies that fail validation

RECIPE_OR_KEYS is a recipe (a YAML path or a bundled name such as `profile/infer`) or, as a
shorthand, a keys spec on top of the bundled recipe: `age=teens,20s,30s;occupation=free` or a
YAML mapping `{age: [teens, 20s], occupation: free}`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from personadlg.config import (
    apply_overrides,
    build_config,
    check,
    load_yaml_text,
    read_yaml,
    resolve_recipe,
)
from personadlg.data.synth.config import request_problems
from personadlg.errors import ConfigError
from personadlg.llm.config import ClientConfig, LimitsConfig, LiveRequests

FREE = "free"
DEFAULT_RECIPE = "profile/infer"


@dataclass
class ProfileSpec:
    """The `profile:` section: which keys to infer and from how much of each user's text."""

    keys: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "key -> list of allowed values, or 'free' for free text"},
    )
    sample_utterances: int = field(
        default=20, metadata={"help": "assistant messages of each user sent to the model"}
    )
    max_chars: int = field(
        default=300, metadata={"help": "longest utterance sent, in characters (cut beyond)"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the utterance sample"})
    template: str | None = field(
        default=None,
        metadata={
            "help": "prompt template file ($keys, $utterances, $count, $example); default: the bundled one"
        },
    )
    max_invalid: int = field(
        default=2,
        metadata={
            "help": "retries of replies that are not JSON or fail validation (within client.max_retries)"
        },
    )

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.sample_utterances <= 1_000:
            problems.append(
                f"profile.sample_utterances: expected 1 to 1,000 messages, got {self.sample_utterances}"
            )
        if not 10 <= self.max_chars <= 100_000:
            problems.append(
                f"profile.max_chars: expected 10 to 100,000 characters, got {self.max_chars}"
            )
        if not 0 <= self.max_invalid <= 100:
            problems.append(
                f"profile.max_invalid: expected 0 to 100 retries, got {self.max_invalid}"
            )
        if not 0 <= self.seed < 2**32:
            problems.append(f"profile.seed must be in [0, 2**32), got {self.seed}")
        keys: dict[str, Any] = {}
        folded: set[str] = set()
        for key, allowed in self.keys.items():
            where = f"profile.keys.{key}"
            if not key.strip() or key.casefold() in folded:
                problems.append(f"{where}: keys must be non-empty and distinct (ignoring case)")
                continue
            folded.add(key.casefold())
            if isinstance(allowed, str) and allowed.strip().lower() == FREE:
                keys[key] = FREE
                continue
            if (
                not isinstance(allowed, list)
                or not allowed
                or not all(_is_value(v) for v in allowed)
            ):
                problems.append(
                    f"{where}: expected a list of allowed values or '{FREE}', got {allowed!r}"
                )
                continue
            values = [str(v).strip() for v in allowed]
            if len({v.casefold() for v in values}) != len(values):
                problems.append(
                    f"{where}: allowed values must be distinct (ignoring case), got {values}"
                )
                continue
            keys[key] = values
        self.keys = keys
        check(problems)


def _is_value(v: Any) -> bool:
    """An allowed value: a non-empty string or a finite number (written as text)."""
    if isinstance(v, float) and not math.isfinite(v):
        return False
    return isinstance(v, (str, int, float)) and not isinstance(v, bool) and bool(str(v).strip())


@dataclass
class ProfileConfig(LiveRequests):
    """A profile-inference run: the API (`personadlg.llm`) and the `profile:` section."""

    client: ClientConfig = field(
        default_factory=lambda: ClientConfig(params={"temperature": 0.3, "max_tokens": 200})
    )
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    profile: ProfileSpec = field(default_factory=ProfileSpec)
    prices: dict[str, dict[str, float]] = field(
        default_factory=dict, metadata={"help": "model -> {input, output} USD per million tokens"}
    )
    completion_tokens_estimate: int = field(
        default=60, metadata={"help": "expected completion tokens per request, for --dry-run"}
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "the journal; default: OUTPUT.cache/ beside the output"}
    )
    source: str | None = field(default=None, metadata={"help": "(set by the loader)"})

    def __post_init__(self) -> None:
        problems = request_problems({}, self.completion_tokens_estimate, self.prices)
        if not self.profile.keys:
            problems.append(
                "profile.keys: declare at least one key, e.g. {age: [teens, 20s, 30s], occupation: free}"
            )
        check(problems)


def is_profile_recipe(data: dict[str, Any]) -> bool:
    return "method" not in data and "profile" in data


def is_keys_spec(text: str) -> bool:
    """True when RECIPE_OR_KEYS is a keys spec rather than a recipe."""
    s = str(text).strip()
    return not Path(s).exists() and (s.startswith("{") or "=" in s)


def parse_keys_spec(text: str) -> dict[str, Any]:
    """`age=teens,20s,30s;occupation=free` or `{age: [teens, 20s], occupation: free}` → {key: values | 'free'}."""
    s = text.strip()
    if s.startswith("{"):
        try:
            data = load_yaml_text(s)
        except yaml.YAMLError as err:
            raise ConfigError(
                f"keys {text!r}: not a valid YAML mapping ({getattr(err, 'problem', err)})"
            ) from None
        if not isinstance(data, dict):
            raise ConfigError(f"keys {text!r}: expected a mapping {{key: [values] or free}}")
        return {str(k): v for k, v in data.items()}
    out: dict[str, Any] = {}
    for part in s.split(";"):
        if not part.strip():
            continue
        key, sep, values = part.partition("=")
        key = key.strip()
        if not sep or not key or key in out:
            raise ConfigError(
                f"keys {text!r}: expected KEY=VALUE1,VALUE2,... or KEY=free for each key, "
                "separated by ';' (each key once), e.g. 'age=teens,20s,30s;occupation=free'"
            )
        items = [v.strip() for v in values.split(",") if v.strip()]
        out[key] = FREE if [v.lower() for v in items] == [FREE] else items
    return out


def load_profile_recipe(recipe_or_keys: str | Path, overrides: Sequence[str] = ()) -> ProfileConfig:
    """Load and validate a profile recipe, or the bundled one with the keys of a keys spec; overrides win."""
    keys = None
    if is_keys_spec(str(recipe_or_keys)):
        keys = parse_keys_spec(str(recipe_or_keys))
        path = resolve_recipe(DEFAULT_RECIPE)
    else:
        path = resolve_recipe(recipe_or_keys)
    data = read_yaml(path)
    if keys is not None:
        section = data.get("profile")
        data["profile"] = {**(section if isinstance(section, dict) else {}), "keys": keys}
    data = apply_overrides(data, overrides)
    if "method" in data:
        raise ConfigError(
            f"{path} is a training recipe (it has method: {data['method']}); use `personadlg train`"
        )
    if "profile" not in data:
        raise ConfigError(
            f"{path}: not a profile recipe (it has no `profile:` section with `keys`); "
            f"see the bundled {DEFAULT_RECIPE}"
        )
    data["source"] = str(path)
    return build_config(ProfileConfig, data, source=str(path))
