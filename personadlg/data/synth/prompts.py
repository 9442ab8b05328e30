"""Prompts for synthesis: a text template with `$placeholders`, versioned by its hash, and the units to request.

A unit is (topic, target aspects, index). Its key is a hash of (model, messages, parameters, index),
so a rerun recognises units already paid for, and editing the template or the parameters makes new
units instead of silently reusing old replies.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from personadlg.data.attributes import target_key
from personadlg.data.jsonl import Bad, JsonValueError, check_nonempty, iter_text_lines, parse_json
from personadlg.data.synth.config import SynthConfig
from personadlg.errors import DataError
from personadlg.llm.config import request_params
from personadlg.llm.template import load_template as _load_template

DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "assets" / "prompts" / "synth_dialogue.txt"
PLACEHOLDERS = ("topic", "style", "description", "examples", "aspects", "min_turns", "max_turns")


@dataclass(frozen=True)
class Topic:
    text: str
    persona: tuple[str, ...] = ()


@dataclass(frozen=True)
class Unit:
    """One dialogue to request."""

    key: str
    topic_index: int
    topic: Topic
    target: dict[str, str]
    index: int
    messages: tuple[dict[str, str], ...]

    @property
    def name(self) -> str:
        """Human-readable unit id: `t00012|attitude=optimistic|0`."""
        return f"t{self.topic_index:05d}|{target_key(self.target)}|{self.index}"


def load_template(path: str | Path | None) -> tuple[Template, str]:
    """The synth template (PATH, else the bundled one) and its tag `sha256:<first 16 hex>`."""
    return _load_template(path, default=DEFAULT_TEMPLATE, placeholders=PLACEHOLDERS)


def load_topics(path: str | Path | None) -> list[Topic]:
    """Topics: one per line, or JSONL `{"topic": ..., "persona": [...]}`; default: the bundled list."""
    from personadlg.assets import topics as bundled

    p = Path(path) if path else bundled()
    check_nonempty(p)
    out = []
    for item in iter_text_lines(p):
        if isinstance(item, Bad):
            raise item.error
        line, text = item
        if not text.strip():
            continue
        if text.lstrip().startswith("{"):
            try:
                obj = parse_json(text)
            except JsonValueError as err:
                raise DataError(str(err), path=str(p), line=line) from None
            except json.JSONDecodeError as err:
                raise DataError(f"not valid JSON: {err.msg}", path=str(p), line=line) from None
            except ValueError as err:
                raise DataError(f"not valid JSON: {err}", path=str(p), line=line) from None
            topic = obj.get("topic") if isinstance(obj, dict) else None
            if not isinstance(topic, str) or not topic.strip():
                raise DataError(field="topic", expected="a non-empty string", got=topic).at(
                    path=str(p), line=line
                )
            persona = obj.get("persona") or []
            if not isinstance(persona, list) or not all(isinstance(s, str) for s in persona):
                raise DataError(field="persona", expected="a list of strings", got=persona).at(
                    path=str(p), line=line
                )
            out.append(Topic(topic.strip(), tuple(persona)))
        else:
            out.append(Topic(text.strip()))
    return out


def render_prompt(
    cfg: SynthConfig, template: Template, topic: Topic, target: dict[str, str]
) -> str:
    specs = [cfg.attributes[a][asp] for a, asp in target.items()]
    examples = [s.example for s in specs if s.example.get("user") and s.example.get("assistant")]
    ex_text = ""
    if examples:
        ex_text = (
            "\nFor example, in the Assistant's voice:\n"
            + "\n".join(f"User: {e['user']}\nAssistant: {e['assistant']}" for e in examples)
            + "\n"
        )
    return template.substitute(
        topic=topic.text,
        style=" and ".join(s.style or "speaks naturally" for s in specs),
        description=" ".join(s.description for s in specs if s.description),
        examples=ex_text,
        aspects=", ".join(f"{asp} ({a.replace('_', ' ')})" for a, asp in target.items()),
        min_turns=cfg.turns.min,
        max_turns=cfg.turns.max,
    )


def unit_key(
    model: str,
    messages: tuple[dict[str, str], ...],
    params: dict[str, Any],
    index: int,
    persona: tuple[str, ...] = (),
) -> str:
    """The unit's journal key: a hash of its request, its index and (when given) the persona its
    record carries (two topics with one prompt and different personas are two units)."""
    fields: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "params": params,
        "index": index,
    }
    if persona:
        fields["persona"] = list(persona)
    blob = json.dumps(fields, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def iter_units(cfg: SynthConfig, template: Template, topics: list[Topic]) -> Iterator[Unit]:
    """Every (topic, target, index) unit of the recipe, in a stable order."""
    params = request_params(cfg)
    for ti, topic in enumerate(topics[: cfg.max_topics or None]):
        for target in cfg.target_list():
            prompt = render_prompt(cfg, template, topic, target)
            messages = ({"role": "user", "content": prompt},)
            for i in range(cfg.per_target):
                key = unit_key(cfg.client.model, messages, params, i, topic.persona)
                yield Unit(key, ti, topic, target, i, messages)
