"""Run logging: `metrics.jsonl` (always), TensorBoard (optional), and loss-curve plots (PNG, SVG or
PDF)."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import warnings
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from personadlg.data.jsonl import AtomicWriter
from personadlg.errors import DataError, UsageError

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"


class MetricLogger(Protocol):
    def log(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class JsonlLogger:
    """Appends one JSON object per log step to RUN_DIR/metrics.jsonl (truncated to STEP on resume)."""

    def __init__(self, run_dir: Path, *, resume_step: int | None = None) -> None:
        self.path = run_dir / METRICS_FILE
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():  # drop lines logged after the checkpoint we resume from
            kept = [r for r in read_records(self.path) if r.get("step", 0) <= resume_step]
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            tmp.replace(self.path)
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def log(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class TensorBoardLogger:
    """Scalars to RUN_DIR/tb (needs the `tensorboard` package)."""

    def __init__(self, run_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UsageError(
                "train.tensorboard: true needs the tensorboard package (pip install tensorboard)"
            ) from None
        self.writer = SummaryWriter(log_dir=str(run_dir / "tb"))

    def log(self, record: dict[str, Any]) -> None:
        split = record.get("split", "train")
        for k, v in record.items():
            if k not in ("step", "split", "epoch") and isinstance(v, (int, float)):
                self.writer.add_scalar(f"{split}/{k}", v, record["step"])

    def close(self) -> None:
        self.writer.close()


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl; a last line torn by a kill mid-write is skipped with a
    warning, any other bad line (not UTF-8, not a JSON object) is a DataError naming it."""
    return [rec for _, rec in numbered_records(path)]


def numbered_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) of every record of a metrics.jsonl (see `read_records`)."""
    data = path.read_bytes()
    torn = bool(data) and not data.endswith(b"\n")
    lines = data.split(b"\n")
    records = []
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
            if not isinstance(rec, dict):
                raise ValueError("not an object")
        except (ValueError, RecursionError) as err:
            if torn and n == len(lines):
                logger.warning(
                    "%s:%d: skipped a last line cut short by an interrupted run", path, n
                )
                continue
            if isinstance(err, UnicodeDecodeError):
                raise DataError(
                    f"not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1})",
                    path=str(path),
                    line=n,
                ) from None
            raise DataError("not a metrics record (JSON object)", path=str(path), line=n) from None
        records.append((n, rec))
    return records


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise UsageError(f"{run_dir}: no {METRICS_FILE} (is this a training run directory?)")
    return read_records(path)


_NOT_CURVES = {"step", "epoch", "split", "tokens_per_s", "elapsed_s", "tokens", "examples"}
KINDS = ("losses", "accuracies", "diagnostics", "optimization")
_DIAGNOSTICS = ("ppl", "active_units", "mi", "beta", "nfe")
_OPTIMIZATION = ("lr", "grad_norm")


def curve_kind(term: str) -> str:
    """Which row of the plot a logged term belongs to."""
    base = term.removeprefix("prior_")
    if base in _OPTIMIZATION:
        return "optimization"
    if base.startswith("acc") or base in ("accuracy", "macro_f1") or base.endswith("_acc"):
        return "accuracies"
    if base.startswith(_DIAGNOSTICS):
        return "diagnostics"
    return "losses"


def panel_of(term: str) -> str:
    """Terms drawn on one panel: a term and its `prior_` / `_raw` / `_prior` variants."""
    return term.removeprefix("prior_").removesuffix("_raw").removesuffix("_prior")


PLOT_FORMATS = ("png", "svg", "pdf")
MAX_PANELS = 32
"""`plot_run` draws at most this many panels (the first ones, losses first); the rest are named
in a warning."""
MAX_VALUE = 1e100
"""Values beyond ±MAX_VALUE (and NaN, ±inf) are left out of the curves, with a note."""
MAX_STEP = 2**53


def plot_path(out: str | Path, *, option: str = "--out") -> Path:
    """The file a plot of OUT is written to: OUT itself when it ends in .png, .svg or .pdf, OUT
    with `.png` added when it has no suffix. Any other suffix, and a directory, device or FIFO, is
    a UsageError naming OPTION."""
    from personadlg.data.paths import check_outputs

    if not str(out).strip():
        raise UsageError(f"{option}: empty path; expected an image file to write")
    path = Path(out)
    check_outputs({option: path})
    suffix = path.suffix.lower().removeprefix(".")
    if not suffix:
        path = path.with_name(path.name + ".png")
        check_outputs({option: path})
    elif suffix not in PLOT_FORMATS:
        raise UsageError(
            f"{option} {out}: cannot write a {path.suffix} image; use a file ending in "
            + ", ".join(f".{f}" for f in PLOT_FORMATS)
            + " (no suffix: .png is added)"
        )
    return path


def _step_of(rec: dict[str, Any], path: Path, line: int) -> int:
    step = rec.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= MAX_STEP:
        raise DataError(
            path=str(path),
            line=line,
            field="step",
            expected="a whole number >= 0",
            got=step,
            got_text="no 'step' field" if "step" not in rec else None,
        )
    return step


def collect_series(path: Path) -> dict[str, list[tuple[int, float]]]:
    """{"train/loss": [(step, value), ...], ...} of metrics.jsonl PATH: the numeric terms of its
    train and valid records. A record without a whole-number step, or with a split that is not a
    string, is a DataError naming its line; NaN, ±inf and values beyond ±MAX_VALUE are left out
    with a note."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    skipped: dict[str, int] = {}
    first_skipped = 0
    for line, r in numbered_records(path):
        step = _step_of(r, path, line)
        split = r.get("split", "train")
        if not isinstance(split, str):
            raise DataError(
                path=str(path), line=line, field="split", expected="'train' or 'valid'", got=split
            )
        if split not in ("train", "valid"):
            continue
        for k, v in r.items():
            if k in _NOT_CURVES or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            if (isinstance(v, float) and not math.isfinite(v)) or abs(v) > MAX_VALUE:
                skipped[k] = skipped.get(k, 0) + 1
                first_skipped = first_skipped or line
                continue
            series[f"{split}/{k}"].append((step, float(v)))
    if skipped:
        logger.info(
            "%s:%d: left out %d value(s) that are NaN, infinite or beyond ±%s (%s)",
            path,
            first_skipped,
            sum(skipped.values()),
            f"{MAX_VALUE:g}".replace("e+", "e"),
            _names([f"{_cut(k)}: {n}" for k, n in sorted(skipped.items())]),
        )
    return series


