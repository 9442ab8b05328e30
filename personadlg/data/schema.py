"""The two record types (README: Data format): dialogues and examples, with strict validation.

A dialogue is what `synth`, `convert`, `clean` and `split` write and `train` reads; an example is one
assistant message with its context, what `generate` reads and writes and `eval` reads. Unknown
top-level keys are kept (in `extra`) and written back, so nothing a user stored is lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from personadlg.errors import DataError

ROLES = ("user", "assistant")

DIALOGUE_KEYS = ("id", "messages", "persona", "attributes", "user_id", "profile", "topic", "meta")
EXAMPLE_KEYS = (
    "id",
    "dialogue_id",
    "context",
    "reference",
    "persona",
    "attributes",
    "user_id",
    "profile",
    "topic",
    "meta",
    "generation",
    "target_attributes",
    "method",
    "checkpoint",
    "decoding",
    "seed",
)


@dataclass(slots=True)
class Message:
    """One chat message (OpenAI convention)."""

    role: str
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(slots=True)
class Dialogue:
    """A dialogue record. The assistant is the personalized speaker described by persona/attributes/user_id/profile."""

    id: str
    messages: list[Message]
    persona: list[str] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)
    user_id: str | None = None
    profile: dict[str, Any] = field(default_factory=dict)
    topic: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def assistant_messages(self) -> list[str]:
        return [m.content for m in self.messages if m.role == "assistant"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; empty optional fields are left out, unknown keys kept."""
        out: dict[str, Any] = {"id": self.id, "messages": [m.to_dict() for m in self.messages]}
        _put_speaker_fields(out, self)
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, obj: Any, *, strict_roles: bool = True) -> Dialogue:
        """Validate OBJ as a dialogue record. Raises DataError naming the field (location added by the caller).

        With `strict_roles=False` consecutive same-role messages and empty contents are accepted
        (`clean` repairs them); everything else is still checked.
        """
        if not isinstance(obj, Mapping):
            raise DataError(expected="a JSON object (dialogue record)", got=obj)
        rid = _req_id(obj, "id")
        messages = _messages(
            obj.get("messages", _MISSING), "messages", strict=strict_roles, need_assistant=True
        )
        return cls(
            id=rid,
            messages=messages,
            persona=_str_list(obj.get("persona"), "persona"),
            attributes=_str_map(obj.get("attributes"), "attributes"),
            user_id=_opt_str(obj.get("user_id"), "user_id"),
            profile=_scalar_map(obj.get("profile"), "profile"),
            topic=_opt_str(obj.get("topic"), "topic"),
            meta=_obj(obj.get("meta"), "meta"),
            extra={k: v for k, v in obj.items() if k not in DIALOGUE_KEYS},
        )


@dataclass(slots=True)
class Example:
    """One assistant message to generate: its context, the gold reply and who speaks (README: Data format, example records)."""

    id: str
    dialogue_id: str
    context: list[Message]
    reference: str | None = None
    persona: list[str] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)
    user_id: str | None = None
    profile: dict[str, Any] = field(default_factory=dict)
    topic: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    generation: str | None = None
    target_attributes: dict[str, str] | None = None
    method: str | None = None
    checkpoint: str | None = None
    decoding: dict[str, Any] | None = None
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "dialogue_id": self.dialogue_id,
            "context": [m.to_dict() for m in self.context],
            "reference": self.reference,
        }
        _put_speaker_fields(out, self)
        for key in ("generation", "target_attributes", "method", "checkpoint", "decoding", "seed"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, obj: Any) -> Example:
        if not isinstance(obj, Mapping):
            raise DataError(expected="a JSON object (example record)", got=obj)
        rid = _req_id(obj, "id")
        dialogue_id = obj.get("dialogue_id")
        if dialogue_id is None:
            dialogue_id = rid.split("#", 1)[0]
        elif not isinstance(dialogue_id, str) or not dialogue_id:
            raise DataError(field="dialogue_id", expected="a non-empty string", got=dialogue_id)
        context = _messages(
            obj.get("context", _MISSING),
            "context",
            strict=False,
            need_assistant=False,
            allow_empty=True,
        )
        reference = obj.get("reference")
        if reference is not None and not isinstance(reference, str):
            raise DataError(field="reference", expected="a string or null", got=reference)
        generation = obj.get("generation")
        if generation is not None and not isinstance(generation, str):
            raise DataError(field="generation", expected="a string", got=generation)
        target = obj.get("target_attributes")
        seed = obj.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise DataError(field="seed", expected="an integer", got=seed)
        return cls(
            id=rid,
            dialogue_id=dialogue_id,
            context=context,
            reference=reference,
            persona=_str_list(obj.get("persona"), "persona"),
            attributes=_str_map(obj.get("attributes"), "attributes"),
            user_id=_opt_str(obj.get("user_id"), "user_id"),
            profile=_scalar_map(obj.get("profile"), "profile"),
            topic=_opt_str(obj.get("topic"), "topic"),
            meta=_obj(obj.get("meta"), "meta"),
            generation=generation,
            target_attributes=None if target is None else _str_map(target, "target_attributes"),
            method=_opt_str(obj.get("method"), "method"),
            checkpoint=_opt_str(obj.get("checkpoint"), "checkpoint"),
            decoding=None if obj.get("decoding") is None else _obj(obj.get("decoding"), "decoding"),
            seed=seed,
            extra={k: v for k, v in obj.items() if k not in EXAMPLE_KEYS},
        )


