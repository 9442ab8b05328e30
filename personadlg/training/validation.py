"""A fit's validation pass: token-weighted loss terms, perplexity and the method's own metrics."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import torch

from personadlg.models.base import hook
from personadlg.training.data import eval_batches
from personadlg.training.fit_state import FitRun


def validate(run: FitRun, *, step: int) -> dict[str, Any]:
    """The validation record of STEP: each loss term weighted by target tokens over all processes,
    `ppl` (unless the method's loss is not a token NLL) and the method's `eval_metrics`."""
    acc, model = run.acc, run.model
    inner = acc.unwrap_model(run.module)
    inner.eval()
    sums: dict[str, float] = defaultdict(float)
    stats: dict[str, torch.Tensor] = {}
    scorer = hook(model, "eval_stats")
    weight = 0.0
    with torch.no_grad():
        for idx in eval_batches(
            len(run.valid_feats),
            batch_size=run.tc.batch_size,
            world_size=run.world,
            rank=acc.process_index,
        ):
            batch = run.batch(run.valid_feats, idx)
            with acc.autocast():
                terms = inner(**batch)
            w = float(model.count_tokens(batch)[1] or len(idx))
            for name, value in terms.items():
                if not name.startswith("_"):
                    sums[name] += float(value) * w
            weight += w
            if scorer is not None:
                for name, value in scorer(batch, terms).items():
                    stats[name] = stats[name] + value if name in stats else value.detach().clone()
    inner.train()
    names = sorted(sums) or ["loss"]
    totals = acc.reduce(
        torch.tensor([sums[n] for n in names] + [weight], device=acc.device, dtype=torch.float64),
        "sum",
    ).tolist()
    record: dict[str, Any] = {
        "step": step,
        "split": "valid",
        **{n: v / max(totals[-1], 1e-12) for n, v in zip(names, totals)},
    }
    if hook(model, "perplexity") is not False:
        record["ppl"] = math.exp(min(record.get("loss", 0.0), 50.0))
    if scorer is not None and stats:
        summed = {k: acc.reduce(v.to(acc.device), "sum").cpu() for k, v in sorted(stats.items())}
        record.update(hook(model, "eval_metrics")(summed))
    return record
