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


_NOT_CURVES = {"step", "epoch", "split", "lr", "tokens_per_s", "elapsed_s", "tokens", "examples"}


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw every logged loss term (train and valid) against the step, plus the learning rate; return the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    lr: list[tuple[int, float]] = []
    for r in records:
        split = r.get("split", "train")
        for k, v in r.items():
            if (
                k in _NOT_CURVES
                or not isinstance(v, (int, float))
                or (isinstance(v, float) and not math.isfinite(v))
            ):
                continue
            series[f"{split}/{k}"].append((r["step"], float(v)))
        if split == "train" and "lr" in r:
            lr.append((r["step"], r["lr"]))
    terms = sorted({k.split("/", 1)[1] for k in series})
    fig, axes = plt.subplots(
        len(terms) + 1, 1, figsize=(7, 2.4 * (len(terms) + 1)), sharex=True, squeeze=False
    )
    for ax, term in zip(axes[:, 0], terms):
        for split, style, color in (("train", "-", "C0"), ("valid", "o-", "C1")):
            pts = series.get(f"{split}/{term}")
            if pts:
                ax.plot(*zip(*pts), style, label=split, color=color, markersize=3)
        ax.set_ylabel(term)
        ax.legend(loc="upper right")
        ax.grid(alpha=0.3)
    ax = axes[-1, 0]
    if lr:
        ax.plot(*zip(*lr), color="gray")
    ax.set_ylabel("lr")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    path = Path(out) if out else run_dir / PLOT_FILE
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
