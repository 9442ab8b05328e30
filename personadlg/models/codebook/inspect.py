"""What each code of a trained codebook stands for: `personadlg codebook inspect`.

For a data file with personas: every distinct persona sentence is encoded as a segment and assigned
to its nearest code; a code's usage is the share of the data's persona segments (with
multiplicity) it is assigned, and, over the examples' histories, how often the predictor chooses
it. Each code is shown with the persona sentences nearest to it; one code (`code=K`) also with
sample generations for a few contexts, conditioned on that code in every slot.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from personadlg.config import GenerateConfig
from personadlg.data.schema import Example
from personadlg.errors import UsageError
from personadlg.models.codebook.model import CodebookModel, persona_segments
from personadlg.models.spec import Block, Table


def _usage(counts: Counter[int], n: int) -> dict[str, float]:
    total = sum(counts.values())
    p = [c / total for c in counts.values() if c] if total else []
    return {
        "used": float(sum(1 for c in counts.values() if c)),
        "usage_ppl": math.exp(-sum(x * math.log(x) for x in p)) if p else 0.0,
        "total": float(total),
        "codes": float(n),
    }


@torch.no_grad()
def inspect_codebook(
    model: CodebookModel,
    examples: Sequence[Example],
    *,
    top: int = 5,
    code: int | None = None,
    contexts: int = 3,
    predict_limit: int = 500,
    decoding: GenerateConfig | None = None,
) -> dict[str, Any]:
    """A report of MODEL's codes over EXAMPLES (see the module docstring).

    Returns {"codes": [{code, assigned, assigned_share, predicted, predicted_share, nearest:
    [{sentence, distance}]}] (most used first), "assigned": usage summary, "predicted": usage
    summary, "sentences": distinct persona sentences, "generations": [...] when CODE is given}."""
    if not model.cfg.quantize:
        raise UsageError("this checkpoint has no codebook (model.quantize: false)")
    n = model.cfg.n_codes
    if code is not None and not 0 <= code < n:
        raise UsageError(f"--code: expected a code id in 0..{n - 1}, got {code}")
    with_persona = [ex for ex in examples if ex.persona]
    if not with_persona:
        raise UsageError("the data has no persona sentences to place in the codebook")
    seg_counts: Counter[str] = Counter()
    for ex in with_persona:
        seg_counts.update(persona_segments(ex.persona, model.cfg.slots))
    sentences = sorted(seg_counts)
    ids = [model.segment_ids([s])[0] for s in sentences]
    z = model.segment_encodings(ids)  # (S, D)
    codebook = model.net.codebook.detach().float().cpu()
    dist = torch.cdist(z.float(), codebook)  # (S, N)
    nearest = dist.argmin(-1).tolist()
    assigned: Counter[int] = Counter()
    for s, k in zip(sentences, nearest):
        assigned[k] += seg_counts[s]
    predicted: Counter[int] = Counter()
    sample = list(examples)[:predict_limit]
    batch = 64
    for i in range(0, len(sample), batch):
        chunk = sample[i : i + batch]
        saved = model.cfg
        model.cfg = _predicted_cfg(saved)
        try:
            model.choose_codes(chunk, seeds=[0] * len(chunk))
        finally:
            model.cfg = saved
        assert model.last_codes is not None
        predicted.update(int(c) for c in model.last_codes.flatten().tolist())
    total_a, total_p = sum(assigned.values()), sum(predicted.values())
    rows = []
    order = sorted(range(n), key=lambda k: (-assigned[k], -predicted[k], k))
    for k in order if code is None else [code]:
        col = dist[:, k]
        idx = col.argsort()[: max(top, 0)].tolist()
        rows.append(
            {
                "code": k,
                "assigned": assigned[k],
                "assigned_share": 100.0 * assigned[k] / max(total_a, 1),
                "predicted": predicted[k],
                "predicted_share": 100.0 * predicted[k] / max(total_p, 1),
                "nearest": [
                    {"sentence": sentences[j], "distance": float(col[j]), "own": nearest[j] == k}
                    for j in idx
                ],
            }
        )
    report: dict[str, Any] = {
        "codes": rows,
        "assigned": _usage(assigned, n),
        "predicted": _usage(predicted, n),
        "sentences": len(sentences),
        "examples": len(examples),
    }
    if code is not None:
        dec = decoding or GenerateConfig(max_new_tokens=32)
        chosen = list(examples)[: max(contexts, 0)]
        saved = model.cfg
        from personadlg.config import replace

        model.cfg = replace(saved, codes=[code] * saved.slots, persona_mode="predicted")
        model.net.cfg = model.cfg
        try:
            out = model.generate(
                chosen, decoding=dec, seeds=[dec.seed] * len(chosen), targets=[None] * len(chosen)
            )
        finally:
            model.cfg = saved
            model.net.cfg = saved
        report["generations"] = [
            {
                "id": ex.id,
                "context": ex.context[-1].content if ex.context else "",
                "generation": text,
            }
            for ex, text in zip(chosen, out.texts)
        ]
    return report


def _predicted_cfg(cfg: Any) -> Any:
    from personadlg.config import replace

    return replace(cfg, codes=[], persona_mode="predicted", code_sampling="argmax")


def render_inspection(report: dict[str, Any], options: Mapping[str, Any]) -> list[Block]:
    """`codebook inspect`'s report as the CLI prints it: a summary line, one row per code, and
    the sample generations of `--code K`."""
    a, p = report["assigned"], report["predicted"]
    blocks: list[Block] = [
        f"{options.get('checkpoint', 'checkpoint')}: {int(a['codes'])} codes; "
        f"{report['sentences']:,} distinct persona sentences use {int(a['used'])} (usage "
        f"perplexity {a['usage_ppl']:.1f}); the predictor chooses {int(p['used'])} over "
        f"{report['examples']:,} histories (perplexity {p['usage_ppl']:.1f})",
        Table(
            title="",
            columns=["code", "persona share %", "predicted %", "nearest persona sentences"],
            rows=[
                [
                    str(row["code"]),
                    f"{row['assigned_share']:.1f}",
                    f"{row['predicted_share']:.1f}",
                    "\n".join(
                        f"{n['sentence']} ({n['distance']:.2f}"
                        f"{'' if n['own'] else ', nearer another code'})"
                        for n in row["nearest"]
                    ),
                ]
                for row in report["codes"]
            ],
        ),
    ]
    for g in report.get("generations", []):
        blocks.append(
            f"{g['id']} user: {g['context']}\n  code {options['code']}: {g['generation']}"
        )
    return blocks
