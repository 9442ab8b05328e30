"""`personadlg train` and `personadlg plot`: training runs and their curves."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from personadlg.cli._console import out, set_interrupt_note
from personadlg.cli._options import AllowPickle, Overrides, TrustRemoteCode
from personadlg.errors import UsageError


def train(
    recipe: Annotated[
        str,
        typer.Argument(help="A YAML path or a bundled recipe name (see `personadlg ls recipes`)."),
    ],
    overrides: Overrides = None,
    resume: Annotated[
        Optional[str],
        typer.Option(
            "--resume",
            help="'auto' (newest complete checkpoint in train.output_dir) or a checkpoint dir.",
        ),
    ] = None,
    debug_tokens: Annotated[
        int,
        typer.Option(
            "--debug-tokens",
            help="Print the first N training examples token by token with their labels, then train.",
        ),
    ] = 0,
    allow_config_change: Annotated[
        bool,
        typer.Option(
            "--allow-config-change",
            help="Resume even though fields that change the result (seed, lr, batch size, ...) differ "
            "from the checkpoint's; the change is recorded in config.yaml.",
        ),
    ] = False,
    trust_remote_code: TrustRemoteCode = False,
    allow_pickle: AllowPickle = False,
) -> None:
    """Train a method from a recipe: checkpoints, metrics.jsonl and loss.png under train.output_dir.

    The same command runs on several processes: `accelerate launch --num_processes 2 -m personadlg
    train ...` (also on a CPU-only machine, with gloo) or `torchrun --nproc_per_node 2 -m personadlg train ...`.

    [bold]Examples[/]

      personadlg train finetune/tiny
      personadlg train recipes/finetune/gpt2.yaml data.train=train.jsonl data.valid=valid.jsonl train.lr=3e-5
      personadlg train finetune/tiny --resume auto
      personadlg train finetune/tiny --debug-tokens 2 train.max_steps=1
      personadlg train finetune/tiny --resume auto train.lr=1e-3 --allow-config-change
      personadlg train cvae/tiny model.init_from=runs/cvae-tiny train.output_dir=runs/cvae-more
      personadlg train lora/tiny --users u-001,u-007 --resume auto

    Ctrl-C (or SIGTERM) saves a checkpoint at the current step; `--resume auto` continues from it.
    """
    import sys

    from personadlg.cli._method_flags import check_method, overrides_of, split_flags
    from personadlg.cli._train_view import TrainView, render_result
    from personadlg.config import load_recipe
    from personadlg.models.loading import load_policy
    from personadlg.training.distributed import maybe_relaunch

    flags, rest = split_flags("train", overrides)
    cfg = load_recipe(recipe, rest)
    if flags:
        check_method("train", flags, cfg.method, of="recipe")
        cfg = load_recipe(recipe, [*rest, *overrides_of("train", flags)])
    maybe_relaunch(sys.argv[1:])
    from personadlg.training.trainer import train as run

    set_interrupt_note(
        "no checkpoint was written yet; rerun the command (add --resume auto if the run had begun)"
    )
    with (
        load_policy(trust_remote_code=trust_remote_code, allow_pickle=allow_pickle),
        TrainView() as view,
    ):
        result = run(
            cfg,
            resume=resume,
            debug_tokens=debug_tokens,
            on_event=view,
            allow_config_change=allow_config_change,
        )
    import os

    if os.environ.get("RANK", "0") == "0":
        render_result(result)


def plot(
    run_dir: Annotated[
        Path,
        typer.Argument(
            help="A training run directory (holds metrics.jsonl); with a method's option (e.g. "
            "--latent) also a checkpoint."
        ),
    ],
    method_options: Annotated[
        Optional[list[str]],
        typer.Argument(
            help="Method options, e.g. --latent data.jsonl (below).", show_default=False
        ),
    ] = None,
    out_path: Annotated[
        Optional[Path],
        typer.Option(
            "--out",
            "-o",
            help="The image: a .png, .svg or .pdf file (a path without a suffix gets .png added; "
            "the line `wrote PATH` names the file written) \\[default: RUN_DIR/loss.png, or the "
            "method's name].",
        ),
    ] = None,
    trust_remote_code: TrustRemoteCode = False,
    allow_pickle: AllowPickle = False,
) -> None:
    """Draw a run's curves to PNG (or SVG / PDF): every logged term (train and valid) on a grid
    grouped by kind — losses, accuracies, diagnostics, optimization; or, with a method's option,
    that method's picture of a model on any data (cvae: --latent, its latent space).

    At most 32 panels are drawn (a term shares its panel with its prior_ / _raw variants): with
    more, the first 32 in that order, and a warning names the ones left out. NaN, infinite and
    absurd values (beyond ±1e100) are left out of the curves, with a note.

    [bold]Examples[/]

      personadlg plot runs/finetune-tiny
      personadlg plot runs/finetune-tiny --out curves.png
      personadlg plot runs/cvae-tiny --latent data/test.jsonl --out latent-test.png
    """
    from personadlg.cli._method_flags import check_method, declared, split_flags

    flags, rest = split_flags("plot", method_options)
    if rest:
        raise UsageError(f"unexpected argument(s): {' '.join(rest)}")
    if flags:
        from personadlg.data.paths import check_outputs
        from personadlg.generation.generate import load_examples
        from personadlg.models.loading import load_policy
        from personadlg.training.checkpoint import load_config, load_model
        from personadlg.training.logging import plot_path

        (flag, data), *more = flags.items()
        if more:
            raise UsageError(f"give one of {', '.join(flags)}")
        spec = declared("plot")[flag][1]
        checkpoint = run_dir / "final" if (run_dir / "final").is_dir() else run_dir
        cfg = load_config(checkpoint)
        check_method("plot", flags, cfg.method)
        target = plot_path(out_path or run_dir / (spec.output or "plot.png"))
        check_outputs({"--out": target}, {flag: data})
        examples = load_examples(Path(data), "all")
        assert spec.action is not None, f"{flag} declares no action"
        with load_policy(trust_remote_code=trust_remote_code, allow_pickle=allow_pickle):
            model = load_model(checkpoint, cfg)
        out.print(f"wrote {spec.action(model, examples, Path(target))}", markup=False)
        return
    from personadlg.training.logging import plot_run

    out.print(f"wrote {plot_run(run_dir, out_path)}", markup=False)


def register(app: typer.Typer) -> None:
    import inspect

    from personadlg.cli._method_flags import help_text

    app.command(
        rich_help_panel="Models",
        help=inspect.cleandoc(train.__doc__ or "") + help_text("train"),
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(train)
    app.command(
        rich_help_panel="Models",
        help=inspect.cleandoc(plot.__doc__ or "") + help_text("plot"),
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(plot)
