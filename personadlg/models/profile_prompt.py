"""A user's profile as prompt text: one renderer for training, generation and chat.

The default renders `[key: value]` pairs in a fixed key order (the prompts of arXiv 2409.00887):

    profile {"gender": "female", "age": "20s"}, keys [age, gender]  →  "[age: 20s] [gender: female]"

Keys not in `keys` follow in sorted order (or are dropped with `only_keys`); empty values are
skipped; list values are joined with ", "; an empty profile renders as "" (no prefix at all).
`persona: true` adds the persona sentences as one more item.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from personadlg.config import check


def _fields(fmt: str) -> set[str] | None:
    """The replacement fields of a format string, or None when it does not parse."""
    try:
        return {name for _, name, _, _ in string.Formatter().parse(fmt) if name is not None}
    except ValueError:
        return None


@dataclass(frozen=True)
class ProfileTemplate:
    """How a profile (and optionally the persona) becomes one line of prompt text."""

    item: str = field(
        default="[{key}: {value}]",
        metadata={"help": "one profile entry; must use {key} and {value} and nothing else"},
    )
    separator: str = field(default=" ", metadata={"help": "between entries"})
    keys: tuple[str, ...] = field(
        default=(), metadata={"help": "key order (keys not listed follow, sorted)"}
    )
    only_keys: bool = field(default=False, metadata={"help": "drop keys not in `keys`"})
    persona: bool = field(
        default=False, metadata={"help": "add the persona sentences as one more entry"}
    )
    persona_key: str = field(default="persona", metadata={"help": "the persona entry's key"})

    def __post_init__(self) -> None:
        problems = []
        names = _fields(self.item)
        if names != {"key", "value"}:
            problems.append(
                "model.profile_template.item must use exactly the fields {key} and {value}, got "
                + (f"{self.item!r} (not a format string)" if names is None else repr(self.item))
            )
        if len(set(self.keys)) != len(self.keys):
            problems.append(f"model.profile_template.keys lists a key twice: {list(self.keys)}")
        if self.only_keys and not self.keys:
            problems.append("model.profile_template.only_keys needs model.profile_template.keys")
        check(problems)
        object.__setattr__(self, "keys", tuple(str(k) for k in self.keys))


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(t for t in (_text(v) for v in value) if t)
    return " ".join(str(value).split())


def profile_items(
    profile: Mapping[str, Any] | None,
    persona: Sequence[str] | None = None,
    *,
    template: ProfileTemplate | None = None,
) -> list[tuple[str, str]]:
    """The (key, value) entries a template renders, in order (empty values dropped)."""
    t = template or ProfileTemplate()
    profile = profile or {}
    order = [k for k in t.keys if k in profile]
    if not t.only_keys:
        order += sorted(k for k in profile if k not in t.keys)
    items = [(k, _text(profile[k])) for k in order]
    if t.persona and persona:
        items.append((t.persona_key, " ".join(_text(s) for s in persona if _text(s))))
    return [(k, v) for k, v in items if v]


def render_profile(
    profile: Mapping[str, Any] | None,
    persona: Sequence[str] | None = None,
    *,
    template: ProfileTemplate | None = None,
) -> str:
    """PROFILE (and PERSONA when the template includes it) as one line; "" when nothing is set."""
    t = template or ProfileTemplate()
    return t.separator.join(
        t.item.format(key=k, value=v) for k, v in profile_items(profile, persona, template=t)
    )
