"""`method: api` recipes: an OpenAI-compatible chat model prompted with the example's persona,
profile and attribute targets. No training; `personadlg generate RECIPE --input ... --out ...`.

    method: api
    client: {base_url: null, model: gpt-4o-mini, api_key_env: OPENAI_API_KEY, params: {temperature: 0.7, max_tokens: 100}}
    limits: {concurrency: 16, rpm: 500, tpm: 400000, max_cost: 5.0}
    prompt:
      system: |                 # a template ($persona_block, $profile_block, $attributes_block, ...)
        You are chatting with someone. $persona_block
      context_turns: 0          # last N context turns sent as chat messages (0 = all)
      seed: 0                   # base of the per-(example, target) seed sent with each request
    attributes:                 # the declared aspects, with their descriptions (synth's format)
      attitude: {optimistic: {style: ..., description: ...}, pessimistic: {...}}
    prices: {gpt-4o-mini: {input: 0.15, output: 0.60}}

The client, limits and prices are the engine's sections (one request machinery: `personadlg.llm`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from personadlg.config import apply_overrides, build_config, check, read_yaml, resolve_recipe
from personadlg.data.synth.config import AspectSpec, request_problems
from personadlg.errors import ConfigError
from personadlg.llm.config import ClientConfig, LimitsConfig, LiveRequests

METHOD = "api"


@dataclass
class ApiClientConfig(ClientConfig):
    """The engine's client section, with plain-text replies and short, conversational sampling defaults."""

    json_mode: bool = field(
        default=False,
        metadata={"help": "must stay false: a reply is the next message as plain text"},
    )
    params: dict[str, Any] = field(
        default_factory=lambda: {"temperature": 0.7, "max_tokens": 100},
        metadata={"help": "sampling parameters sent with every request (temperature, top_p, ...)"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        problems = []
        if self.json_mode:
            problems.append(
                "client.json_mode: must be false for method api (the reply is the next message, as text)"
            )
        for key in ("messages", "model", "n", "stream", "response_format"):
            if key in self.params:
                problems.append(
                    f"client.params.{key}: set by personadlg, not a sampling parameter; remove it"
                )
        check(problems)


@dataclass
class PromptSpec:
    """How an example becomes a chat request: a system prompt template and the context as messages."""

    system: str | None = field(
        default=None,
        metadata={
            "help": "the system prompt template, inline ($persona, $persona_block, $profile, $profile_block, "
            "$attributes, $attributes_block, $aspects, $user_id, $topic); default: the bundled one"
        },
    )
    template: str | None = field(
        default=None,
        metadata={"help": "a file holding the system prompt template (instead of system)"},
    )
    context_turns: int = field(
        default=0, metadata={"help": "the last N context turns sent as chat messages (0 = all)"}
    )
    opening: str = field(
        default="(The conversation starts. Say something to begin it.)",
        metadata={"help": "the user message sent when an example has no context"},
    )
    seed: int = field(
        default=0,
        metadata={"help": "base seed: each (example, target) sends its own seed derived from it"},
    )
    send_seed: bool = field(
        default=True,
        metadata={
            "help": "send the per-example seed as the request's `seed` (false for servers without it)"
        },
    )
    max_invalid: int = field(
        default=2, metadata={"help": "retries of empty replies (within client.max_retries)"}
    )

    def __post_init__(self) -> None:
        problems = []
        if self.system is not None and self.template is not None:
            problems.append(
                "prompt: give prompt.system (inline) or prompt.template (a file), not both"
            )
        if self.context_turns < 0 or self.max_invalid < 0:
            problems.append("prompt.context_turns and prompt.max_invalid must be >= 0")
        if not 0 <= self.seed < 2**31:
            problems.append(f"prompt.seed must be in [0, 2**31), got {self.seed}")
        if not self.opening.strip():
            problems.append("prompt.opening: expected a non-empty message")
        check(problems)


@dataclass
class ApiConfig(LiveRequests):
    """An api generation recipe."""

    method: str = METHOD
    client: ApiClientConfig = field(default_factory=ApiClientConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    prompt: PromptSpec = field(default_factory=PromptSpec)
    attributes: dict[str, dict[str, AspectSpec]] = field(
        default_factory=dict,
        metadata={
            "help": "attribute -> aspect -> {style, description} (the declared space of --attributes / --all-combinations)"
        },
    )
    prices: dict[str, dict[str, float]] = field(
        default_factory=dict, metadata={"help": "model -> {input, output} USD per million tokens"}
    )
    completion_tokens_estimate: int = field(
        default=40, metadata={"help": "expected completion tokens per request, for --dry-run"}
    )
    cache_dir: str | None = field(
        default=None,
        metadata={"help": "the request journal; default: OUT.cache/ beside the output"},
    )
    source: str | None = field(default=None, metadata={"help": "(set by the loader)"})

    def __post_init__(self) -> None:
        problems = []
        if self.method != METHOD:
            problems.append(f"method: expected {METHOD}, got {self.method!r}")
        problems += request_problems(self.attributes, self.completion_tokens_estimate, self.prices)
        check(problems)

    @property
    def space(self) -> dict[str, list[str]]:
        """The declared attribute space {attribute: [aspects]}."""
        return {a: list(aspects) for a, aspects in self.attributes.items()}


def is_api_recipe(data: dict[str, Any]) -> bool:
    return data.get("method") == METHOD


RECIPE_KEYS = (
    "method",
    "client",
    "limits",
    "prompt",
    "attributes",
    "prices",
    "completion_tokens_estimate",
    "cache_dir",
)
# generate's short decoding keys, mapped onto the recipe (the rest of a bare KEY goes to client.params)
SHORT_KEYS = {"max_new_tokens": "client.params.max_tokens", "seed": "prompt.seed"}
IGNORED_KEYS = ("batch_size",)


def recipe_overrides(overrides: Sequence[str]) -> list[str]:
    """`generate`'s KEY=VALUE for a recipe: dotted keys and the recipe's sections as given
    (`client.model=...`, `prices={...}`), any other bare key is a
    sampling parameter (`temperature=0.2` → client.params.temperature; max_new_tokens → max_tokens,
    seed → prompt.seed; batch_size is ignored: requests are concurrent, `limits.concurrency`)."""
    out = []
    for o in overrides:
        key, sep, value = o.partition("=")
        key = key.removeprefix("generate.")
        if not sep or "." in key or key in RECIPE_KEYS:
            out.append(o)
        elif key in IGNORED_KEYS:
            continue
        else:
            out.append(f"{SHORT_KEYS.get(key, 'client.params.' + key)}={value}")
    return out


def find_api_recipe(ref: str | Path, *, command: str = "generate") -> Path | None:
    """The recipe file when REF (a path or a bundled name such as `api/persona`) is an api recipe;
    None when it is a directory or not a recipe. A training recipe is refused with a hint."""
    p = Path(ref)
    if p.is_dir():
        return None
    if p.is_file():
        if p.suffix not in (".yaml", ".yml"):
            return None
        path = p
    else:
        try:
            path = resolve_recipe(ref)
        except ConfigError:
            return None
    data = read_yaml(path)
    if is_api_recipe(data):
        return path
    method = data.get("method")
    raise ConfigError(
        f"{path}: a {method or 'non-api'} recipe; {command} takes a trained checkpoint (train it with "
        f"`personadlg train {ref}`, then pass RUN/final) or a `method: api` recipe such as api/persona"
    )


def load_api_recipe(recipe: str | Path, overrides: Sequence[str] = ()) -> ApiConfig:
    """Load and validate an api recipe (a YAML path or a bundled name such as `api/persona`)."""
    path = resolve_recipe(recipe)
    data = apply_overrides(read_yaml(path), overrides)
    if not is_api_recipe(data):
        raise ConfigError(f"{path}: not an api recipe (expected `method: api`)")
    data["source"] = str(path)
    return build_config(ApiConfig, data, source=str(path))
