"""Features and their padding: what `encode` returns, kept as it is, and batches made of it.

`feature_array` stores one feature of one example compactly without changing its kind: token ids
stay integers (int32 when they fit), floats stay floats (float32), flags stay booleans, and a
list of token-id lists (e.g. M persona segments of different lengths) stays a list of arrays.
`pad_sequences` and `pad_nested` turn a batch of them into tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

_INT32 = np.iinfo(np.int32)


def _is_nested(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(isinstance(v, (list, tuple, np.ndarray)) for v in value)
    )


def feature_array(value: Any) -> np.ndarray | list[np.ndarray]:
    """VALUE as a numpy array of its own kind, or a list of arrays when it is a list of lists."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    if _is_nested(value):
        return [feature_array(v) for v in value]  # type: ignore[misc]
    arr = np.asarray(value)
    if arr.dtype == np.bool_:
        return arr
    if np.issubdtype(arr.dtype, np.integer):
        fits = arr.size == 0 or (arr.min() >= _INT32.min and arr.max() <= _INT32.max)
        return arr.astype(np.int32 if fits else np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float32)
    raise TypeError(f"a feature must be numbers or lists of numbers, got {arr.dtype}")


def pad_sequences(
    seqs: Sequence[Sequence[Any]], value: float, *, dtype: torch.dtype = torch.long
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad sequences: → values (B, T) of DTYPE, mask (B, T) with 1 on real positions."""
    n = max((len(s) for s in seqs), default=0)
    out = torch.full((len(seqs), n), value, dtype=dtype)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            out[i, : len(s)] = torch.as_tensor(np.asarray(s)).to(dtype)
            mask[i, : len(s)] = 1
    return out, mask


def pad_nested(
    batch: Sequence[Sequence[Sequence[Any]]], value: float, *, dtype: torch.dtype = torch.long
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad a batch of lists of sequences in both dimensions: → values (B, M, T) and lengths (B, M)
    (0 for the padded segments of examples with fewer than M)."""
    m = max((len(x) for x in batch), default=0)
    t = max((len(s) for x in batch for s in x), default=0)
    out = torch.full((len(batch), m, t), value, dtype=dtype)
    lengths = torch.zeros((len(batch), m), dtype=torch.long)
    for i, segments in enumerate(batch):
        for j, s in enumerate(segments):
            if len(s):
                out[i, j, : len(s)] = torch.as_tensor(np.asarray(s)).to(dtype)
            lengths[i, j] = len(s)
    return out, lengths
