"""Rendering training runs on the terminal: progress bar or log lines, debug tokens, summary."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from personadlg.cli._console import err, out, table


def _fmt(v: Any, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "-"


class TrainView:
    """`on_event` for the trainer: a rich progress bar on a terminal, plain log lines otherwise."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.task: Any = None

    def __enter__(self) -> TrainView:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, kind: str, p: dict[str, Any]) -> None:
        if kind == "start":
            where = f"{p['processes']} process(es) on {p['device']}"
            err.print(
                f"training: {p['train_examples']:,} train / {p['valid_examples']:,} valid examples, {p['total_steps']:,} steps "
                f"({p['steps_per_epoch']:,} per epoch), {where}"
                + (f", resumed from {p['resumed_from']}" if p["resumed_from"] else "")
            )
            if err.is_terminal:
                self.progress = Progress(
                    SpinnerColumn(),
                    TextColumn("[bold]train"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(),
                    TimeRemainingColumn(),
                    console=err,
                    transient=True,
                )
                self.progress.start()
                self.task = self.progress.add_task(
                    "train", total=p["total_steps"], completed=p["step"], info=""
                )
        elif kind == "debug_tokens":
            render_debug_tokens(p["examples"])
        elif kind == "step" and self.progress is not None:
            info = f"epoch {p['epoch']:.2f} · loss {_fmt(p.get('loss'), '.3f')} · lr {p['lr']:.1e} · {_fmt(p.get('tokens_per_s'), ',.0f')} tok/s"
            self.progress.update(self.task, completed=p["step"], info=info)
        elif kind == "log" and self.progress is None:
            terms = " | ".join(
                f"{k} {v:.4g}"
                for k, v in p.items()
                if k not in ("step", "split", "epoch", "lr", "tokens_per_s", "elapsed_s")
                and isinstance(v, float)
            )
            err.print(
                f"step {p['step']} | epoch {p['epoch']:.2f} | {terms} | lr {p['lr']:.2e} | {p['tokens_per_s']:,.0f} tok/s",
                markup=False,
                highlight=False,
            )
        elif kind == "eval":
            keys = ["ppl", "ppl_prior", "accuracy", "macro_f1", "active_units"]
            keys += ["codes_used", "usage_ppl", "code_acc", "code_acc_majority"]  # codebook
            keys += [k for k in p if k.startswith("acc_")]  # a method's per-attribute accuracies
            extra = " · ".join(f"{k} {p[k]:.2f}" for k in keys if isinstance(p.get(k), float))
            msg = f"valid @ step {p['step']}: loss {p.get('loss', float('nan')):.4f}" + (
                f" · {extra}" if extra else ""
            )
            (self.progress.console if self.progress else err).print(
                msg, markup=False, highlight=False
            )
        elif kind == "save" and self.progress is None:
            err.print(f"saved {p['path']}", markup=False, highlight=False)
        elif kind == "stage":
            state = " (finished earlier)" if p["done"] else ""
            err.print(
                f"stage {p['index']}/{p['of']}: {p['stage']} → {p['output_dir']}{state}",
                markup=False,
                highlight=False,
            )
        elif kind == "figure":
            err.print(f"wrote {p['path']}", markup=False, highlight=False)
        elif kind == "users":
            err.print(
                f"users: {p['users']:,} with an adapter to train ({p['done']:,} finished earlier, "
                f"{p['too_few']:,} below model.min_examples), {p['processes']} process(es); base {p['base']}",
                markup=False,
                highlight=False,
            )
        elif kind == "user":
            err.print(
                f"user {p['user_id']}: {p['examples']} turns, {p['steps']} steps, valid loss "
                f"{p['valid_loss_before']:.4f} → {p['valid_loss_after']:.4f} "
                f"(best at step {p['best_step']}, {p['seconds']:.1f} s, {p['size_bytes'] / 1024:,.0f} KiB)",
                markup=False,
                highlight=False,
            )


def render_debug_tokens(examples: list[Any]) -> None:
    """Each example's tokens, trained ones highlighted, masked ones dimmed."""
    out.print(
        "[bold]--debug-tokens:[/] [green]green[/] = trained (label = token), [dim]dim[/] = masked (label -100)"
    )
    for ex, tokens in examples:
        text = Text()
        for t in tokens:
            piece = t.token.replace("Ġ", "·").replace("Ċ", "⏎\n")
            text.append(f"{piece}", style="bold green" if t.trained else "dim")
            text.append(f"[{t.id}] ", style="green" if t.trained else "dim")
        trained = sum(t.trained for t in tokens)
        out.print(f"[bold]{escape(ex.id)}[/] ({len(tokens)} tokens, {trained} trained)")
        out.print(text)


def render_result(r: Any) -> None:
    rows = [
        *[
            [f"stage {i + 1}: {s.output_dir}", f"{s.steps:,} steps → {s.final_dir}"]
            for i, s in enumerate(getattr(r, "stages", [])[:-1])
        ],
        ["final checkpoint", str(r.final_dir)],
        ["steps", f"{r.steps:,} / {r.total_steps:,}"],
        ["time", f"{r.seconds:.1f} s"],
    ]
    if r.last_train:
        rows.append(
            ["train loss (last log window)", f"{r.last_train.get('loss', float('nan')):.4f}"]
        )
        rows.append(["tokens / s", f"{r.last_train.get('tokens_per_s', 0):,.0f}"])
    if r.last_valid:
        v = r.last_valid
        rows.append(
            [
                "valid loss" + (" / perplexity" if "ppl" in v else ""),
                f"{v['loss']:.4f}" + (f" / {v['ppl']:.2f}" if "ppl" in v else ""),
            ]
        )
        if "users" in v:  # lora stage users
            rows.append(
                [
                    "user adapters (valid loss before → after)",
                    f"{v['users']:,}: {v['loss_before']:.4f} → {v['loss']:.4f}, lower for {v['helped']:,}",
                ]
            )
        if "accuracy" in v:
            rows.append(["valid accuracy / macro-F1", f"{v['accuracy']:.2f} / {v['macro_f1']:.2f}"])
    if r.stopped_early:
        rows.append(["early stopping", "yes"])
    if r.plot:
        rows.append(["loss curves", str(r.plot)])
    out.print(table("training done", ["", "value"], rows, justify_numbers=False))
