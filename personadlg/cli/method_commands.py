"""`personadlg METHOD COMMAND ...`: the commands methods declare (`MethodSpec.commands`; codebook:
`inspect`), each built from its declaration and run on a checkpoint of that method."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from personadlg.cli._console import out, print_json, table
from personadlg.cli._options import AllowPickle, Overrides, TrustRemoteCode
from personadlg.errors import UsageError


class _Kit:
    """`CommandKit` over one checkpoint's config."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def examples(self, path: Path) -> list[Any]:
        from personadlg.generation.generate import load_examples

        return load_examples(path, "all")

    def decoding(self, overrides: Sequence[str]) -> Any:
        from personadlg.generation.generate import decoding_config

        return decoding_config(self.cfg.generate, list(overrides))


def print_blocks(blocks: Sequence[Any]) -> None:
    """Print what a method asked for: tables, and lines of plain text (never markup)."""
    from personadlg.models.spec import Table

    for block in blocks:
        if isinstance(block, Table):
            out.print(table(block.title or None, block.columns, block.rows, justify_numbers=False))
        else:
            out.print(str(block), markup=False, highlight=False)


def _run(method: str, command: str, options: dict[str, Any]) -> None:
    from personadlg.models.loading import load_policy
    from personadlg.registry import METHODS
    from personadlg.training.checkpoint import load_config, load_model

    spec = METHODS.get(method).commands[command]
    checkpoint = options.pop("checkpoint")
    as_json = options.pop("as_json")
    policy = {k: options.pop(k) for k in ("trust_remote_code", "allow_pickle")}
    options["overrides"] = list(options.get("overrides") or [])
    cfg = load_config(checkpoint)
    if cfg.method != method:
        raise UsageError(
            f"{checkpoint}: a {cfg.method} checkpoint; `{method} {command}` runs on {method} checkpoints"
        )
    with load_policy(**policy):
        model = load_model(checkpoint, cfg)
    report = spec.run(model, options, _Kit(cfg))
    if as_json:
        print_json(report)
        return
    print_blocks(spec.render(report, {**options, "checkpoint": checkpoint}))


def _signature(method: str, spec: Any) -> inspect.Signature:
    """The typer signature of a declared command: the checkpoint, its options, the common ones."""
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter(
            "checkpoint",
            kw,
            annotation=Annotated[
                Path, typer.Argument(help=f"A {method} checkpoint dir, e.g. runs/x/final.")
            ],
        )
    ]
    for name, opt in spec.options.items():
        kind = opt.type if opt.required or opt.default is not None else Optional[opt.type]
        params.append(
            inspect.Parameter(
                name,
                kw,
                default=inspect.Parameter.empty if opt.required else opt.default,
                annotation=Annotated[kind, typer.Option(*opt.flags, help=opt.help)],
            )
        )
    params += [
        inspect.Parameter(
            "as_json",
            kw,
            default=False,
            annotation=Annotated[bool, typer.Option("--json", help="Print the report as JSON.")],
        ),
        inspect.Parameter("trust_remote_code", kw, default=False, annotation=TrustRemoteCode),
        inspect.Parameter("allow_pickle", kw, default=False, annotation=AllowPickle),
        inspect.Parameter("overrides", kw, default=None, annotation=Overrides),
    ]
    return inspect.Signature(params)


def _command(method: str, name: str, spec: Any) -> Callable[..., None]:
    def command(**options: Any) -> None:
        _run(method, name, options)

    command.__signature__ = _signature(method, spec)  # type: ignore[attr-defined]
    examples = "\n".join(f"  {e}" for e in spec.examples)
    command.__doc__ = spec.help + (f"\n\n[bold]Examples[/]\n\n{examples}" if examples else "")
    return command


def register(root: typer.Typer) -> None:
    from personadlg.registry import METHODS

    for method in METHODS.names():
        commands = METHODS.get(method).commands
        if not commands:
            continue
        app = typer.Typer(
            name=method,
            help=f"Commands of the {method} method, run on its checkpoints.",
            no_args_is_help=True,
            add_completion=False,
        )
        for name, spec in commands.items():
            app.command(name)(_command(method, name, spec))
        root.add_typer(app, rich_help_panel="Models")
