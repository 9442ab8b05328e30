"""What the model reads: prompt and completion token counts (`usage`), and prompts too long for
the model's positions (413).

Prompts are rendered as the checkpoint renders them (`models/render.py`, with the recipe's
persona / profile / attributes lines for finetune and lora; the plain template for the other
methods, whose encoders read the same text) and counted with the model's tokenizer. A context
longer than the model's prompt room loses its oldest turns first, as in training and
`generate`; only when the user's newest message alone (with the conditioning lines) does not fit
is the request refused with 413. Completion tokens are the reply's tokens after `stop` cuts it.

Before anything is tokenised, the history is cut from the left by characters (`cut_history`):
it keeps the newest messages within `CHARS_PER_TOKEN` characters per token the model can read
(`history_chars`), so a long history costs one bounded rendering, never one per dropped turn.
The cut is generous (English averages about 4 characters a token): a turn it drops would not
have fitted the model's tokens anyway, unless its tokens average more than 16 characters. The
newest message with the conditioning lines is measured the same way (`check_fits`): longer than
16 characters per token the model reads is a 413 before it is tokenised. What is left is rendered
and tokenised a bounded number of times (`render` finds the turns to drop by bisection).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from personadlg.data.schema import Example, Message
from personadlg.models.render import prompt_text, render
from personadlg.serving.protocol import APIError
from personadlg.serving.registry import ServedModel

UNBOUNDED = 10**9
CHARS_PER_TOKEN = 16
"""Characters of history kept per token of the model's context (English averages about 4)."""
FALLBACK_TOKENS = 4096
"""The context assumed for a model that declares none."""


def prompt_room(served: ServedModel, max_new_tokens: int) -> tuple[int, str]:
    """(prompt tokens the model keeps, why that many): the decoder's positions left after
    MAX_NEW_TOKENS (when its decoder reads the prompt), and the recipe's own cap on the prompt
    (finetune, lora: `model.max_length`), as the method's `prompt_reading` declares them."""
    room, why = UNBOUNDED, ""
    reading = served.reading
    if served.limit is not None and reading.decoder_reads_prompt:
        positions = served.limit + 1
        room = positions - max_new_tokens
        why = f"{positions} positions - max_tokens {max_new_tokens}"
    if reading.prompt_cap is not None and reading.prompt_cap < room:
        room = reading.prompt_cap
        why = f"{reading.cap_name} {room}"
    return max(room, 1), why


def context_tokens(served: ServedModel, max_new_tokens: int) -> int:
    """The most prompt tokens SERVED reads: its prompt room, else its method's own budget
    (`PromptReading.context_budget`), else its tokenizer's `model_max_length`, else
    FALLBACK_TOKENS."""
    room, _ = prompt_room(served, max_new_tokens)
    if room < UNBOUNDED:
        return room
    budget = served.reading.context_budget
    if budget is not None and budget > 0:
        return budget
    value = getattr(served.tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value < UNBOUNDED:
        return value
    return FALLBACK_TOKENS


def history_chars(served: ServedModel, max_new_tokens: int) -> int:
    """How many characters of history `cut_history` keeps for SERVED."""
    return CHARS_PER_TOKEN * context_tokens(served, max_new_tokens)


def cut_history(context: Sequence[Message], *, max_chars: int) -> list[Message]:
    """The newest messages of CONTEXT whose text fits in MAX_CHARS characters (one more per
    message); the newest one is always kept."""
    kept = 0
    used = 0
    for m in reversed(context):
        used += len(m.content) + 1
        if kept and used > max_chars:
            break
        kept += 1
    return list(context[len(context) - kept :])


def prompt_ids(
    served: ServedModel, example: Example, target: dict[str, str] | None, budget: int
) -> list[int]:
    return render(
        example,
        served.tokenizer,
        served.render,
        max_prompt_tokens=budget,
        with_target=False,
        attributes=target,
    ).prompt_ids


def count_prompt(
    served: ServedModel, example: Example, target: dict[str, str] | None, max_new_tokens: int
) -> int:
    """Prompt tokens the model reads for EXAMPLE (after dropping the oldest turns that do not fit)."""
    room, _ = prompt_room(served, max_new_tokens)
    return len(prompt_ids(served, example, target, room))


def check_fits(
    served: ServedModel, example: Example, target: dict[str, str] | None, max_new_tokens: int
) -> None:
    """413 when the newest message alone, with the conditioning lines, exceeds what the model
    reads: first by characters (more than `CHARS_PER_TOKEN` per token of room is refused before
    anything is tokenised, so its cost is bounded), then by tokens against the prompt room."""
    room, why = prompt_room(served, max_new_tokens)
    newest = replace(example, context=example.context[-1:])
    text = prompt_text(newest, served.tokenizer, served.render, attributes=target)
    tokens = room if room < UNBOUNDED else context_tokens(served, max_new_tokens)
    most = CHARS_PER_TOKEN * tokens
    if len(text) > most:
        reads = (
            f"has room for {room} tokens ({why})" if room < UNBOUNDED else f"reads {tokens} tokens"
        )
        raise APIError(
            413,
            f"messages: the last message, with the persona / profile / attribute lines, is "
            f"{len(text)} characters long; {served.name} {reads}, and the server reads at most "
            f"{CHARS_PER_TOKEN} characters per token ({most}); shorten it"
            + (", or ask for fewer max_tokens" if room < UNBOUNDED else ""),
            param="messages",
            code="context_length_exceeded",
        )
    if room >= UNBOUNDED:
        return
    need = len(prompt_ids(served, newest, target, UNBOUNDED))
    if need > room:
        raise APIError(
            413,
            f"messages: the last message needs {need} prompt tokens (with the persona / profile / "
            f"attribute lines), and {served.name} has room for {room} ({why}); shorten it, or ask "
            "for fewer max_tokens",
            param="messages",
            code="context_length_exceeded",
        )


def count_completion(served: ServedModel, text: str) -> int:
    """The reply's tokens by the model's tokenizer."""
    if not text:
        return 0
    return len(served.tokenizer(text, add_special_tokens=False)["input_ids"])
