"""What requests cost: the price of tokens under a recipe's `prices`, and estimates before sending."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from personadlg.llm.config import ApiRecipe
from personadlg.llm.job import Job


def price(cfg: ApiRecipe, prompt_tokens: int, completion_tokens: int) -> float:
    """USD for the tokens under `prices[model]` (half in batch mode); a negative (or NaN) count is
    charged as 0 tokens, so a cost never lowers the run's total."""
    p = cfg.prices.get(cfg.client.model, {})
    prompt_tokens = prompt_tokens if prompt_tokens >= 0 else 0
    completion_tokens = completion_tokens if completion_tokens >= 0 else 0
    usd = (prompt_tokens * p.get("input", 0.0) + completion_tokens * p.get("output", 0.0)) / 1e6
    return usd * (0.5 if cfg.mode == "batch" else 1.0)


def prompt_tokens_estimate(messages: tuple[dict[str, str], ...]) -> int:
    """Prompt tokens of a request, estimated at ~4 characters per token."""
    return sum(len(m["content"]) for m in messages) // 4 + 8


def estimate(cfg: ApiRecipe, todo: Sequence[Job]) -> dict[str, Any]:
    """Estimated prompt / completion tokens and cost of requesting TODO (what --dry-run prints)."""
    prompt = sum(prompt_tokens_estimate(u.messages) for u in todo)
    completion = len(todo) * cfg.completion_tokens_estimate
    return {
        "prompt_tokens_estimate": prompt,
        "completion_tokens_estimate": completion,
        "cost_estimate": price(cfg, prompt, completion),
        "priced": cfg.client.model in cfg.prices,
    }
