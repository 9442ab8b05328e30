"""`personadlg` command line: thin typer commands that parse, call the library and render.

Start-up stays fast: command modules import only typer and rich at module level; torch,
transformers and the library are imported inside the command bodies.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

from personadlg import __version__

app = typer.Typer(
    name="personadlg",
    help="Personalized dialogue generation: synthesize, clean, train, generate and evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        print(f"personadlg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output (DEBUG)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors on stderr."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
) -> None:
    """Personalized dialogue generation: synthesize, clean, train, generate and evaluate.

    Every command has --help with examples. Exit codes: 0 ok, 1 runtime failure, 2 bad usage,
    config or input data.
    """
    from personadlg.cli._console import setup_logging

    setup_logging(-1 if quiet else verbose)


def _register() -> None:
    from personadlg.cli import (
        chat,
        data,
        demo,
        evaluate,
        generate,
        method_commands,
        profile,
        recipes,
        serve,
        synth,
        train,
    )

    for module in (
        data,
        synth,
        profile,
        train,
        generate,
        evaluate,
        chat,
        serve,
        method_commands,
        demo,
        recipes,
    ):
        module.register(app)


_register()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run the app, turning personadlg errors into one line and an exit code."""
    import os

    from personadlg.errors import PersonadlgError
    from personadlg.training.interrupt import Interrupted, Stopped, signals_raise_stopped

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        with signals_raise_stopped():
            rc = app(args=args, prog_name="personadlg", standalone_mode=False)
    except Interrupted as e:  # a training run that saved where it stopped
        if os.environ.get("RANK", "0") == "0":
            _note(f"interrupted; {e}")
        sys.exit(e.exit_code)
    except PersonadlgError as e:
        if debug:
            raise
        _fail(str(e), e.exit_code)
    except (Stopped, KeyboardInterrupt) as e:
        from personadlg.cli._console import interrupt_note

        code = getattr(e, "exit_code", 130)
        if os.environ.get("RANK", "0") == "0":
            _note(f"{'interrupted' if code == 130 else 'terminated'}; {interrupt_note()}")
        sys.exit(code)
    except OSError as e:  # a failed read or write: disk full, permission, a directory in the way
        if debug:
            raise
        where = f"{e.filename}: " if e.filename else ""
        _fail(f"{where}{e.strerror or e}", 1)
    except Exception as e:
        # click's exceptions (typer may vendor its own copy of click, so match by class name)
        kinds = {c.__name__ for c in type(e).__mro__}
        if "Abort" in kinds:
            _fail("aborted", 130)
        if "ClickException" in kinds:
            e.show()  # type: ignore[attr-defined]
            sys.exit(e.exit_code)  # type: ignore[attr-defined]
        if debug:
            raise
        _fail(f"{type(e).__name__}: {e} (run with --debug for the traceback)", 1)
    sys.exit(rc if isinstance(rc, int) else 0)


def _fail(message: str, code: int) -> None:
    from personadlg.cli._console import error

    error(message)
    sys.exit(code)


def _note(message: str) -> None:
    from personadlg.cli._console import err

    err.print(message, markup=False, highlight=False, soft_wrap=True)