def _cut(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _names(names: list[str], shown: int = 10) -> str:
    """The first SHOWN of NAMES, and how many more."""
    more = f", ... ({len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _label(text: str) -> str:
    """TEXT as plain text for matplotlib (no mathtext), cut to 60 characters."""
    return _cut(text).replace("$", r"\$")


def plot_run(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    columns: int = 4,
    max_panels: int = MAX_PANELS,
) -> Path:
    """Draw every logged term (train and valid) against the step, on a grid with one row of panels
    per kind (losses, accuracies, latent / model diagnostics, optimization); return the image path
    (OUT, see `plot_path`; default RUN_DIR/loss.png), written atomically.

    At most MAX_PANELS panels are drawn (a term and its variants share one): the first ones in
    kind order, the others named in a warning. A metrics.jsonl with no finite value to draw is a
    DataError."""
    run_dir = Path(run_dir)
    path = plot_path(out) if out is not None else plot_path(run_dir / PLOT_FILE, option="plot")
    metrics = run_dir / METRICS_FILE
    if not metrics.is_file():
        raise UsageError(f"{run_dir}: no {METRICS_FILE} (is this a training run directory?)")
    series = collect_series(metrics)
    if not series:
        raise DataError(
            "nothing to plot: no train or valid record with a finite numeric term",
            path=str(metrics),
        )
    terms = sorted({k.split("/", 1)[1] for k in series}, key=lambda t: (t != "loss", t))
    panels: dict[str, dict[str, list[str]]] = {kind: {} for kind in KINDS}
    for term in terms:
        panels[curve_kind(term)].setdefault(panel_of(term), []).append(term)
    rows = [(kind, list(p.items())) for kind, p in panels.items() if p]
    total = sum(len(items) for _, items in rows)
    if total > max_panels:
        kept: list[tuple[str, list[tuple[str, list[str]]]]] = []
        left_out: list[str] = []
        room = max_panels
        for kind, items in rows:
            left_out.extend(name for name, _ in items[room:])
            if items[:room]:
                kept.append((kind, items[:room]))
            room = max(room - len(items), 0)
        rows = kept
        logger.warning(
            "%s: %d panels of terms; drew the first %d, left out %s",
            metrics,
            total,
            max_panels,
            _names([_cut(n) for n in left_out]),
        )
    layout: list[tuple[str, list[tuple[str, list[str]]]]] = []
    for kind, items in rows:  # long kinds wrap onto more rows
        for i in range(0, len(items), columns):
            layout.append((kind, items[i : i + columns]))
    with _quiet_matplotlib():
        _draw(layout, series, columns, title=run_dir.resolve().name, path=path)
    return path


@contextlib.contextmanager
def _quiet_matplotlib() -> Iterator[None]:
    """Matplotlib's warnings (missing glyphs, tight layout) and log lines stay off the user's
    stderr while a plot is drawn."""
    mpl_logger = logging.getLogger("matplotlib")
    level = mpl_logger.level
    mpl_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        mpl_logger.setLevel(level)


def _draw(
    layout: list[tuple[str, list[tuple[str, list[str]]]]],
    series: dict[str, list[tuple[int, float]]],
    columns: int,
    *,
    title: str,
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = min(columns, max((len(items) for _, items in layout), default=1))
    fig, axes = plt.subplots(
        max(len(layout), 1),
        width,
        figsize=(3.6 * width, 2.6 * max(len(layout), 1)),
        squeeze=False,
    )
    try:
        styles = {"train": ("-", "C0"), "valid": ("o-", "C1")}
        for row, (kind, items) in enumerate(layout):
            for c in range(width):
                ax = axes[row, c]
                if c >= len(items):
                    ax.axis("off")
                    continue
                name, members = items[c]
                for term in members:
                    for split, (style, color) in styles.items():
                        pts = series.get(f"{split}/{term}")
                        if not pts:
                            continue
                        dashed = term != name  # a variant (prior_, _raw): dashed, same colour
                        ax.plot(
                            *zip(*pts),
                            ("--" if dashed else style),
                            label=_label(f"{split} {term}" if len(members) > 1 else split),
                            color=color,
                            markersize=3,
                            linewidth=1.2,
                        )
                ax.set_title(_label(name), fontsize=9)
                ax.tick_params(labelsize=7)
                ax.grid(alpha=0.3)
                ax.legend(fontsize=6, loc="best")
                if c == 0:
                    ax.set_ylabel(kind, fontsize=9, fontweight="bold")
                if row == len(layout) - 1 or all(k != kind for k, _ in layout[row + 1 :]):
                    ax.set_xlabel("step", fontsize=8)
        fig.suptitle(_label(title))
        fig.tight_layout()
        with AtomicWriter(path, mode="wb") as f:  # no half-drawn image under PATH
            fig.savefig(f, format=path.suffix.lower().removeprefix("."), dpi=100)
    finally:
        plt.close(fig)
