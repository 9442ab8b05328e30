"""Judge recipes: the engine's `client`, `limits` and `prices`, plus a `judge:` section and an optional attribute space.

    judge:
      templates: {persona: null, attributes: null, coherence: null}   # null = the bundled rubric
      context_turns: 6      # last N context turns shown to the judge (0 = all)
      max_chars: 1500       # longest text field shown (cut beyond)
      max_invalid: 2        # retries of replies that are not valid JSON or out of range
    attributes:             # optional: attribute -> aspect -> {description, style}
      attitude: {optimistic: {description: "..."}, pessimistic: {description: "..."}}

RECIPE is a YAML path or a bundled name (`judge/default`); dotted overrides (`eval --judge-set
client.model=gpt-4o`) win over the file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from personadlg.config import apply_overrides, build_config, check, read_yaml, resolve_recipe
from personadlg.data.synth.config import AspectSpec, request_problems
from personadlg.errors import ConfigError, UsageError
from personadlg.llm.config import ClientConfig, LimitsConfig, LiveRequests

DEFAULT_RECIPE = "judge/default"
KINDS = ("persona", "attributes", "coherence")


@dataclass
class JudgeTemplates:
    """A rubric template file per metric (null: the bundled `assets/prompts/judge_<name>.txt`)."""

    persona: str | None = field(
        default=None,
        metadata={"help": "judge-persona rubric ($persona, $profile, $context, $response)"},
    )
    attributes: str | None = field(
        default=None,
        metadata={
            "help": "judge-attributes rubric ($attribute, $aspect, $definition, $aspects, $response)"
        },
    )
    coherence: str | None = field(
        default=None, metadata={"help": "judge-coherence rubric ($context, $response)"}
    )


@dataclass
class JudgeSpec:
    """The `judge:` section: rubrics and what the judge is shown."""

    templates: JudgeTemplates = field(default_factory=JudgeTemplates)
    context_turns: int = field(
        default=6, metadata={"help": "last N context turns shown to the judge (0 = all)"}
    )
    max_chars: int = field(
        default=1500, metadata={"help": "longest text field shown, in characters (cut beyond)"}
    )
    max_invalid: int = field(
        default=2,
        metadata={
            "help": "retries of replies that are not JSON or out of range (within client.max_retries)"
        },
    )

    def __post_init__(self) -> None:
        check(
            []
            if self.context_turns >= 0 and self.max_chars >= 20 and self.max_invalid >= 0
            else [
                "judge.context_turns must be >= 0, judge.max_chars >= 20 and judge.max_invalid >= 0"
            ]
        )


@dataclass
class JudgeConfig(LiveRequests):
    """An LLM judge: the API (`personadlg.llm`), the rubrics, the attribute space and the cache."""

    client: ClientConfig = field(
        default_factory=lambda: ClientConfig(params={"temperature": 0, "max_tokens": 150})
    )
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    judge: JudgeSpec = field(default_factory=JudgeSpec)
    attributes: dict[str, dict[str, AspectSpec]] = field(
        default_factory=dict,
        metadata={
            "help": "optional attribute -> aspect -> {description, style}, shown in the attributes rubric"
        },
    )
    cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "the judge cache (a journal); default: $XDG_CACHE_HOME/personadlg/judge or ~/.cache/personadlg/judge"
        },
    )
    prices: dict[str, dict[str, float]] = field(
        default_factory=dict, metadata={"help": "model -> {input, output} USD per million tokens"}
    )
    completion_tokens_estimate: int = field(
        default=40, metadata={"help": "expected completion tokens per request, for --dry-run"}
    )
    source: str | None = field(default=None, metadata={"help": "(set by the loader)"})

    def __post_init__(self) -> None:
        check(request_problems(self.attributes, self.completion_tokens_estimate, self.prices))

    def cache_path(self, override: str | Path | None = None) -> Path:
        """OVERRIDE (`--judge-cache`), else `cache_dir`, else the user cache directory."""
        if override:
            return Path(override)
        if self.cache_dir:
            return Path(self.cache_dir)
        return default_cache_dir()


def check_judge_cache(cache: Path, *outputs: str | Path | None) -> None:
    """Refuse (exit 2, before any request) a judge cache that is a file, and OUTPUTS that are the
    cache folder or its journal: writing them would destroy judgements already paid for."""
    from personadlg.data.paths import same_file
    from personadlg.llm.journal import JOURNAL

    if cache.exists() and not cache.is_dir():
        raise UsageError(
            f"--judge-cache {cache}: is a file; expected a folder for the judge's journal"
        )
    for out in outputs:
        if out is None:
            continue
        for what, path in (("the judge cache", cache), ("the judge's journal", cache / JOURNAL)):
            if same_file(out, path):
                raise UsageError(
                    f"{out} is {what} ({path}); writing it would lose the judgements already "
                    "paid for — choose another output"
                )


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/personadlg/judge`, else `~/.cache/personadlg/judge`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "personadlg" / "judge"


def is_judge_recipe(data: dict[str, Any]) -> bool:
    """A judge recipe has no `method:` key and a `judge:` section."""
    return "method" not in data and "judge" in data


def load_judge_recipe(recipe: str | Path, overrides: Sequence[str] = ()) -> JudgeConfig:
    """Load and validate a judge recipe (a YAML path or a bundled name such as `judge/default`); overrides win."""
    path = resolve_recipe(recipe)
    data = apply_overrides(read_yaml(path), overrides)
    if "method" in data:
        raise ConfigError(
            f"{path} is a training recipe (it has method: {data['method']}), not a judge recipe; "
            f"see the bundled {DEFAULT_RECIPE}"
        )
    if "judge" not in data:
        raise ConfigError(
            f"{path}: not a judge recipe (it has no `judge:` section); see the bundled {DEFAULT_RECIPE}"
        )
    data["source"] = str(path)
    return build_config(JudgeConfig, data, source=str(path))