def _put_speaker_fields(out: dict[str, Any], rec: Dialogue | Example) -> None:
    """Add the non-empty optional fields that describe the assistant (persona ... meta) to OUT."""
    if rec.persona:
        out["persona"] = list(rec.persona)
    if rec.attributes:
        out["attributes"] = dict(rec.attributes)
    if rec.user_id is not None:
        out["user_id"] = rec.user_id
    if rec.profile:
        out["profile"] = dict(rec.profile)
    if rec.topic is not None:
        out["topic"] = rec.topic
    if rec.meta:
        out["meta"] = dict(rec.meta)


def record_kind(obj: Any) -> str | None:
    """'dialogue', 'example' or None, from the keys of a parsed JSON object."""
    if isinstance(obj, Mapping):
        if "messages" in obj:
            return "dialogue"
        if "context" in obj:
            return "example"
    return None


def expand_dialogue(
    dialogue: Dialogue, *, turns: str = "all", max_context_turns: int = 0
) -> list[Example]:
    """One example per assistant message (or only the last, `turns="last"`).

    The example id is `<dialogue id>#<index of the assistant message in messages>`.
    """
    if turns not in ("all", "last"):
        raise ValueError(f"turns must be 'all' or 'last', got {turns!r}")
    indices = [i for i, m in enumerate(dialogue.messages) if m.role == "assistant"]
    if turns == "last":
        indices = indices[-1:]
    out = []
    for i in indices:
        context = dialogue.messages[:i]
        if max_context_turns > 0:
            context = context[-max_context_turns:]
        out.append(
            Example(
                id=f"{dialogue.id}#{i}",
                dialogue_id=dialogue.id,
                context=[Message(m.role, m.content) for m in context],
                reference=dialogue.messages[i].content,
                persona=list(dialogue.persona),
                attributes=dict(dialogue.attributes),
                user_id=dialogue.user_id,
                profile=dict(dialogue.profile),
                topic=dialogue.topic,
                meta=dict(dialogue.meta),
            )
        )
    return out


# -------------------------------------------------------------------------------------------------
# field validators (raise DataError with the field path; the reader adds FILE:LINE)
# -------------------------------------------------------------------------------------------------

_MISSING = object()


def _req_id(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key, _MISSING)
    if value is _MISSING:
        raise DataError(field=key, expected="a non-empty string", got_text="nothing (missing)")
    if not isinstance(value, str) or not value:
        raise DataError(field=key, expected="a non-empty string", got=value)
    return value


def _messages(
    value: Any, key: str, *, strict: bool, need_assistant: bool, allow_empty: bool = False
) -> list[Message]:
    if value is _MISSING:
        raise DataError(field=key, expected="a list of messages", got_text="nothing (missing)")
    if not isinstance(value, list):
        raise DataError(field=key, expected="a list of messages", got=value)
    if not value and not allow_empty:
        raise DataError(field=key, expected="at least one message", got=value)
    out: list[Message] = []
    prev = None
    for i, m in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(m, Mapping):
            raise DataError(field=where, expected="an object with 'role' and 'content'", got=m)
        role = m.get("role", _MISSING)
        if role is _MISSING:
            raise DataError(
                field=f"{where}.role",
                expected="'user' or 'assistant'",
                got_text="nothing (missing)",
            )
        if role not in ROLES:
            raise DataError(field=f"{where}.role", expected="'user' or 'assistant'", got=role)
        if strict and prev is not None and role == prev:
            other = "assistant" if prev == "user" else "user"
            raise DataError(
                field=f"{where}.role",
                expected=f"'{other}'",
                got=role,
                message="roles must alternate",
            )
        content = m.get("content", _MISSING)
        if content is _MISSING:
            raise DataError(
                field=f"{where}.content", expected="a string", got_text="nothing (missing)"
            )
        if not isinstance(content, str):
            raise DataError(field=f"{where}.content", expected="a string", got=content)
        if strict and not content.strip():
            raise DataError(field=f"{where}.content", expected="a non-empty string", got=content)
        out.append(Message(role, content))
        prev = role
    if need_assistant and not any(m.role == "assistant" for m in out):
        raise DataError(field=key, expected="at least one assistant message", got_text="none")
    return out


def _str_list(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise DataError(field=key, expected="a list of strings", got=value)
    for i, v in enumerate(value):
        if not isinstance(v, str):
            raise DataError(field=f"{key}[{i}]", expected="a string", got=v)
    return list(value)


def _str_map(value: Any, key: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise DataError(field=key, expected="an object mapping names to strings", got=value)
    for k, v in value.items():
        if not isinstance(v, str):
            raise DataError(field=f"{key}.{k}", expected="a string", got=v)
    return dict(value)


def _scalar_map(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise DataError(field=key, expected="an object", got=value)
    for k, v in value.items():
        if v is not None and not isinstance(v, (str, int, float, bool)):
            raise DataError(field=f"{key}.{k}", expected="a string, number or boolean", got=v)
    return dict(value)


def _opt_str(value: Any, key: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise DataError(field=key, expected="a string or null", got=value)


def _obj(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise DataError(field=key, expected="an object", got=value)
    return dict(value)
