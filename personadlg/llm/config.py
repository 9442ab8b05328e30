"""The `client:` and `limits:` sections every API recipe shares, and what the engine needs from a recipe."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from personadlg.config import check


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
        default=120.0, metadata={"help": "seconds before a request times out (it is then retried)"}
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
        if (
            self.timeout <= 0
            or self.max_retries < 0
            or self.backoff_base < 0
            or self.backoff_max < self.backoff_base
        ):
            problems.append(
                "client.timeout must be > 0, client.max_retries >= 0, 0 <= client.backoff_base <= client.backoff_max"
            )
        check(problems)


@dataclass
class LimitsConfig:
    concurrency: int = field(default=8, metadata={"help": "requests in flight at once"})
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
        check(
            []
            if self.concurrency >= 1 and self.rpm >= 0 and self.tpm >= 0 and self.max_cost >= 0
            else [
                "limits.concurrency must be >= 1 and limits.rpm, limits.tpm, limits.max_cost >= 0"
            ]
        )


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
