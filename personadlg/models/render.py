"""Turning an example into model text: one renderer for training and generation.

With a tokenizer that has a chat template (and `chat_template: auto`), the context becomes chat
messages, with the persona / profile / attributes in a system message. Otherwise the documented
plain template is used:

    Persona: i keep bees. i sell honey at the farmers market.
    Profile: age: 60s; occupation: beekeeper
    Attributes: attitude=optimistic
    User: how was the market today?
    Assistant: busy! we sold out by noon.
    User: what is next for the bees?
    Assistant:

and the target is " <reply>" followed by the end-of-sequence token. Header lines appear only when
enabled and present. With a `ProfileTemplate` the profile line is that template's instead
(`[age: 60s] [occupation: beekeeper]` by default; `profile_prompt.py`), and an empty profile
adds no line at all. Contexts that do not fit the token budget lose their oldest turns first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from personadlg.data.schema import Example, Message
from personadlg.models.profile_prompt import ProfileTemplate, render_profile

ROLE_NAMES = {"user": "User", "assistant": "Assistant"}


@dataclass(frozen=True)
class RenderOptions:
    persona: bool = False
    profile: bool = False
    attributes: bool = False
    chat_template: str = "auto"
    profile_template: ProfileTemplate | None = None  # None: the "Profile: k: v; ..." line


def header_lines(
    example: Example, opts: RenderOptions, attributes: dict[str, str] | None = None
) -> list[str]:
    """The conditioning lines: persona, profile, attributes (TARGETS override the example's own)."""
    lines = []
    tmpl = opts.profile_template if opts.profile else None
    if opts.persona and example.persona and not (tmpl and tmpl.persona):
        lines.append("Persona: " + " ".join(s.strip() for s in example.persona))
    if tmpl is not None:
        if line := render_profile(example.profile, example.persona, template=tmpl):
            lines.append(line)
    elif opts.profile and example.profile:
        lines.append("Profile: " + "; ".join(f"{k}: {v}" for k, v in example.profile.items()))
    attrs = attributes if attributes is not None else example.attributes
    if opts.attributes and attrs:
        lines.append("Attributes: " + ", ".join(f"{k}={v}" for k, v in sorted(attrs.items())))
    return lines


def plain_prompt(header: Sequence[str], context: Sequence[Message]) -> str:
    lines = [*header, *(f"{ROLE_NAMES[m.role]}: {m.content}" for m in context), "Assistant:"]
    return "\n".join(lines)


def prompt_text(
    example: Example,
    tokenizer: Any,
    opts: RenderOptions,
    *,
    attributes: dict[str, str] | None = None,
) -> str:
    """The whole prompt EXAMPLE renders to (no budget, nothing tokenised): what `render` tokenises
    before it drops any turn."""
    header = header_lines(example, opts, attributes)
    return _prompt_text(header, example.context, tokenizer, uses_chat_template(tokenizer, opts))


def _prompt_text(
    header: Sequence[str], context: Sequence[Message], tokenizer: Any, chat: bool
) -> str:
    if chat:
        return str(
            tokenizer.apply_chat_template(
                chat_messages(header, context), tokenize=False, add_generation_prompt=True
            )
        )
    return plain_prompt(header, context)


def uses_chat_template(tokenizer: Any, opts: RenderOptions) -> bool:
    return opts.chat_template == "auto" and bool(getattr(tokenizer, "chat_template", None))


def chat_messages(header: Sequence[str], context: Sequence[Message]) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": "\n".join(header)}] if header else []
    return msgs + [m.to_dict() for m in context]


@dataclass
class Rendered:
    """Token ids of the prompt and (for training) the target, and the prompt text."""

    prompt_ids: list[int]
    target_ids: list[int]
    prompt_text: str


def render(
    example: Example,
    tokenizer: Any,
    opts: RenderOptions,
    *,
    max_prompt_tokens: int,
    max_target_tokens: int = 0,
    with_target: bool = True,
    attributes: dict[str, str] | None = None,
    add_special_tokens: bool = True,
) -> Rendered:
    """Render EXAMPLE within the budgets, dropping the oldest context turns first.

    Args:
        max_prompt_tokens: the prompt's budget (after the target's share is taken).
        max_target_tokens: the target is cut to this many tokens before the end token.
        with_target: build the target ids from `example.reference` (training).
        attributes: target attributes to condition on instead of the example's own.
        add_special_tokens: let the tokenizer add its own specials (BOS) to a plain prompt.
    """
    header = header_lines(example, opts, attributes)
    chat = uses_chat_template(tokenizer, opts)
    target_ids: list[int] = []
    if with_target:
        reply = example.reference or ""
        if chat:
            full = tokenizer.apply_chat_template(
                chat_messages(header, [*example.context, Message("assistant", reply)]),
                tokenize=False,
            )
            prompt = tokenizer.apply_chat_template(
                chat_messages(header, example.context), tokenize=False, add_generation_prompt=True
            )
            tail = full[len(prompt) :] if full.startswith(prompt) else reply
            target_ids = tokenizer(tail, add_special_tokens=False)["input_ids"][
                : max_target_tokens or None
            ]
        else:
            target_ids = tokenizer(" " + reply, add_special_tokens=False)["input_ids"][
                : max_target_tokens or None
            ]
            if tokenizer.eos_token_id is not None:
                target_ids = [*target_ids, tokenizer.eos_token_id]
    context = list(example.context)
    encoded: dict[int, tuple[str, list[int]]] = {}

    def encode(dropped: int) -> tuple[str, list[int]]:
        """The prompt's text and ids without the DROPPED oldest turns."""
        if dropped not in encoded:
            text = _prompt_text(header, context[dropped:], tokenizer, chat)
            specials = add_special_tokens and not chat
            encoded[dropped] = (text, tokenizer(text, add_special_tokens=specials)["input_ids"])
        return encoded[dropped]

    # the fewest oldest turns to drop so the prompt fits, found by bisection (a prompt loses
    # tokens as it loses turns), so a long context costs log2(turns) tokenisations, not one per
    # dropped turn; with every turn dropped the header is kept whatever its length
    fits_at = 0
    if len(encode(0)[1]) > max_prompt_tokens and context:
        too_long, fits_at = 0, len(context)
        while fits_at - too_long > 1:
            mid = (too_long + fits_at) // 2
            if len(encode(mid)[1]) <= max_prompt_tokens:
                fits_at = mid
            else:
                too_long = mid
    text, ids = encode(fits_at)
    if len(ids) > max_prompt_tokens:
        ids = ids[len(ids) - max_prompt_tokens :]  # the header alone is too long: keep its end
    return Rendered(prompt_ids=list(ids), target_ids=target_ids, prompt_text=text)
