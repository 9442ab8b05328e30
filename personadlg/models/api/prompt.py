"""An example as a chat request: the system prompt template filled with the speaker's persona,
profile and attribute targets, then the context as chat messages.

Placeholders (each renders as an empty string when the example has nothing for it):
- `$persona`: the persona sentences, one `- sentence` line each; `$persona_block`: the same under
  "Your persona:";
- `$profile`: `- key: value` lines; `$profile_block`: under "About you:";
- `$attributes`: one line per target attribute, `- <attribute>: <aspect>: <style>. <description>`
  (the style and description declared in the recipe's `attributes:`); `$attributes_block`: under
  "How you speak:";
- `$aspects`: `optimistic (attitude), lyrical (language style)`; `$user_id`, `$topic`.
A template line that renders empty (a block the example has nothing for) is left out; blank lines
of the template stay. The template is versioned by its hash.
The request key hashes (model, messages, parameters with the seed, example id, target), so a rerun
recognises requests already answered, and another template, model or setting makes new ones.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from personadlg.data.attributes import target_key
from personadlg.data.schema import Example
from personadlg.data.synth.config import AspectSpec
from personadlg.errors import ConfigError
from personadlg.llm.config import request_params
from personadlg.llm.template import load_template as _load_template
from personadlg.llm.template import parse_template
from personadlg.models.api.config import ApiConfig

DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "assets" / "prompts" / "api_system.txt"
PLACEHOLDERS = (
    "persona",
    "persona_block",
    "profile",
    "profile_block",
    "attributes",
    "attributes_block",
    "aspects",
    "user_id",
    "topic",
)


@dataclass(frozen=True)
class ApiJob:
    """One (example, target) request: a `personadlg.llm` job with its own seed."""

    key: str
    index: int
    example: Example
    target: dict[str, str] | None
    seed: int
    messages: tuple[dict[str, str], ...]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        t = target_key(self.target)
        return self.example.id + (f"|{t}" if t else "")


def load_template(cfg: ApiConfig) -> tuple[Template, str]:
    """The system template (inline `prompt.system`, the file `prompt.template`, else the bundled one)
    and its tag `sha256:<first 16 hex>`; unknown placeholders are refused."""
    if cfg.prompt.system is not None:
        return parse_template(
            cfg.prompt.system, where="prompt.system", placeholders=PLACEHOLDERS, error=ConfigError
        )
    return _load_template(cfg.prompt.template, default=DEFAULT_TEMPLATE, placeholders=PLACEHOLDERS)


def _words(name: str) -> str:
    return name.replace("_", " ")


def render_attributes(target: dict[str, str], declared: dict[str, dict[str, AspectSpec]]) -> str:
    lines = []
    for attr, aspect in target.items():
        spec = declared.get(attr, {}).get(aspect)
        detail = ""
        if spec is not None:
            detail = " ".join(
                s.strip().rstrip(".") + "." for s in (spec.style, spec.description) if s.strip()
            )
        lines.append(f"- {_words(attr)}: {aspect}" + (f": {detail}" if detail else ""))
    return "\n".join(lines)


def render_system(
    template: Template,
    example: Example,
    target: dict[str, str] | None,
    declared: dict[str, dict[str, AspectSpec]],
) -> str:
    """The system prompt for EXAMPLE speaking with TARGET aspects."""
    persona = "\n".join(f"- {s.strip()}" for s in example.persona if s.strip())
    profile = "\n".join(
        f"- {_words(str(k))}: {v}" for k, v in example.profile.items() if v not in (None, "")
    )
    attributes = render_attributes(target or {}, declared)
    values = {
        "persona": persona,
        "persona_block": f"Your persona:\n{persona}" if persona else "",
        "profile": profile,
        "profile_block": f"About you:\n{profile}" if profile else "",
        "attributes": attributes,
        "attributes_block": f"How you speak:\n{attributes}" if attributes else "",
        "aspects": ", ".join(f"{asp} ({_words(a)})" for a, asp in (target or {}).items()),
        "user_id": example.user_id or "",
        "topic": example.topic or "",
    }
    lines = []
    for line in template.template.splitlines():
        text = Template(line).substitute(values)
        if text.strip() or not line.strip():  # a line emptied by its placeholders goes
            lines.append(text.rstrip())
    return "\n".join(lines).strip()


def build_messages(
    cfg: ApiConfig, template: Template, example: Example, target: dict[str, str] | None
) -> tuple[dict[str, str], ...]:
    """The system message, then the last `prompt.context_turns` context turns (all when 0), or the
    opening message when the example has no context."""
    context = [m.to_dict() for m in example.context]
    if cfg.prompt.context_turns:
        context = context[-cfg.prompt.context_turns :]
    if not context:
        context = [{"role": "user", "content": cfg.prompt.opening}]
    system = {"role": "system", "content": render_system(template, example, target, cfg.attributes)}
    return (system, *context)


def build_job(
    cfg: ApiConfig,
    template: Template,
    index: int,
    example: Example,
    target: dict[str, str] | None,
    seed: int,
) -> ApiJob:
    messages = build_messages(cfg, template, example, target)
    params = {"seed": seed} if cfg.prompt.send_seed else {}
    blob = json.dumps(
        {
            "model": cfg.client.model,
            "base_url": cfg.client.base_url,
            "messages": messages,
            "params": {**request_params(cfg), **params},
            "example": example.id,
            "target": target_key(target),
            "seed": seed,
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    key = hashlib.sha256(blob.encode()).hexdigest()
    return ApiJob(key, index, example, target, seed, messages, params)
