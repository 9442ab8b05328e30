"""Run logging: `metrics.jsonl` (always), TensorBoard (optional), and loss-curve plots (PNG)."""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Protocol

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
    warning, any other bad line is a DataError naming it."""
    data = path.read_bytes()
    torn = bool(data) and not data.endswith(b"\n")
    lines = data.decode("utf-8", errors="replace").split("\n")
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
        except ValueError:
            if torn and n == len(lines):
                logger.warning(
                    "%s:%d: skipped a last line cut short by an interrupted run", path, n
                )
                continue
            raise DataError("not a metrics record (JSON object)", path=str(path), line=n) from None
        records.append(rec)
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


def plot_run(run_dir: str | Path, out: str | Path | None = None, *, columns: int = 4) -> Path:
    """Draw every logged term (train and valid) against the step, on a grid with one row of panels
    per kind (losses, accuracies, latent / model diagnostics, optimization); return the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in records:
        split = r.get("split", "train")
        for k, v in r.items():
            if (
                k in _NOT_CURVES
                or not isinstance(v, (int, float))
                or isinstance(v, bool)
                or (isinstance(v, float) and not math.isfinite(v))
            ):
                continue
            series[f"{split}/{k}"].append((r["step"], float(v)))
    terms = sorted({k.split("/", 1)[1] for k in series}, key=lambda t: (t != "loss", t))
    panels: dict[str, dict[str, list[str]]] = {kind: {} for kind in KINDS}
    for term in terms:
        panels[curve_kind(term)].setdefault(panel_of(term), []).append(term)
    rows = [(kind, list(p.items())) for kind, p in panels.items() if p]
    layout: list[tuple[str, list[tuple[str, list[str]]]]] = []
    for kind, items in rows:  # long kinds wrap onto more rows
        for i in range(0, len(items), columns):
            layout.append((kind, items[i : i + columns]))
    width = min(columns, max((len(items) for _, items in layout), default=1))
    fig, axes = plt.subplots(
        max(len(layout), 1),
        width,
        figsize=(3.6 * width, 2.6 * max(len(layout), 1)),
        squeeze=False,
    )
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
                        label=f"{split} {term}" if len(members) > 1 else split,
                        color=color,
                        markersize=3,
                        linewidth=1.2,
                    )
            ax.set_title(name, fontsize=9)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, loc="best")
            if c == 0:
                ax.set_ylabel(kind, fontsize=9, fontweight="bold")
            if row == len(layout) - 1 or all(k != kind for k, _ in layout[row + 1 :]):
                ax.set_xlabel("step", fontsize=8)
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    path = Path(out) if out else run_dir / PLOT_FILE
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
