"""The `client:` and `limits:` sections every API recipe shares, and what the engine needs from a recipe."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from personadlg.config import check
from personadlg.errors import describe_value

MAX_CONCURRENCY = 1024
"""The most requests `limits.concurrency` may keep in flight at once."""

_TOKEN_PARAMS = ("max_tokens", "max_completion_tokens")
_NUMBER_PARAMS: dict[str, tuple[float, float] | None] = {  # name -> (min, max); None: any finite
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}


def _as_number(value: Any) -> float | int | None:
    """VALUE as a number (a numeric string converted: YAML reads `1e3` as text), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return int(number) if number.is_integer() and abs(number) < 2**63 else number
    return None


def _non_finite(value: Any, path: str, depth: int = 0) -> list[tuple[str, Any]]:
    """(path, value) of each float under PATH that is not finite (NaN, inf)."""
    if isinstance(value, float) and not math.isfinite(value):
        return [(path, value)]
    if depth > 20:
        return []
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _non_finite(v, f"{path}.{k}", depth + 1)]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in _non_finite(v, f"{path}[{i}]", depth + 1)]
    return []


def check_params(params: dict[str, Any]) -> list[str]:
    """The problems of `client.params`, converting numeric strings of the known parameters in place:
    max_tokens / max_completion_tokens a positive integer; temperature (0-2), top_p (0-1),
    presence_penalty, frequency_penalty finite numbers; no NaN or infinity anywhere (null: unset)."""
    problems = []
    for name in _TOKEN_PARAMS:
        value = params.get(name)
        if value is None:
            continue
        number = _as_number(value)
        if not isinstance(number, int) or number < 1:
            problems.append(
                f"client.params.{name}: expected a positive integer, got {describe_value(value)}"
            )
        else:
            params[name] = number
    for name, bounds in _NUMBER_PARAMS.items():
        value = params.get(name)
        if value is None:
            continue
        number = _as_number(value)
        if number is None or not math.isfinite(number):
            problems.append(
                f"client.params.{name}: expected a finite number, got {describe_value(value)}"
            )
        elif bounds and not bounds[0] <= number <= bounds[1]:
            problems.append(
                f"client.params.{name}: expected a number from {bounds[0]:g} to {bounds[1]:g}, got {describe_value(value)}"
            )
        else:
            params[name] = number
    checked = {f"client.params.{n}" for n in (*_TOKEN_PARAMS, *_NUMBER_PARAMS)}
    problems += [
        f"{p}: expected a finite number, got {describe_value(v)}"
        for p, v in _non_finite(params, "client.params")
        if p not in checked
    ]
    return problems


def check_base_url(url: str | None) -> list[str]:
    """The problems of `client.base_url`: null (OpenAI) or an http(s) URL with a host and a valid port."""
    if url is None:
        return []
    where = f"client.base_url: expected an http:// or https:// URL, got {describe_value(url)}"
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # ValueError when not a number from 0 to 65535
    except ValueError as err:
        return [f"{where} ({err})"]
    if url != url.strip() or parts.scheme not in ("http", "https") or not parts.hostname:
        return [where]
    if port == 0:
        return [f"{where} (port 0)"]
    return []


@dataclass
class ClientConfig:
    """Any OpenAI-compatible endpoint, through the official `openai` client."""

    base_url: str | None = field(
        default=None,
        metadata={"help": "API base URL (OpenAI, a gateway, vLLM, Ollama ...); default: OpenAI"},
    )
    model: str = field(default="gpt-4o-mini", metadata={"help": "model name"})
    api_key_env: str | None = field(
        default="OPENAI_API_KEY",
        metadata={
            "help": "environment variable holding the API key (null: no key, e.g. a local server)"
        },
    )
    timeout: float = field(
        default=120.0,
        metadata={
            "help": "seconds a request may take in all, a slowly arriving reply included (then it is retried)"
        },
    )
    max_retries: int = field(
        default=5,
        metadata={
            "help": "retries per unit for rate limits, 5xx, timeouts, dropped connections and unparseable replies"
        },
    )
    backoff_base: float = field(
        default=1.0, metadata={"help": "first back-off in seconds (doubling, with jitter)"}
    )
    backoff_max: float = field(default=60.0, metadata={"help": "longest back-off in seconds"})
    json_mode: bool = field(default=True, metadata={"help": "ask for response_format json_object"})
    params: dict[str, Any] = field(
        default_factory=lambda: {"temperature": 1.0, "max_tokens": 1200},
        metadata={"help": "sampling parameters sent with every request"},
    )

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.timeout <= 3600:
            problems.append(
                f"client.timeout: expected seconds > 0 and at most 3600, got {self.timeout}"
            )
        if not 0 <= self.max_retries <= 100:
            problems.append(f"client.max_retries: expected 0 to 100, got {self.max_retries}")
        if not 0 <= self.backoff_base <= self.backoff_max <= 3600:
            problems.append(
                "client.backoff_base and client.backoff_max: expected 0 <= backoff_base <= "
                f"backoff_max <= 3600 seconds, got {self.backoff_base} and {self.backoff_max}"
            )
        if self.api_key_env is not None and not self.api_key_env.strip():
            problems.append(
                "client.api_key_env: expected the name of an environment variable, or null for an "
                "endpoint that needs no key; got an empty string"
            )
        if not self.model.strip():
            problems.append("client.model: expected a model name, got an empty string")
        problems += check_base_url(self.base_url)
        problems += check_params(self.params)
        check(problems)


@dataclass
class LimitsConfig:
    concurrency: int = field(
        default=8, metadata={"help": f"requests in flight at once (1-{MAX_CONCURRENCY})"}
    )
    rpm: int = field(default=0, metadata={"help": "requests per minute (0 = no limit)"})
    tpm: int = field(
        default=0,
        metadata={"help": "tokens per minute, reserving max_tokens per request (0 = no limit)"},
    )
    max_cost: float = field(
        default=0.0,
        metadata={
            "help": "stop starting new requests once the run has cost this much (0 = no limit)"
        },
    )

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            problems.append(
                f"limits.concurrency: expected 1 to {MAX_CONCURRENCY} requests in flight, got {self.concurrency}"
            )
        if not (self.rpm >= 0 and self.tpm >= 0 and self.max_cost >= 0):
            problems.append("limits.rpm, limits.tpm, limits.max_cost must be >= 0")
        check(problems)


class ApiRecipe(Protocol):
    """What the engine (client, limits, prices, estimator) needs from a recipe: synth's, profile
    infer's, method api's and the judge's all have it."""

    @property
    def client(self) -> ClientConfig: ...
    @property
    def limits(self) -> LimitsConfig: ...
    @property
    def prices(self) -> dict[str, dict[str, float]]: ...
    @property
    def mode(self) -> str: ...
    @property
    def completion_tokens_estimate(self) -> int: ...


class LiveRequests:
    """A recipe whose requests all go live (the Batch API is synth's only)."""

    @property
    def mode(self) -> str:
        return "live"


def request_params(cfg: ApiRecipe) -> dict[str, Any]:
    """The parameters sent with every request of CFG: `client.params`, and the JSON mode when asked for."""
    params = dict(cfg.client.params)
    if cfg.client.json_mode:
        params["response_format"] = {"type": "json_object"}
    return params
