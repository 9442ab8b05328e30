"""The embedded default: the whole pipeline on the bundled demo corpus, offline, on a CPU."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from personadlg.assets import DEMO_ATTRIBUTES, demo_corpus
from personadlg.data.clean import CleanConfig, clean
from personadlg.data.split import split
from personadlg.data.stats import stats

logger = logging.getLogger(__name__)


def run_demo(out_dir: str | Path) -> dict[str, Any]:
    """stats → clean → split on the demo corpus; returns what each step reported.

    Writes OUT_DIR/clean.jsonl (+ .rejects.jsonl, .report.json) and OUT_DIR/data/{train,valid,test}.jsonl.
    """
    out = Path(out_dir)
    corpus = demo_corpus()
    logger.info("demo corpus: %s", corpus)
    st = stats(corpus)
    rep = clean(
        [corpus],
        out=out / "clean.jsonl",
        rejects=out / "clean.rejects.jsonl",
        report=out / "clean.report.json",
        config=CleanConfig(attributes=DEMO_ATTRIBUTES, min_assistant_turns=4),
    )
    sp = split(
        out / "clean.jsonl", out_dir=out / "data", valid=0.1, test=0.1, by="dialogue", seed=0
    )
    return {"out_dir": str(out), "stats": st, "clean": rep.to_dict(), "split": sp.to_dict()}
