"""`personadlg chat`: talk to a trained model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from personadlg.cli._console import err, out, set_interrupt_note
from personadlg.cli._options import AllowPickle, Overrides, TrustRemoteCode


def chat(
    checkpoint: Annotated[
        Path,
        typer.Argument(
            help="A checkpoint dir, e.g. runs/x/final, or a `method: api` recipe (e.g. api/persona)."
        ),
    ],
    attributes: Annotated[
        Optional[str],
        typer.Option("--attributes", help="Target aspects, e.g. attitude=optimistic."),
    ] = None,
    persona: Annotated[
        Optional[list[str]], typer.Option("--persona", help="A persona sentence (repeatable).")
    ] = None,
    user: Annotated[
        Optional[str],
        typer.Option(
            "--user", help="User id (lora: the user's adapter, and their profile unless --profile)."
        ),
    ] = None,
    profile: Annotated[
        Optional[str],
        typer.Option("--profile", help="The speaker's profile, e.g. age=20s,gender=female."),
    ] = None,
    trust_remote_code: TrustRemoteCode = False,
    allow_pickle: AllowPickle = False,
    overrides: Overrides = None,
) -> None:
    """Talk to a trained model (or an API model through a `method: api` recipe) in the terminal. /help lists the commands (/reset, /persona, /attributes, /user, /quit).

    Reads one message per line from stdin, so it also runs non-interactively:
    `printf 'hi\\nhow are you?\\n' | personadlg chat runs/x/final`.

    [bold]Examples[/]

      personadlg chat runs/finetune-tiny/final --persona "i keep bees." do_sample=true
      personadlg chat runs/lora-tiny/final --user u-007        (then /user u-012 to switch)
      OPENAI_API_KEY=... personadlg chat api/attributes --attributes attitude=optimistic temperature=0.9
    """
    import sys

    from personadlg.config import GenerateConfig
    from personadlg.data.attributes import parse_targets
    from personadlg.errors import PersonadlgError
    from personadlg.generation.chat import ChatSession, parse_profile
    from personadlg.generation.generate import check_decoding, decoding_config
    from personadlg.generation.inputs import check_targets
    from personadlg.llm.retries import FatalAPIError
    from personadlg.models.api import find_api_recipe
    from personadlg.models.loading import load_policy
    from personadlg.registry import METHODS
    from personadlg.training.checkpoint import load_config, load_model

    recipe = find_api_recipe(checkpoint, command="chat")
    targets = parse_targets(attributes)
    if recipe is not None:  # an API model: the recipe's client, prompt and declared aspects
        from personadlg.generation.api import ApiChatModel
        from personadlg.llm.client import api_key
        from personadlg.models.api import load_api_recipe
        from personadlg.models.api.config import recipe_overrides

        api_cfg = load_api_recipe(recipe, recipe_overrides(overrides or []))
        api_key(api_cfg.client)
        model: Any = ApiChatModel(api_cfg)
        decoding = GenerateConfig(seed=api_cfg.prompt.seed)
        method, space = "api", api_cfg.space
    else:
        cfg = load_config(checkpoint)
        decoding = decoding_config(cfg.generate, overrides or [])
        with load_policy(trust_remote_code=trust_remote_code, allow_pickle=allow_pickle):
            model = load_model(checkpoint, cfg)
        check_decoding(model, decoding)
        method, space = cfg.method, cfg.data.attributes
    check_targets(targets, space)
    set_interrupt_note("the conversation ended")
    session = ChatSession(
        model=model,
        decoding=decoding,
        method=method,
        supports=METHODS.get(method).supports,
        method_commands=METHODS.get(method).chat_commands,
        attribute_space=space,
        persona=list(persona or []),
        attributes=targets,
        profile=parse_profile(profile) if profile else {},
    )
    user_note = session.set_user(user) if user else ""
    interactive = sys.stdin.isatty()
    if interactive:
        err.print(
            f"chatting with {checkpoint} ({method}); /help for commands, /quit or Ctrl-D to leave"
        )
    if user_note:
        err.print(user_note, markup=False, highlight=False)
    lineno = 0
    while True:
        lineno += 1
        try:
            line = input("you> ") if interactive else _stdin_line()
        except EOFError:
            break
        except UnicodeDecodeError as e:  # one bad line is reported; the conversation goes on
            bad = e.object[e.start : e.start + 1].hex() if isinstance(e.object, bytes) else "?"
            out.print(
                f"error: <stdin>:{lineno}: not valid UTF-8: byte 0x{bad} at byte offset {e.start}; line skipped",
                markup=False,
                highlight=False,
            )
            continue
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            break
        if line.startswith("/"):
            try:
                out.print(session.command(line), markup=False, highlight=False)
            except PersonadlgError as e:  # a bad command must not end the conversation
                out.print(f"error: {e}", markup=False, highlight=False)
            continue
        try:
            answer = session.reply(line)
        except FatalAPIError:  # the API refused the key or is out of quota: nothing more to say
            raise
        except PersonadlgError as e:  # one unanswered message (an API failure) ends nothing
            out.print(f"error: {e}", markup=False, highlight=False)
            continue
        out.print(f"bot> {answer}", markup=False, highlight=False)


def _stdin_line() -> str:
    """The next line of stdin, decoded strictly as UTF-8 (EOFError at the end)."""
    import sys

    stream = getattr(sys.stdin, "buffer", None)
    raw = stream.readline() if stream is not None else sys.stdin.readline()
    if not raw:
        raise EOFError
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    return text.rstrip("\r\n")


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Models")(chat)
