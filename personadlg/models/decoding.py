"""Decoding through `model.generate`, with one random generator per example when sampling.

Sampling normally draws from one global random stream, so an example's response depends on the
batch it happens to be in. Here each row has its own `torch.Generator` seeded from the example:
temperature warps the scores, `PerRowSampler` keeps the top-k / top-p tokens (`nucleus`: the same
sets as transformers' warpers, found among the most probable candidates instead of sorting a
30k-token vocabulary at every step), draws the next token for each row from its own generator and
hands greedy decoding a one-hot choice. Reruns, resumed runs and
different batch sizes therefore give the same response for the same example and seed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
)

from personadlg.config import GenerateConfig
from personadlg.errors import UsageError

CANDIDATES = 1024
"""Tokens a top-k / top-p step considers before sorting the whole vocabulary (a row whose nucleus
is wider is sorted in full, so the result is exact)."""


def nucleus(
    probs: torch.Tensor, *, top_k: int = 0, top_p: float = 1.0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The tokens top-k then top-p keep, as `transformers`' TopKLogitsWarper and TopPLogitsWarper
    do: probs (B, V) → per row (weights (C_i,), token ids (C_i,)) of the kept tokens, in
    vocabulary order (so that a row's draw does not move when near-equal probabilities swap ranks
    between a batch and the row alone).

    Only the C most probable tokens are sorted (C = top_k, or CANDIDATES when top-k is off); a row
    whose nucleus does not fit in them is redone over the whole vocabulary. A row's result never
    depends on the other rows of the batch (its sampling must not either)."""
    v = probs.shape[1]
    cap = min(v, top_k if top_k > 0 else CANDIDATES)
    vals, idx = probs.topk(cap, dim=-1)  # descending
    if top_k > 0:
        vals = vals / vals.sum(-1, keepdim=True)  # top-p reads the distribution top-k left
    if top_p >= 1.0:
        out_k = []
        for v_row, i_row in zip(vals, idx):
            ids, order = i_row.sort()
            out_k.append((v_row[order], ids))
        return out_k
    out = []
    for p_row, v_row, i_row in zip(probs, vals, idx):
        if top_k <= 0 and cap < v and float(v_row.sum()) < top_p:  # the nucleus is wider
            v_row, i_row = p_row.sort(descending=True)
        keep = (v_row.cumsum(-1) - v_row) < top_p  # the mass above a token is below top_p
        keep[0] = True
        ids, order = i_row[keep].sort()  # vocabulary order: near-ties may swap, ids do not move
        out.append((v_row[keep][order], ids))
    return out


def draw(
    weights: torch.Tensor, ids: torch.Tensor, vocab: int, generator: torch.Generator
) -> torch.Tensor:
    """One of the token IDS (C,) sampled in proportion to WEIGHTS (C,): an exponential race with one
    random number per vocabulary entry (VOCAB of them from GENERATOR, whichever tokens compete),
    so the draw does not move when a weightless token joins or leaves the candidates or rounding
    shifts the weights a little — a row's reply stays independent of the batch it is in."""
    race = torch.empty(vocab, device=weights.device).exponential_(generator=generator)
    return ids[torch.argmax(weights / race[ids])]


class PerRowSampler(LogitsProcessor):
    """Sample each row's next token with that row's own generator, after top-k / top-p (`nucleus`);
    return scores that make it the argmax."""

    def __init__(self, seeds: Sequence[int], *, top_k: int = 0, top_p: float = 1.0) -> None:
        self.seeds = list(seeds)
        self.top_k, self.top_p = top_k, top_p
        self.generators: list[torch.Generator] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        if self.generators is None:
            self.generators = [
                torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds
            ]
        probs = torch.softmax(scores.float(), dim=-1)  # (B, V)
        v = probs.shape[1]
        if self.top_k > 0 or self.top_p < 1.0:
            rows = nucleus(probs, top_k=self.top_k, top_p=self.top_p)
        else:
            vocab = torch.arange(v, device=probs.device)
            rows = [(p, vocab) for p in probs]
        choice = torch.stack([draw(w, ids, v, g) for (w, ids), g in zip(rows, self.generators)])
        choice = choice[:, None]  # (B, 1)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, choice, 0.0)
        return out


