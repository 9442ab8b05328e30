"""The request for one user: the prompt template (versioned by its hash) filled with the keys and the user's utterances.

The request key hashes (user, model, messages, parameters), so a rerun recognises users already
paid for, and new utterances, keys, template or parameters make a new request.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from personadlg.data.profile.config import FREE, ProfileConfig
from personadlg.llm.config import request_params
from personadlg.llm.template import load_template as _load_template

DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "assets" / "prompts" / "profile_infer.txt"
PLACEHOLDERS = ("keys", "utterances", "count", "example")


@dataclass(frozen=True)
class UserRequest:
    """One user's request (a `personadlg.llm` job)."""

    key: str
    user_id: str
    messages: tuple[dict[str, str], ...]

    @property
    def name(self) -> str:
        return self.user_id


def load_template(path: str | Path | None) -> tuple[Template, str]:
    """The template (PATH, else the bundled one) and its tag `sha256:<first 16 hex>`."""
    return _load_template(path, default=DEFAULT_TEMPLATE, placeholders=PLACEHOLDERS)


def render_keys(keys: dict[str, Any]) -> str:
    lines = []
    for key, allowed in keys.items():
        if allowed == FREE:
            lines.append(f"- {key}: free text, a few words")
        else:
            lines.append(f"- {key}: one of " + ", ".join(json.dumps(v) for v in allowed))
    return "\n".join(lines)


def render_prompt(template: Template, keys: dict[str, Any], utterances: list[str]) -> str:
    return template.substitute(
        keys=render_keys(keys),
        utterances="\n".join(f"{i}. {u}" for i, u in enumerate(utterances, 1)),
        count=len(utterances),
        example=json.dumps({k: "..." for k in keys}, ensure_ascii=False),
    )


def build_request(
    cfg: ProfileConfig, template: Template, user_id: str, utterances: list[str]
) -> UserRequest:
    messages = ({"role": "user", "content": render_prompt(template, cfg.profile.keys, utterances)},)
    blob = json.dumps(
        {
            "user_id": user_id,
            "model": cfg.client.model,
            "messages": messages,
            "params": request_params(cfg),
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return UserRequest(hashlib.sha256(blob.encode()).hexdigest(), user_id, messages)
