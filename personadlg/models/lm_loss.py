"""The causal-LM training loss on the reply tokens, with the LM head run only where it is needed.

A dialogue example is `prompt + reply`, trained on the reply only. A batch puts every row's first
reply token in the same column (`reply_aligned`: left padding before the prompt, right padding
after the reply) and gives each token its position among the row's real tokens, so the columns
that predict a reply token form one short window. `reply_loss` asks the model for logits of
those columns only (`logits_to_keep`): the vocabulary projection — half the compute of a small
model with a large vocabulary such as all-MiniLM-L6-v2's 30,522 WordPiece tokens — is no longer
paid for prompt tokens. The value is the mean NLL over the reply tokens, exactly what the
model's own `labels=` loss gives on the same rows.
"""

from __future__ import annotations

import inspect
from collections.abc import Hashable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

IGNORE = -100


def reply_aligned(features: Sequence[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Pad `input_ids` / `labels` features so that every row's first labelled token is in the same
    column: → input_ids, attention_mask, labels, position_ids (B, T). Positions count the row's
    real tokens (0 at its first), whatever its padding."""
    firsts = []
    for f in features:
        lab = np.asarray(f["labels"])
        hits = np.flatnonzero(lab != IGNORE)
        firsts.append(int(hits[0]) if hits.size else len(lab))
    start = max(firsts)
    shifts = [start - first for first in firsts]
    width = max(s + len(f["input_ids"]) for s, f in zip(shifts, features))
    b = len(features)
    ids = torch.full((b, width), pad_token_id, dtype=torch.long)
    labels = torch.full((b, width), IGNORE, dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.long)
    for i, (s, f) in enumerate(zip(shifts, features)):
        n = len(f["input_ids"])
        ids[i, s : s + n] = torch.as_tensor(np.asarray(f["input_ids"]), dtype=torch.long)
        labels[i, s : s + n] = torch.as_tensor(np.asarray(f["labels"]), dtype=torch.long)
        mask[i, s : s + n] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "position_ids": positions}


@lru_cache(maxsize=64)
def _keeps_logits(cls: Hashable) -> bool:
    return "logits_to_keep" in inspect.signature(cls.forward).parameters  # type: ignore[attr-defined]


def reply_loss(
    lm: Any,
    *,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    position_ids: torch.Tensor | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Mean NLL of the labelled tokens of LABELS (B, T) under the causal LM LM, the logits
    computed only for the columns that predict one (all of them when the model cannot select)."""
    predicts = (labels[:, 1:] != IGNORE).any(0)  # (T-1,): column t predicts token t + 1
    cols = predicts.nonzero().squeeze(-1)
    inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
    if position_ids is not None:
        inputs["position_ids"] = position_ids
    model_cls = type(getattr(lm, "get_base_model", lambda: lm)())
    selective = _keeps_logits(model_cls)  # type: ignore[arg-type]
    if selective:
        inputs["logits_to_keep"] = cols
    out = lm(**inputs, use_cache=False, **kwargs)
    logits = out.logits if selective else out.logits[:, cols]
    targets = labels[:, cols + 1]
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE
    )