def check_decoding_settings(cfg: GenerateConfig) -> None:
    """Refuse decoding settings personadlg cannot honour together (UsageError): beam search with
    sampling (`PerRowSampler` draws one token per row; it does not sample beams), which would
    otherwise silently decode with one beam."""
    if cfg.do_sample and cfg.num_beams > 1:
        raise UsageError(
            f"num_beams: beam search (num_beams={cfg.num_beams}) cannot be combined with "
            "do_sample=true in personadlg; use one"
        )


def decoding_dict(cfg: GenerateConfig) -> dict[str, Any]:
    """The decoding settings recorded in every output record."""
    out: dict[str, Any] = {"max_new_tokens": cfg.max_new_tokens}
    if cfg.min_new_tokens:
        out["min_new_tokens"] = cfg.min_new_tokens
    if cfg.do_sample:
        out.update(do_sample=True, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
    elif cfg.num_beams > 1:
        out.update(num_beams=cfg.num_beams)
    else:
        out.update(greedy=True)
    if cfg.repetition_penalty != 1.0:
        out["repetition_penalty"] = cfg.repetition_penalty
    if cfg.no_repeat_ngram_size:
        out["no_repeat_ngram_size"] = cfg.no_repeat_ngram_size
    return out


def _spurious_padding_warning(record: logging.LogRecord) -> bool:
    """False for transformers' "pass an attention_mask" warning: `generate_ids` always passes the
    mask, and the warning fires on later decoding steps when a finished row's new token is the pad
    token (seen with a cache prefix passed as `past_key_values`)."""
    return "We strongly recommend passing in an `attention_mask`" not in record.getMessage()


def _beams_for_adapters_warning(record: logging.LogRecord) -> bool:
    """False for "passing generation_config together with num_beams is deprecated": peft's mixed
    adapter batches need num_beams as a keyword (see `generate_ids`), the values agree."""
    return "together with generation-related arguments=({'num_beams'})" not in record.getMessage()


@contextmanager
def _quiet_padding_warning() -> Iterator[None]:
    filters = [
        ("transformers.modeling_utils", _spurious_padding_warning),
        ("transformers.generation.utils", _beams_for_adapters_warning),
    ]
    for name, f in filters:
        logging.getLogger(name).addFilter(f)
    try:
        yield
    finally:
        for name, f in filters:
            logging.getLogger(name).removeFilter(f)


def generate_ids(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    cfg: GenerateConfig,
    seeds: Sequence[int],
    pad_token_id: int,
    eos_token_id: int | None,
    **model_kwargs: Any,
) -> torch.Tensor:
    """`model.generate` with CFG's decoding; returns the new token ids (B, T_new) for causal and seq2seq models."""
    gen = GenerationConfig(
        max_new_tokens=cfg.max_new_tokens,
        min_new_tokens=cfg.min_new_tokens or None,
        do_sample=False,
        num_beams=1 if cfg.do_sample else cfg.num_beams,
        repetition_penalty=cfg.repetition_penalty,
        no_repeat_ngram_size=cfg.no_repeat_ngram_size,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        bos_token_id=getattr(model.generation_config, "bos_token_id", None),
        decoder_start_token_id=getattr(model.generation_config, "decoder_start_token_id", None),
    )
    processors = LogitsProcessorList()
    if cfg.do_sample:
        if cfg.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(cfg.temperature))
        processors.append(PerRowSampler(seeds, top_k=cfg.top_k, top_p=cfg.top_p))
    # peft's mixed-adapter batches (`adapter_names`) read the beam count from generate's keyword
    # arguments, not from the generation config
    beams_for_adapters = {"num_beams": gen.num_beams} if "adapter_names" in model_kwargs else {}
    with torch.no_grad(), _quiet_padding_warning():
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=gen,
            logits_processor=processors,
            **beams_for_adapters,
            **model_kwargs,
        )
    if getattr(model.config, "is_encoder_decoder", False):
        return out[:, 1:]  # drop the decoder start token
    return out[:, input_ids.shape[1] :]
