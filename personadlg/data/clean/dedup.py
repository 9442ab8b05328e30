"""Exact and near-duplicate detection over a stream of dialogues, in compact arrays.

Exact: an 8-byte hash of the normalized (case-folded, whitespace-collapsed) messages.
Near: MinHash signatures of word shingles, banded for LSH; candidate pairs come from sorting each
band's hashes (no O(N²) comparison) and are verified by signature agreement (an unbiased estimate
of Jaccard similarity). The first occurrence is kept; later ones are marked with its index.
Signatures and band hashes can live in memory-mapped files, so memory stays small.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from personadlg.data.schema import Dialogue

_trapz = getattr(np, "trapezoid", None) or np.trapz  # type: ignore[attr-defined]


def exact_key(d: Dialogue) -> int:
    """64-bit key of the dialogue's messages, case- and whitespace-insensitive (signed, fits int64)."""
    h = hashlib.blake2b(digest_size=8)
    for m in d.messages:
        h.update(m.role.encode())
        h.update(b"\x00")
        h.update(" ".join(m.content.casefold().split()).encode("utf-8"))
        h.update(b"\x01")
    return int.from_bytes(h.digest(), "little", signed=True)


def exact_dup(keys: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """For each position, the index of the first earlier equal key, or -1. Shapes: (N,) -> (N,)."""
    keys = np.asarray(keys)
    dup_of = np.full(len(keys), -1, dtype=np.int64)
    idx = np.arange(len(keys)) if exclude is None else np.nonzero(~exclude)[0]
    if len(idx) == 0:
        return dup_of
    order = idx[np.argsort(keys[idx], kind="stable")]
    k = keys[order]
    starts = np.r_[True, k[1:] != k[:-1]]
    first = order[starts][np.cumsum(starts) - 1]
    later = ~starts
    dup_of[order[later]] = first[later]
    return dup_of


def lsh_params(threshold: float, num_perm: int, fp_weight: float = 0.1) -> tuple[int, int]:
    """Bands b and rows r (b*r <= num_perm) minimising the weighted false-positive and -negative areas.

    Candidates are verified on their signatures afterwards, so false positives only cost a comparison:
    the default weights favour recall (P(candidate) ~0.9 at the threshold, ~1 above it).
    """
    xs = np.linspace(0.0, 1.0, 201)
    best, best_err = (1, num_perm), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            p = 1.0 - (1.0 - xs**r) ** b
            fp = _trapz(np.where(xs < threshold, p, 0.0), xs)
            fn = _trapz(np.where(xs >= threshold, 1 - p, 0.0), xs)
            err = fp_weight * fp + (1 - fp_weight) * fn
            if err < best_err:
                best, best_err = (b, r), err
    return best


class MinHasher:
    """MinHash signatures of word shingles with seeded universal hashing.

    Example:
        >>> mh = MinHasher(num_perm=128, shingle_size=3, seed=1)
        >>> sigs = mh.signatures([["a", "b", "c", "d"], ["x", "y"]])   # (2, 128) uint32
    """

    def __init__(self, *, num_perm: int = 128, shingle_size: int = 3, seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.num_perm, self.shingle_size = num_perm, shingle_size
        # multiply-shift hashing (Dietzfelbinger): h(x) = ((a*x + b) mod 2**64) >> 32, a odd
        self.a = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(
            1
        )
        self.b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
        self.mix = rng.integers(0, 2**63, size=shingle_size, dtype=np.uint64) * np.uint64(
            2
        ) + np.uint64(1)

    @staticmethod
    @lru_cache(maxsize=1 << 16)
    def _word_hash(word: str) -> int:
        return zlib.crc32(word.encode("utf-8"))

    def shingle_hashes(self, tokens: Sequence[str]) -> np.ndarray:
        """(S,) uint64 hashes of the word shingles of TOKENS (at least one, even for short texts)."""
        hashes = np.fromiter(
            (self._word_hash(t) for t in tokens), dtype=np.uint64, count=len(tokens)
        )
        k = self.shingle_size
        if len(hashes) < k:
            hashes = np.pad(hashes, (0, k - len(hashes)))
        n = len(hashes) - k + 1
        out = np.zeros(n, dtype=np.uint64)
        for j in range(k):
            out += hashes[j : j + n] * self.mix[j]  # wraps mod 2**64
        return out >> np.uint64(32)

    def signatures(
        self, token_lists: Sequence[Sequence[str]], chunk_shingles: int = 2048
    ) -> np.ndarray:
        """(N, num_perm) uint32 MinHash signatures, computed in vectorised chunks of ~CHUNK_SHINGLES shingles."""
        out = np.empty((len(token_lists), self.num_perm), dtype=np.uint32)
        a, b, shift = self.a[:, None], self.b[:, None], np.uint64(32)
        i = 0
        while i < len(token_lists):
            parts, total, j = [], 0, i
            while j < len(token_lists) and (total < chunk_shingles or j == i):
                s = self.shingle_hashes(token_lists[j])
                parts.append(s)
                total += len(s)
                j += 1
            x = np.concatenate(parts)
            offsets = np.cumsum([0] + [len(p) for p in parts[:-1]])
            h = np.multiply(a, x[None, :])  # (P, S); in place from here on, wrapping mod 2**64
            h += b
            h >>= shift
            out[i:j] = np.minimum.reduceat(h, offsets, axis=1).T
            i = j
        return out


def band_hashes(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(N, P) signatures -> (N, bands) uint64 hashes of each band of ROWS values."""
    n = sigs.shape[0]
    x = np.asarray(sigs[:, : bands * rows], dtype=np.uint64).reshape(n, bands, rows)
    mult = (np.arange(rows, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) | np.uint64(1)
    with np.errstate(over="ignore"):
        return (x * mult).sum(axis=2, dtype=np.uint64) ^ (
            np.arange(bands, dtype=np.uint64) << np.uint64(56)
        )


class SpillFiles:
    """Per-record arrays spilled to disk while streaming, so memory does not grow with the input.

    Signatures go to one row-major file and are read back row by row (`rows`); band hashes go to one
    file per band and are read back one band at a time (`band_columns`).
    """

    def __init__(self, directory: Path, *, num_perm: int, bands: int) -> None:
        self.dir, self.num_perm, self.bands, self.n = Path(directory), num_perm, bands, 0
        self._sig = open(self.dir / "sigs.u32", "wb")  # noqa: SIM115
        self._band = [open(self.dir / f"band{j}.u64", "wb") for j in range(bands)]  # noqa: SIM115

    def append(self, sigs: np.ndarray, band_hashes: np.ndarray) -> None:
        """Add (k, num_perm) signatures and their (k, bands) band hashes."""
        self._sig.write(np.ascontiguousarray(sigs, dtype=np.uint32).tobytes())
        for j, f in enumerate(self._band):
            f.write(np.ascontiguousarray(band_hashes[:, j], dtype=np.uint64).tobytes())
        self.n += len(sigs)

    def close(self) -> None:
        for f in (self._sig, *self._band):
            f.close()

    def band_columns(self) -> Iterator[np.ndarray]:
        for j in range(self.bands):
            yield np.fromfile(self.dir / f"band{j}.u64", dtype=np.uint64)

    def rows(self) -> RowFile:
        return RowFile(self.dir / "sigs.u32", width=self.num_perm, n=self.n)


class RowFile:
    """Fancy-indexable rows of a row-major uint32 file, read with pread (no memory map, no full load)."""

    def __init__(self, path: Path, *, width: int, n: int) -> None:
        self.path, self.width, self.shape = path, width, (n, width)

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        uniq, inverse = np.unique(index, return_inverse=True)
        out = np.empty((len(uniq), self.width), dtype=np.uint32)
        row_bytes = self.width * 4
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for k, i in enumerate(uniq.tolist()):
                out[k] = np.frombuffer(os.pread(fd, row_bytes, i * row_bytes), dtype=np.uint32)
        finally:
            os.close(fd)
        return out[inverse]


def near_dup(
    bands: np.ndarray | Iterable[np.ndarray],
    sigs: np.ndarray | RowFile,
    threshold: float,
    exclude: np.ndarray | None = None,
    verify_chunk: int = 1 << 16,
) -> np.ndarray:
    """For each position, the index of the earliest verified near-duplicate before it, or -1.

    Args:
        bands: (N, B) band hashes, or an iterable of B (N,) columns (read one at a time).
        sigs: (N, P) MinHash signatures, or a RowFile.
        threshold: estimated Jaccard similarity needed to call two dialogues near-duplicates.
        exclude: (N,) bool, positions to ignore (e.g. exact duplicates already removed).
    """
    n = sigs.shape[0]
    columns = (
        (bands[:, j] for j in range(bands.shape[1])) if isinstance(bands, np.ndarray) else bands
    )
    dup_of = np.full(n, -1, dtype=np.int64)
    idx = np.arange(n) if exclude is None else np.nonzero(~np.asarray(exclude))[0]
    if len(idx) < 2:
        return dup_of
    cand = []
    for column in columns:
        col = np.asarray(column)[idx]
        order = np.argsort(col, kind="stable")
        sc, si = col[order], idx[order]
        same = sc[1:] == sc[:-1]
        if not same.any():
            continue
        starts = np.r_[True, ~same]
        first = si[starts][np.cumsum(starts) - 1]
        member = ~starts
        cand.append(first[member] * n + si[member])  # against the bucket's first member
        cand.append(si[:-1][same] * n + si[1:][same])  # against the previous member
    if not cand:
        return dup_of
    pairs = np.unique(np.concatenate(cand))
    a_all, b_all = pairs // n, pairs % n
    need = int(np.ceil(threshold * sigs.shape[1] - 1e-9))
    earliest = np.full(n, n, dtype=np.int64)
    for s in range(0, len(pairs), verify_chunk):
        a, b = a_all[s : s + verify_chunk], b_all[s : s + verify_chunk]
        agree = (sigs[a] == sigs[b]).sum(axis=1)
        ok = agree >= need
        np.minimum.at(earliest, b[ok], a[ok])
    found = earliest < n
    dup_of[found] = earliest[found]
    return dup_of
