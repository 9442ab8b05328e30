"""The judge's requests: a rubric template (versioned by its hash) filled with one example, one user message each.

The request key hashes (model, messages, parameters), nothing else: the same example judged by
the same judge with the same rubric is one request, whichever file or row it comes from, and a new
template, model or parameter makes a new request.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from personadlg.data.synth.config import AspectSpec
from personadlg.llm.config import request_params
from personadlg.llm.template import load_template as _load_template
from personadlg.metrics.judge.config import KINDS, JudgeConfig

PROMPTS = Path(__file__).resolve().parents[2] / "assets" / "prompts"
PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "persona": ("persona", "profile", "context", "response"),
    "attributes": ("attribute", "aspect", "definition", "aspects", "response"),
    "coherence": ("context", "response"),
}
NONE_GIVEN = "(none given)"
NO_CONTEXT = "(none: the response opens the conversation)"
EMPTY = "(empty response)"
CUT = "…"


@dataclass(frozen=True)
class JudgeRequest:
    """One request to the judge (a `personadlg.llm` job)."""

    key: str
    name: str
    messages: tuple[dict[str, str], ...]


def load_rubric(cfg: JudgeConfig, kind: str) -> tuple[Template, str]:
    """The rubric of KIND (the recipe's template file, else the bundled one) and its tag `sha256:<16 hex>`."""
    assert kind in KINDS, kind
    path = getattr(cfg.judge.templates, kind)
    return _load_template(
        path, default=PROMPTS / f"judge_{kind}.txt", placeholders=PLACEHOLDERS[kind]
    )


def cut(text: str, max_chars: int) -> str:
    """TEXT with runs of whitespace folded, cut to MAX_CHARS characters (ending in `…` when cut)."""
    text = " ".join(str(text).split())
    return text if len(text) <= max_chars else text[: max_chars - 1].rstrip() + CUT


def render_response(response: str, max_chars: int) -> str:
    return cut(response, max_chars) or EMPTY


def render_persona(persona: list[str], max_chars: int) -> str:
    lines = [f"- {cut(s, max_chars)}" for s in persona if s and s.strip()]
    return "\n".join(lines) or NONE_GIVEN


def render_profile(profile: dict[str, Any], max_chars: int) -> str:
    lines = [
        f"- {k}: {cut(str(v), max_chars)}"
        for k, v in profile.items()
        if v is not None and str(v).strip()
    ]
    return "\n".join(lines) or NONE_GIVEN


def render_context(context: list[dict[str, str]], turns: int, max_chars: int) -> str:
    """The last TURNS turns (all when 0), one line each: `User: ...` / `Assistant: ...`."""
    shown = context[-turns:] if turns > 0 else context
    lines = [
        f"{'Assistant' if m.get('role') == 'assistant' else 'User'}: {cut(m.get('content', ''), max_chars)}"
        for m in shown
    ]
    return "\n".join(lines) or NO_CONTEXT


def has_context(context: list[dict[str, str]]) -> bool:
    return any(str(m.get("content", "")).strip() for m in context)


def has_speaker(persona: list[str], profile: dict[str, Any]) -> bool:
    """True when the example has a persona sentence or a profile value to judge against."""
    return any(s and s.strip() for s in persona) or any(
        v is not None and str(v).strip() for v in profile.values()
    )


def _definition(spec: AspectSpec | None) -> str:
    if spec is None or not (spec.description or spec.style):
        return ""
    parts = [spec.description.strip()] if spec.description else []
    if spec.style:
        parts.append(f"Style: {spec.style.strip()}.".replace("..", "."))
    return " ".join(parts)


def render_aspects(cfg: JudgeConfig, attribute: str) -> str:
    """The attribute's declared aspects, with their definitions (or a note that none are declared)."""
    declared = cfg.attributes.get(attribute)
    if not declared:
        return "(not declared: judge from the names)"
    lines = []
    for aspect, spec in declared.items():
        d = _definition(spec)
        lines.append(f"- {aspect}: {d}" if d else f"- {aspect}")
    return "\n".join(lines)


def render_definition(cfg: JudgeConfig, attribute: str, aspect: str) -> str:
    d = _definition(cfg.attributes.get(attribute, {}).get(aspect))
    return f"Definition: {d}" if d else "(no definition given: judge from the name)"


def rubric_tag(cfg: JudgeConfig) -> str:
    """`declared@sha256:<12 hex>` of the recipe's attribute space (what the attributes rubric shows), or `names`."""
    if not cfg.attributes:
        return "names"
    blob = json.dumps(
        {
            a: {k: [s.description, s.style] for k, s in aspects.items()}
            for a, aspects in cfg.attributes.items()
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return "declared@sha256:" + hashlib.sha256(blob.encode()).hexdigest()[:12]


def request(cfg: JudgeConfig, name: str, prompt: str) -> JudgeRequest:
    """The request for PROMPT (one user message); its key hashes (model, messages, parameters)."""
    messages = ({"role": "user", "content": prompt},)
    blob = json.dumps(
        {"model": cfg.client.model, "messages": messages, "params": request_params(cfg)},
        sort_keys=True,
        ensure_ascii=False,
    )
    return JudgeRequest(hashlib.sha256(blob.encode()).hexdigest(), name, messages)


def persona_prompt(
    cfg: JudgeConfig,
    template: Template,
    *,
    persona: list[str],
    profile: dict[str, Any],
    context: list[dict[str, str]],
    response: str,
) -> str:
    m = cfg.judge.max_chars
    return template.substitute(
        persona=render_persona(persona, m),
        profile=render_profile(profile, m),
        context=render_context(context, cfg.judge.context_turns, m),
        response=render_response(response, m),
    )


def attributes_prompt(
    cfg: JudgeConfig, template: Template, *, attribute: str, aspect: str, response: str
) -> str:
    return template.substitute(
        attribute=attribute,
        aspect=aspect,
        definition=render_definition(cfg, attribute, aspect),
        aspects=render_aspects(cfg, attribute),
        response=render_response(response, cfg.judge.max_chars),
    )


def coherence_prompt(
    cfg: JudgeConfig, template: Template, *, context: list[dict[str, str]], response: str
) -> str:
    m = cfg.judge.max_chars
    return template.substitute(
        context=render_context(context, cfg.judge.context_turns, m),
        response=render_response(response, m),
    )


def describe_judge_recipe(
    recipe: str | Path, overrides: Sequence[str] = ()
) -> tuple[dict[str, Any], str]:
    """`personadlg validate` of a judge recipe: (the resolved recipe, a one-line description); every
    rubric template is loaded (unknown placeholders refused). Raises ConfigError / UsageError."""
    from personadlg.config import to_dict
    from personadlg.metrics.judge.config import load_judge_recipe

    cfg = load_judge_recipe(recipe, overrides)
    tags = ", ".join(f"{k} {load_rubric(cfg, k)[1]}" for k in KINDS)
    data = {k: v for k, v in to_dict(cfg).items() if k != "source"}
    return data, f"eval --judge, {cfg.client.model}, rubrics {tags}"
