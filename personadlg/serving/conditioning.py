"""A chat-completions request → what the method generates from: the example, the attribute
targets, the decoding settings and one seed per choice; and the `personadlg` echo of the reply.

Messages. The last message must be the user's. Every other `user` / `assistant` message is the
context, in order (the assistant is the personalized speaker, as in the dialogue records).
`system` (or `developer`) messages are not dialogue turns: when the request gives no `persona`,
their text becomes the persona — split into sentences at line breaks and after `.`, `!`, `?` — so
an ordinary OpenAI client can set a persona with a system prompt; when `persona` is given they
are ignored (the echo's notes say so).

Conditioning fields (the `openai` client's `extra_body`): `persona` (sentences), `profile`
(key → string, number or list of strings), `attributes` (attribute → aspect, checked against the
checkpoint's declared space), and OpenAI's own `user`, which selects a lora user's adapter (and
that user's profile from the adapters' index when no `profile` is given; an unknown user is
answered by the base model and the echo says so). Fields a model does not use are accepted and
noted in the echo.

Seeds. Choice i of a request is generated with `choice_seed(seed, i)`; without `seed` the server
draws a fresh random base seed for the request and reports it, so any reply can be reproduced by
sending its `personadlg.seed` back. Each example samples from its own generator
(`models/decoding.py`), so a reply does not depend on the requests it was batched with.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from personadlg.config import GenerateConfig, build_config, to_dict
from personadlg.data.schema import Example, Message
from personadlg.errors import ConfigError
from personadlg.registry import did_you_mean
from personadlg.serving.protocol import ChatCompletionRequest, bad_request
from personadlg.serving.registry import ServedModel

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\s*\n\s*")


@dataclass
class Conditioning:
    """What a request asks the model to be and to answer."""

    context: list[Message]
    persona: list[str] = field(default_factory=list)
    persona_source: str = "none"
    """request, system (the system messages' text) or none."""
    profile: dict[str, Any] = field(default_factory=dict)
    profile_source: str = "none"
    """request, adapter (the lora user's profile from the adapters' index) or none."""
    attributes: dict[str, str] | None = None
    user: str | None = None
    notes: list[str] = field(default_factory=list)


def persona_sentences(text: str) -> list[str]:
    """A system message's text as persona sentences."""
    return [s.strip() for s in _SENTENCE.split(text) if s and s.strip()]


def read_conditioning(req: ChatCompletionRequest, served: ServedModel) -> Conditioning:
    """The request's context and conditioning, validated against SERVED (400 naming the field)."""
    context: list[Message] = []
    system: list[str] = []
    for i, m in enumerate(req.messages):
        text = m.text(i)
        if m.role in ("system", "developer"):
            system.append(text)
        else:
            context.append(Message(m.role, text))
    last = len(req.messages) - 1
    if req.messages[last].role != "user":
        raise bad_request(
            f"messages[{last}].role: the last message must be the user's (got {req.messages[last].role!r}); "
            "the model writes the assistant's reply to it",
            param=f"messages[{last}].role",
        )
    if not context[-1].content.strip():
        raise bad_request(
            f"messages[{last}].content: the user's message is empty",
            param=f"messages[{last}].content",
        )
    cond = Conditioning(context=context, user=req.user)
    supports = served.supports
    if req.persona is not None:
        cond.persona = [s.strip() for s in req.persona if s.strip()]
        cond.persona_source = "request" if cond.persona else "none"
        if system:
            cond.notes.append("system messages ignored: the request gives persona")
    elif system:
        cond.persona = [s for text in system for s in persona_sentences(text)]
        cond.persona_source = "system" if cond.persona else "none"
    if cond.persona and "persona" not in supports:
        cond.notes.append(f"this {served.method} model does not use the persona")
    if req.profile is not None:
        cond.profile = check_profile(req.profile)
        cond.profile_source = "request" if cond.profile else "none"
    if req.attributes:
        check_attributes(req.attributes, served.attribute_space)
        cond.attributes = dict(req.attributes)
        if "attributes" not in supports:
            cond.notes.append(f"this {served.method} model does not use attributes")
    if req.user is not None:
        entry = served.users.get(req.user)
        if entry is not None and not cond.profile and entry.get("profile"):
            cond.profile = dict(entry["profile"])
            cond.profile_source = "adapter"
        if "user" not in supports and not served.knows_users:
            cond.notes.append(f"this {served.method} model does not use the user id")
    if cond.profile and "profile" not in supports:
        cond.notes.append(f"this {served.method} model does not use the profile")
    if "history" in supports:
        cond.notes.append("the persona is inferred from the conversation (codebook)")
    return cond


def check_profile(profile: dict[str, Any]) -> dict[str, Any]:
    """Profile values must be strings, numbers or lists of strings (400 naming the key)."""
    out: dict[str, Any] = {}
    for key, value in profile.items():
        ok = isinstance(value, (str, int, float)) and not isinstance(value, bool)
        ok = ok or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        if not ok:
            raise bad_request(
                f"profile.{key}: expected a string, a number or a list of strings, got {type(value).__name__}",
                param=f"profile.{key}",
            )
        if value not in ("", []):
            out[str(key)] = value
    return out


def check_attributes(attributes: dict[str, str], space: dict[str, list[str]]) -> None:
    """Targets must use the declared attributes and aspects (when the checkpoint declares a space)."""
    if not space:
        return
    for attr, aspect in attributes.items():
        if attr not in space:
            raise bad_request(
                f"attributes: unknown attribute {attr!r}{did_you_mean(attr, list(space))}; "
                f"declared: {', '.join(space)}",
                param="attributes",
                code="unknown_attribute",
            )
        if aspect not in space[attr]:
            raise bad_request(
                f"attributes.{attr}: unknown aspect {aspect!r}{did_you_mean(aspect, space[attr])}; "
                f"declared: {', '.join(space[attr])}",
                param="attributes",
                code="unknown_aspect",
            )


def decoding_for(
    req: ChatCompletionRequest, served: ServedModel, *, base_seed: int, batch_size: int
) -> GenerateConfig:
    """The checkpoint's `generate:` defaults with the request's settings: `max_tokens` →
    max_new_tokens (at most the model's limit), `temperature` 0 → greedy and > 0 → sampling at
    that temperature (one beam: personadlg does not sample beams), `top_p` (< 1 alone also turns sampling on), `top_k`, `min_tokens`,
    `repetition_penalty`, `no_repeat_ngram_size`."""
    d = to_dict(served.cfg.generate)
    new = req.new_tokens()
    field_name = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
    if new is not None:
        if served.limit is not None and new > served.limit:
            raise bad_request(
                f"{field_name}: expected at most {served.limit} (the model has {served.limit} "
                f"positions left for new tokens), got {new}",
                param=field_name,
                code="max_tokens_too_large",
            )
        d["max_new_tokens"] = new
    elif served.limit is not None:
        d["max_new_tokens"] = min(d["max_new_tokens"], served.limit)
    if req.min_tokens is not None:
        if req.min_tokens > d["max_new_tokens"]:
            raise bad_request(
                f"min_tokens: expected at most max_tokens ({d['max_new_tokens']}), got {req.min_tokens}",
                param="min_tokens",
            )
        d["min_new_tokens"] = req.min_tokens
    d["min_new_tokens"] = min(d["min_new_tokens"], d["max_new_tokens"])
    if req.temperature is not None:
        if req.temperature == 0:
            d.update(do_sample=False, num_beams=1)
        else:
            d.update(do_sample=True, temperature=req.temperature)
    if req.top_p is not None:
        d["top_p"] = req.top_p
        if req.temperature is None and req.top_p < 1:
            d["do_sample"] = True
    if d.get("do_sample") and d.get("num_beams", 1) > 1:
        d["num_beams"] = 1  # the request asks to sample: the checkpoint's default beams give way
    if req.top_k is not None:
        d["top_k"] = max(req.top_k, 0)  # vLLM's -1 = off
    if req.repetition_penalty is not None:
        d["repetition_penalty"] = req.repetition_penalty
    if req.no_repeat_ngram_size is not None:
        d["no_repeat_ngram_size"] = req.no_repeat_ngram_size
    d["seed"] = base_seed % 2**32
    d["batch_size"] = max(batch_size, 1)
    try:
        return build_config(GenerateConfig, d, path="generate")
    except ConfigError as err:
        raise bad_request(f"decoding settings: {err}") from None


def decoding_key(decoding: GenerateConfig) -> tuple[tuple[str, Any], ...]:
    """What must be equal for two requests to share one `generate` call (the seed and the batch
    size are per call plumbing, not decoding)."""
    return tuple(
        sorted((k, v) for k, v in to_dict(decoding).items() if k not in ("seed", "batch_size"))
    )


def choice_seed(base: int, index: int) -> int:
    """The 31-bit seed of choice INDEX of a request with base seed BASE (stable across runs)."""
    h = hashlib.blake2b(f"{base}\x00choice\x00{index}".encode(), digest_size=4).digest()
    return int.from_bytes(h, "little") & 0x7FFFFFFF


def request_seeds(seed: int | None, n: int) -> tuple[int, str, list[int]]:
    """(base seed, where it came from: request or random, one seed per choice)."""
    if seed is None:
        base, source = secrets.randbelow(2**31), "random"
    else:
        base, source = int(seed), "request"
    return base, source, [choice_seed(base, i) for i in range(n)]


def make_example(cond: Conditioning, request_id: str) -> Example:
    """The example the model answers (the user's message is the last context turn)."""
    return Example(
        id=request_id,
        dialogue_id=request_id,
        context=list(cond.context),
        persona=list(cond.persona),
        attributes=dict(cond.attributes or {}),
        user_id=cond.user,
        profile=dict(cond.profile),
    )


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """TEXT up to the earliest stop string (not included), and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def echo(
    served: ServedModel,
    cond: Conditioning,
    *,
    base_seed: int,
    seed_source: str,
    seeds: list[int],
    decoding: dict[str, Any],
    records: list[dict[str, Any]],
    batch: dict[str, int],
) -> dict[str, Any]:
    """The `personadlg` object of a reply: the conditioning that was used, per-choice seeds and
    what the method recorded (lora: the adapter or the fallback; codebook: the codes)."""
    out: dict[str, Any] = {
        "model": served.name,
        "method": served.method,
        "checkpoint": str(served.path),
        "persona": cond.persona,
        "persona_source": cond.persona_source,
        "profile": cond.profile,
        "profile_source": cond.profile_source,
        "attributes": cond.attributes,
        "user": cond.user,
    }
    first = records[0] if records else {}
    out.update({k: first[k] for k in served.reading.reply_fields if k in first})
    out.update(
        seed=base_seed,
        seed_source=seed_source,
        decoding=decoding,
        context_messages=len(cond.context),
        notes=list(cond.notes),
        choices=[
            {"index": i, "seed": s, **(rec or {})}
            for i, (s, rec) in enumerate(zip(seeds, records or [{}] * len(seeds)))
        ],
        batch=batch,
    )
    if len(seeds) > 1 and not decoding.get("do_sample"):
        out["notes"].append("greedy decoding: the choices are identical; set temperature > 0")
    return out
