"""How big the real-data benchmarks run: `PDLG_BENCH_PROFILE=cpu|cpu-short|gpu|tiny` (default cpu);
`PDLG_BENCH_SEEDS=0,1` narrows a profile's split seeds (cvae_seeds).

- `cpu` (`make bench`): on a 2-core CPU: the first 250 ConvAI2 validation dialogues, MiniLM 600
  steps of batch 16 per system (one pass over RCDG's 10,000 training pairs; on an idle machine
  1.55 s per finetune step and 4.0 per codebook step of 16 ConvAI2 examples of up to 128 tokens, so
  about 80 minutes for convai2's minilm arm — several times that when anything else runs), three
  split seeds for the cvae.
- `cpu-short`: a quarter of the training (150 MiniLM steps per system) and the first 100
  dialogues: convai2's minilm arm in 35 minutes.
- `gpu`: `benchmarks/gpu.sh` on one GPU (about 10 minutes for everything): all 1,000 ConvAI2
  validation dialogues, MiniLM three passes over RCDG at batch 64, bf16 mixed precision.
- `tiny`: the same code paths in a couple of minutes on a CPU (a smoke run of gpu.sh).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

SHARED = Path(
    os.environ.get("PDLG_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
"""The real corpora (`../shared/data`, or $PDLG_SHARED_DATA)."""

DECODINGS = {
    "greedy": ["max_new_tokens=32", "do_sample=false", "no_repeat_ngram_size=3"],
    "top-p": [
        "max_new_tokens=32",
        "do_sample=true",
        "top_p=0.9",
        "temperature=0.8",
        "no_repeat_ngram_size=3",
    ],
}
"""The two decodings every real-data benchmark reports: greedy (no repeated trigrams) and top-p."""


@dataclass(frozen=True)
class Profile:
    name: str
    dialogues: int
    """ConvAI2 validation dialogues generated for (from the first)."""
    scratch_steps: int
    """Optimizer steps of the from-scratch arm (batch 8)."""
    minilm_steps: int
    minilm_batch: int
    gen_batch: int
    train: tuple[str, ...] = ()
    """Extra train.* overrides of every MiniLM run (e.g. mixed precision)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    max_train_examples: int | None = None
    """Cap on the training pairs (tiny: a few hundred)."""
    adapter_epochs: int = 10
    finetune_users_steps: int = 0
    """Steps of the users benchmark's "finetune on all users" (0: its three epochs)."""


PROFILES = {
    "cpu": Profile(
        "cpu", dialogues=250, scratch_steps=1200, minilm_steps=600, minilm_batch=16, gen_batch=64
    ),
    "cpu-short": Profile(
        "cpu-short",
        dialogues=100,
        scratch_steps=1200,
        minilm_steps=150,
        minilm_batch=16,
        gen_batch=64,
    ),
    "gpu": Profile(
        "gpu",
        dialogues=1000,
        scratch_steps=1200,
        minilm_steps=470,
        minilm_batch=64,
        gen_batch=256,
        train=("train.mixed_precision=bf16",),
    ),
    "tiny": Profile(
        "tiny",
        dialogues=6,
        scratch_steps=8,
        minilm_steps=6,
        minilm_batch=4,
        gen_batch=16,
        seeds=(0,),
        max_train_examples=300,
        adapter_epochs=1,
        finetune_users_steps=6,
    ),
}


def current() -> Profile:
    name = os.environ.get("PDLG_BENCH_PROFILE", "cpu")
    if name not in PROFILES:
        raise SystemExit(f"PDLG_BENCH_PROFILE: expected one of {', '.join(PROFILES)}, got {name!r}")
    prof = PROFILES[name]
    seeds = os.environ.get("PDLG_BENCH_SEEDS", "").strip()
    if seeds:
        try:
            picked = tuple(int(s) for s in seeds.split(","))
        except ValueError:
            raise SystemExit(
                f"PDLG_BENCH_SEEDS: expected seeds like 0,1,2, got {seeds!r}"
            ) from None
        prof = replace(prof, seeds=picked)
    return prof
