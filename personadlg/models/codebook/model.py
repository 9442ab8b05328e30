"""The `codebook` model (MORPHEUS): examples → features, batches → losses, histories → responses.

Training features of an example: the decoder sequence (prompt + reply, trained on the reply), the
prompt's length (its last token is where code prediction reads the history) and the persona's M
segments (its sentences, cycled when fewer), tokenised for the persona encoder. Examples without
a persona or a reply are skipped (nothing to learn codes from).

Generation uses no persona text: each example's M codes are predicted from its history (argmax,
or sampled from each slot's top-k with the example's seed), `model.persona_mode=oracle` encodes
the record's persona and snaps it to the nearest codes (the upper bound), `model.codes` forces
codes. The codes' vectors become a key/value prefix of M positions (`models/prefix.py`); the
chosen codes go into each record's `decoding`.

Checkpoint layout: `decoder/` (a Hugging Face model dir; absent with `freeze_decoder`, whose
base is named with its fingerprint in `base.json`), `encoder/` for a separate persona encoder
or the frozen copy of the decoder's body that encodes segments from stage `init` on
(`freeze_encoder`), `codebook.safetensors` (codebook, prefix MLP, predictor heads, dead-code
state), `codebook.json`, the tokenizer, `encoder_tokenizer/` when the encoder has its own.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from personadlg.config import GenerateConfig, RunConfig, to_dict
from personadlg.data.schema import Example
from personadlg.errors import UsageError
from personadlg.models.backbone import (
    build_from_config,
    dialogue_tokenizer,
    is_encoder_only,
    knobs,
    load_encoder,
    load_pretrained,
    load_tokenizer,
    position_limit,
)
from personadlg.models.base import BuildContext, Generations, PromptReading, TokenView
from personadlg.models.codebook.config import GENERATION_FIELDS, CodebookConfig
from personadlg.models.codebook.network import CodebookNetwork
from personadlg.models.collate import pad_nested, pad_sequences
from personadlg.models.decoding import generate_ids
from personadlg.models.detokenize import decode
from personadlg.models.loading import from_pretrained
from personadlg.models.partial import BASE_FILE, base_identity
from personadlg.models.prefix import cache_kwargs, generation_inputs
from personadlg.models.render import RenderOptions, render

logger = logging.getLogger(__name__)

IGNORE = -100
META_FILE = "codebook.json"
STATE_FILE = "codebook.safetensors"
INIT_REPORT = "init_report.json"
HISTORY_TOKENS = 256
"""Longest history a sentence-embedding history encoder reads (all-MiniLM-L6-v2 was trained on 128)."""
_SUBMODELS = ("decoder", "encoder", "history_encoder")
LOW_USAGE = 0.10
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def persona_segments(persona: Sequence[str], slots: int) -> list[str]:
    """The M = SLOTS persona segments: its sentences in order, cycled when fewer ([] if none)."""
    sentences = [s.strip() for p in persona for s in _SENTENCE.split(p) if s.strip()]
    if not sentences:
        return []
    return [sentences[i % len(sentences)] for i in range(slots)]


class CodebookModel:
    """A trained or fresh MORPHEUS model (see the module docstring)."""

    name = "codebook"
    tokenizer: Any
    perplexity = False  # the loss sums several terms; validation reports ppl of L_G itself

    def __init__(
        self,
        net: CodebookNetwork,
        tokenizer: Any,
        encoder_tokenizer: Any,
        cfg: CodebookConfig,
        history_tokenizer: Any = None,
    ) -> None:
        self.net, self.tokenizer, self.encoder_tokenizer, self.cfg = (
            net,
            tokenizer,
            encoder_tokenizer,
            cfg,
        )
        self.history_tokenizer = history_tokenizer  # with an HF history_encoder
        self.opts = RenderOptions(chat_template="auto")
        self.timings: dict[str, float] = {"codes": 0.0, "decode": 0.0}
        self._low_usage_warned = False
        self._apply_stage()

    @property
    def module(self) -> nn.Module:
        return self.net

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def _apply_stage(self) -> None:
        """Freeze what this stage does not train (so every trained parameter gets a gradient)."""
        c, net = self.cfg, self.net
        for p in net.parameters():
            p.requires_grad_(True)
        if c.freeze_decoder:
            for p in net.decoder.parameters():
                p.requires_grad_(False)
        frozen_encoder = (
            c.freeze_decoder
            or (c.freeze_encoder and c.stage in ("init", "joint"))
            or (c.stage == "role" and not c.role_trains_encoder)
        )
        if net.encoder is not None and frozen_encoder:
            for p in net.encoder.parameters():
                p.requires_grad_(False)
        if c.stage == "role" or not c.quantize:
            net.codebook.requires_grad_(False)
        if c.stage == "role":
            for p in net.predictor.parameters():
                p.requires_grad_(False)
        if net.history_encoder is not None:
            tuned = c.tune_history_encoder and c.stage == "joint" and c.quantize
            for p in net.history_encoder.parameters():
                p.requires_grad_(tuned)

    # -- features -----------------------------------------------------------------------------------

    def _prompt(self, example: Example, budget: int) -> list[int]:
        return render(
            example, self.tokenizer, self.opts, max_prompt_tokens=max(budget, 1), with_target=False
        ).prompt_ids

    def segment_ids(self, persona: Sequence[str]) -> list[list[int]]:
        """Encoder tokens of the M persona segments ([] when the persona is empty)."""
        segs = persona_segments(persona, self.cfg.slots)
        tok = self.encoder_tokenizer
        own = self.cfg.encoder != "decoder"  # an encoder with its own special tokens
        out = []
        for s in segs:
            ids = tok(s, add_special_tokens=own)["input_ids"][: self.cfg.max_segment_tokens]
            if not own and tok.eos_token_id is not None:
                ids = [*ids[: self.cfg.max_segment_tokens - 1], tok.eos_token_id]
            out.append(ids or [tok.eos_token_id or 0])
        return out

    def history_ids(self, example: Example) -> list[int]:
        """The history encoder's tokens of the example's context (plain template, no persona;
        oldest turns dropped first)."""
        assert self.net.history_encoder is not None
        limit = position_limit(self.net.history_encoder.config) or 10**9
        budget = min(self.cfg.max_length - self.cfg.max_response_tokens, limit, HISTORY_TOKENS)
        return render(
            example,
            self.history_tokenizer,
            RenderOptions(chat_template="plain"),
            max_prompt_tokens=budget,
            with_target=False,
        ).prompt_ids

    def encode(self, example: Example) -> dict[str, Any] | None:
        if not example.reference:
            return None
        segments = self.segment_ids(example.persona)
        if not segments:
            return None
        c = self.cfg
        r = render(
            example,
            self.tokenizer,
            self.opts,
            max_prompt_tokens=max(self._budget() - c.max_response_tokens - 1, 1),
            max_target_tokens=c.max_response_tokens,
            with_target=True,
        )
        feats = {
            "input_ids": r.prompt_ids + r.target_ids,
            "labels": [IGNORE] * len(r.prompt_ids) + r.target_ids,
            "prompt_len": [len(r.prompt_ids)],
            "segments": segments,
        }
        if self.net.history_encoder is not None:
            feats["hist_ids"] = self.history_ids(example)
        return feats

    def _budget(self) -> int:
        limit = position_limit(self.net.decoder.config) or 10**9
        return min(self.cfg.max_length, limit - self.cfg.slots)

    def collate(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pad = self.tokenizer.pad_token_id or 0
        ids, mask = pad_sequences([f["input_ids"] for f in features], pad)
        labels, _ = pad_sequences([f["labels"] for f in features], IGNORE)
        seg_ids, seg_len = pad_nested(
            [f["segments"] for f in features], self.encoder_tokenizer.pad_token_id or 0
        )
        batch = {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": labels,
            "prompt_len": torch.tensor([int(f["prompt_len"][0]) for f in features]),
            "seg_ids": seg_ids,
            "seg_len": seg_len,
        }
        if self.history_tokenizer is not None:
            hist, hist_mask = pad_sequences(
                [f["hist_ids"] for f in features], self.history_tokenizer.pad_token_id or 0
            )
            batch.update(hist_ids=hist, hist_mask=hist_mask)
        return batch

    def count_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[int, int]:
        seen = int(batch["attention_mask"].sum() + batch["seg_len"].sum())
        if "hist_mask" in batch:
            seen += int(batch["hist_mask"].sum())
        return seen, int((batch["labels"] != IGNORE).sum())

    def explain(self, example: Example) -> list[TokenView]:
        feats = self.encode(example)
        if feats is None:
            return []
        tok, enc = self.tokenizer, self.encoder_tokenizer
        views = [
            TokenView(enc.convert_ids_to_tokens(t), t, False, f"persona[{j}]")
            for j, seg in enumerate(feats["segments"])
            for t in seg
        ]
        views += [
            TokenView(tok.convert_ids_to_tokens(t), t, lab != IGNORE, "decoder")
            for t, lab in zip(feats["input_ids"], feats["labels"])
        ]
        if "hist_ids" in feats:
            views += [
                TokenView(self.history_tokenizer.convert_ids_to_tokens(t), t, False, "history")
                for t in feats["hist_ids"]
            ]
        return views

    # -- training hooks -----------------------------------------------------------------------------

    def on_step(self, step: int) -> None:
        """Before optimizer step STEP: dead-code restarts (`model.dead_code_steps`)."""
        self.net.step = step
        if self.cfg.stage == "joint" and self.cfg.quantize and self.cfg.dead_code_steps:
            n = self.net.restart_dead_codes(step)
            if n:
                logger.info("step %d: re-seeded %d dead code(s) from recent encodings", step, n)

    @torch.no_grad()
    def segment_encodings(
        self, segments: Sequence[Sequence[int]], *, batch_size: int = 256
    ) -> torch.Tensor:
        """Encodings (S, D) of tokenised segments (one row each), in eval mode."""
        net = self.net
        was = net.training
        net.eval()
        out = []
        pad = self.encoder_tokenizer.pad_token_id or 0
        for i in range(0, len(segments), batch_size):
            ids, lengths = pad_nested([[list(s)] for s in segments[i : i + batch_size]], pad)
            out.append(net.encode_segments(ids.to(self.device), lengths.to(self.device)).squeeze(1))
        net.train(was)
        return torch.cat(out).cpu() if out else torch.zeros(0, net.code_dim)

    def prepare(
        self,
        features: Sequence[dict[str, Any]],
        *,
        work_dir: Path,
        is_main: bool,
        broadcast: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        """Before the first step of a fresh run: from stage `init` on, a frozen copy of the
        decoder encodes persona segments (`freeze_encoder`; made here unless `init_from` brought
        one). Stage `init`: initialise the codebook from the encodings of every distinct persona
        segment of the training features (main process; the result is broadcast), and write
        `init_report.json` into WORK_DIR."""
        if self.net.needs_encoder_copy() and self.net.encoder is None:
            self.net.copy_encoder()  # the decoder as it leaves stage 1 (model.init_from)
            logger.info("persona segments are encoded by a frozen copy of the decoder from here on")
        if self.cfg.stage != "init" or not self.cfg.quantize:
            return
        from personadlg.models.codebook.init import init_codebook

        c = self.cfg
        codes = self.net.codebook.detach().clone()
        if is_main:
            unique = sorted({tuple(int(t) for t in s) for f in features for s in f["segments"]})
            t0 = time.perf_counter()
            x = self.segment_encodings(unique)
            encode_s = time.perf_counter() - t0
            codes, report = init_codebook(
                x,
                c.n_codes,
                method=c.init_method,
                seed=0,
                max_iterations=c.init_iterations,
                tol=c.init_tol,
                min_variance=c.init_min_variance,
            )
            info = {**report.to_dict(), "segments": len(unique), "encode_seconds": encode_s}
            logger.info(
                "codebook init (%s) over %d distinct persona segments: %d iterations, %s, "
                "log-likelihood %s, %d of %d codes used (usage perplexity %.1f), %.1f s",
                c.init_method,
                len(unique),
                report.iterations,
                "converged" if report.converged else "not converged",
                "-" if report.log_likelihood is None else f"{report.log_likelihood:.2f}",
                report.used,
                c.n_codes,
                report.usage_perplexity,
                report.seconds,
            )
            if report.note:
                logger.info("codebook init: %s", report.note)
            work_dir.mkdir(parents=True, exist_ok=True)
            (work_dir / INIT_REPORT).write_text(json.dumps(info, indent=2))
        codes = broadcast(codes.to(self.net.codebook.dtype))
        self.net.codebook.data.copy_(codes.to(self.net.codebook.device))

    def eval_stats(
        self, batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Sums over a validation batch: L_G × tokens; with codes, their usage, per-slot histograms
        and predictions, and the VQ distance."""
        f64 = torch.float64
        tokens = float((batch["labels"][:, 1:] != IGNORE).sum())
        stats = {"lm": torch.tensor([float(outputs["lm"]) * tokens, tokens], dtype=f64)}
        if "_codes" in outputs:
            k = outputs["_codes"].cpu()  # (B, M)
            pred = outputs["_logits"].argmax(-1).cpu()
            n, m = self.cfg.n_codes, self.cfg.slots
            hist = torch.zeros(m, n, dtype=f64)
            hist.scatter_add_(1, k.T, torch.ones(k.T.shape, dtype=f64))
            stats["slot_hist"] = hist
            stats["slot_correct"] = (pred == k).sum(0).to(f64)
            stats["vq_dist"] = torch.tensor(
                [float(outputs["_vq_dist"].sum()), float(k.numel())], dtype=f64
            )
        return stats

    def eval_metrics(self, stats: dict[str, torch.Tensor]) -> dict[str, float]:
        nll, tokens = stats["lm"].tolist()
        out = {"ppl": float(torch.exp(torch.tensor(min(nll / max(tokens, 1), 50.0))))}
        if "slot_hist" not in stats:
            return out
        hist = stats["slot_hist"]  # (M, N)
        per_slot = hist.sum(1)
        usage = hist.sum(0)
        p = usage / usage.sum().clamp(min=1)
        entropy = -(p[p > 0] * p[p > 0].log()).sum()
        used = int((usage > 0).sum())
        acc = stats["slot_correct"] / per_slot.clamp(min=1)
        majority = hist.max(1).values / per_slot.clamp(min=1)
        out.update(
            codes_used=float(used),
            dead_codes=float(self.cfg.n_codes - used),
            usage_ppl=float(entropy.exp()),
            vq_dist=float(stats["vq_dist"][0] / stats["vq_dist"][1].clamp(min=1)),
            code_acc=100.0 * float(acc.mean()),
            code_acc_majority=100.0 * float(majority.mean()),
        )
        for j in range(len(acc)):
            out[f"code_acc_slot{j}"] = 100.0 * float(acc[j])
        if used < LOW_USAGE * self.cfg.n_codes and not self._low_usage_warned:
            self._low_usage_warned = True
            logger.warning(
                "only %d of %d codes are used on the validation data (under %d%%): the codebook "
                "has collapsed; try model.init_method=em or kmeans, model.dead_code_steps, or a "
                "lower model.temperature",
                used,
                self.cfg.n_codes,
                int(LOW_USAGE * 100),
            )
        return out

    # -- generation ---------------------------------------------------------------------------------

    def prompt_reading(self, supports: tuple[str, ...]) -> PromptReading:
        """The context's plain text, within `model.max_length` tokens."""
        return PromptReading(
            supports=supports,
            render=RenderOptions(chat_template="plain"),
            context_budget=self.cfg.max_length,
        )

    def max_new_tokens_limit(self) -> int | None:
        limit = position_limit(self.net.decoder.config)
        return None if limit is None else limit - self.cfg.slots - 1

    def _prompts(
        self, examples: Sequence[Example], max_new_tokens: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompts (B, T) and their mask."""
        limit = position_limit(self.net.decoder.config) or 10**9
        # the prompt budget of training, so code prediction sees the same history as it learnt on
        train_budget = self._budget() - self.cfg.max_response_tokens - 1
        budget = min(train_budget, limit - self.cfg.slots - max_new_tokens)
        prompts = [self._prompt(ex, budget) for ex in examples]
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        return ids, mask

    @torch.no_grad()
    def choose_codes(
        self,
        examples: Sequence[Example],
        *,
        seeds: Sequence[int] | None = None,
        ids: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, str]:
        """Each example's M conditioning vectors (B, M, D) and how they were chosen; the codes
        themselves are in `self.last_codes` (B, M) (None without a codebook)."""
        c, net = self.cfg, self.net
        net.eval()
        b = len(examples)
        self.last_codes: torch.Tensor | None = None
        if c.codes:
            codes = torch.tensor([c.codes] * b, dtype=torch.long, device=self.device)
            self.last_codes = codes
            return net.codebook[codes].float(), "forced"
        if c.persona_mode == "oracle":
            segs = []
            for ex in examples:
                s = self.segment_ids(ex.persona)
                if not s:
                    raise UsageError(
                        f"example {ex.id}: model.persona_mode=oracle needs the record's persona, and it has none"
                    )
                segs.append(s)
            seg_ids, seg_len = pad_nested(segs, self.encoder_tokenizer.pad_token_id or 0)
            z = net.encode_segments(seg_ids.to(self.device), seg_len.to(self.device))
            if not c.quantize:
                return z, "oracle"
            codes = net.quantize(z)
            self.last_codes = codes
            return net.codebook[codes].float(), "oracle"
        if net.history_encoder is not None:
            hist, hist_mask = pad_sequences(
                [self.history_ids(ex) for ex in examples], self.history_tokenizer.pad_token_id or 0
            )
            state = net.history_embedding(hist.to(self.device), hist_mask.to(self.device))
        else:
            if ids is None or mask is None:
                ids, mask = self._prompts(examples, 1)
            state = net.history_state(
                ids.to(self.device),
                mask.to(self.device),
                ids.new_full((b,), ids.shape[1] - 1).to(self.device),
            )
        out = net.predict(state)  # (B, M, N) logits, or (B, M, D) vectors
        if not c.quantize:
            return out, "predicted"
        if c.code_sampling == "topk":
            top = out.topk(min(c.code_top_k, c.n_codes), dim=-1)
            probs = torch.softmax(top.values, -1)
            picks = []
            for i in range(b):
                g = torch.Generator().manual_seed(int(seeds[i]) if seeds else 0)
                row = torch.multinomial(probs[i].cpu(), 1, generator=g).squeeze(-1)
                picks.append(top.indices[i].cpu().gather(-1, row[:, None]).squeeze(-1))
            codes = torch.stack(picks).to(self.device)
        else:
            codes = out.argmax(-1)
        if c.sort_slots:
            codes = codes.sort(-1).values
        self.last_codes = codes
        return net.codebook[codes].float(), "predicted"

    def generate(
        self,
        examples: Sequence[Example],
        *,
        decoding: GenerateConfig,
        seeds: Sequence[int],
        targets: Sequence[dict[str, str] | None],
    ) -> Generations:
        tok, net = self.tokenizer, self.net
        t0 = time.perf_counter()
        ids, mask = self._prompts(examples, decoding.max_new_tokens)
        vectors, mode = self.choose_codes(examples, seeds=seeds, ids=ids, mask=mask)
        codes = self.last_codes
        t1 = time.perf_counter()
        beams = 1 if decoding.do_sample else max(decoding.num_beams, 1)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        cache = net.prefix(vectors, repeat=beams)
        inputs = generation_inputs(ids, mask, self.cfg.slots, pad)
        new = generate_ids(
            net.decoder,
            inputs["input_ids"].to(self.device),
            inputs["attention_mask"].to(self.device),
            cfg=decoding,
            seeds=seeds,
            pad_token_id=pad,
            eos_token_id=tok.eos_token_id,
            **cache_kwargs(net.decoder, cache),
        )
        self.timings["codes"] += t1 - t0
        self.timings["decode"] += time.perf_counter() - t1
        texts = [
            decode(tok, row, truecase_text=self.cfg.tokenizer.truecase) for row in new.tolist()
        ]
        shared: dict[str, Any] = {"persona_mode": mode}
        if mode == "predicted" and self.cfg.quantize:
            shared["code_sampling"] = self.cfg.code_sampling
            if self.cfg.code_sampling == "topk":
                shared["code_top_k"] = self.cfg.code_top_k
        records = (
            [{"codes": [int(x) for x in row]} for row in codes.tolist()]
            if codes is not None
            else None
        )
        return Generations(texts, shared={"codebook": shared}, records=records)

    def configure(self, cfg: CodebookConfig) -> None:
        """Take generation-time settings (persona_mode, code_sampling, code_top_k, codes) from CFG."""
        new, old = to_dict(cfg), to_dict(self.cfg)
        changed = [k for k in new if k not in GENERATION_FIELDS and new[k] != old.get(k)]
        if changed:
            raise UsageError(
                "only model." + ", model.".join(GENERATION_FIELDS) + " can change at generation; "
                f"these are fixed by training: {', '.join(changed)}"
            )
        self.cfg = cfg
        self.net.cfg = cfg

    # -- persistence --------------------------------------------------------------------------------

    def _base(self) -> dict[str, Any]:
        assert self.cfg.decoder is not None
        base = {"decoder": base_identity(self.cfg.decoder)}
        if self.net.encoder is not None:
            base["encoder"] = base_identity(self.cfg.encoder)
        if self.net.history_encoder is not None and not self.cfg.tune_history_encoder:
            base["history_encoder"] = base_identity(self.cfg.history_encoder)
        return {"ref": self.cfg.decoder, "sha256": base["decoder"]["sha256"], "parts": base}

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        net, c = self.net, self.cfg
        frozen = c.freeze_decoder
        if frozen:
            (directory / BASE_FILE).write_text(json.dumps(self._base(), indent=2))
        else:
            net.decoder.save_pretrained(directory / "decoder")
            if net.encoder is not None:
                net.encoder.save_pretrained(directory / "encoder")
        if net.history_encoder is not None and (not frozen or c.tune_history_encoder):
            net.history_encoder.save_pretrained(directory / "history_encoder")
        if self.history_tokenizer is not None:
            self.history_tokenizer.save_pretrained(directory / "history_tokenizer")
        rest = {
            k: v.detach().contiguous().cpu()
            for k, v in net.state_dict().items()
            if k.split(".", 1)[0] not in _SUBMODELS
        }
        save_file(rest, str(directory / STATE_FILE))
        meta = {
            "n_codes": c.n_codes,
            "slots": c.slots,
            "code_dim": net.code_dim,
            "stage": c.stage,
            "encoder": c.encoder,
            "history_encoder": c.history_encoder,
            "frozen_base": frozen,
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2))
        self.tokenizer.save_pretrained(directory)
        if self.encoder_tokenizer is not self.tokenizer:
            self.encoder_tokenizer.save_pretrained(directory / "encoder_tokenizer")


# -- building and loading ---------------------------------------------------------------------------


def _load_encoder(ref: str | Path, *, decoder_like: bool = False, **knob: Any) -> nn.Module:
    from transformers import AutoConfig

    config = from_pretrained(AutoConfig, ref, what="persona encoder", weights=False)
    if decoder_like:  # a frozen copy of the decoder's body
        body = load_encoder(ref, what="persona encoder", **knob)
        for p in body.parameters():
            p.requires_grad_(False)
        return body
    if getattr(config, "is_encoder_decoder", False):
        raise UsageError(f"{ref}: model.encoder must be an encoder-only model (BERT, MiniLM, ...)")
    return load_encoder(ref, what="persona encoder", **knob)


def _load_history_encoder(ref: str | Path, **knob: Any) -> nn.Module:
    from transformers import AutoConfig

    config = from_pretrained(AutoConfig, ref, what="history encoder", weights=False)
    if getattr(config, "is_encoder_decoder", False) or getattr(config, "is_decoder", False):
        raise UsageError(
            f"{ref}: model.history_encoder must be an encoder-only model (BERT, MiniLM, ...) or 'decoder'"
        )
    try:
        return load_encoder(ref, what="history encoder", add_pooling_layer=False, **knob)
    except TypeError:  # the architecture has no such option
        return load_encoder(ref, what="history encoder", **knob)


def build(cfg: RunConfig, ctx: BuildContext) -> CodebookModel:
    """A fresh model: a pretrained or from-scratch decoder, new codebook, prefix MLP and predictor."""
    from transformers import AutoConfig

    mcfg: CodebookConfig = cfg.model
    tok = dialogue_tokenizer(
        mcfg.tokenizer,
        ctx,
        render=RenderOptions(persona=True, chat_template="plain"),  # persona words in the vocab
        pretrained=mcfg.decoder,
    )
    torch.manual_seed(cfg.train.seed)
    knob = knobs(mcfg)
    if mcfg.decoder_from_config:
        decoder = build_from_config(mcfg.decoder_from_config, tok, arch="causal", **knob)
    else:
        assert mcfg.decoder is not None
        if mcfg.freeze_decoder and is_encoder_only(
            from_pretrained(AutoConfig, mcfg.decoder, what="decoder", weights=False)
        ):
            raise UsageError(
                f"model.freeze_decoder: {mcfg.decoder} is an encoder warm-started as a decoder, "
                "whose LM head is new and must train; freeze a pretrained causal LM (gpt2, ...)"
            )
        decoder = load_pretrained(mcfg.decoder, arch="causal", **knob)
        if len(tok) > decoder.get_input_embeddings().weight.shape[0]:
            if mcfg.freeze_decoder:
                raise UsageError(
                    "model.freeze_decoder: the tokenizer has more tokens than the frozen decoder's embeddings"
                )
            decoder.resize_token_embeddings(len(tok))
    if decoder.config.pad_token_id is None:
        decoder.config.pad_token_id = tok.pad_token_id
    encoder, enc_tok = None, tok
    if mcfg.encoder != "decoder":
        encoder = _load_encoder(mcfg.encoder, **knob)
        enc_tok = load_tokenizer(mcfg.encoder)
    history, hist_tok = None, None
    if mcfg.history_encoder != "decoder":
        history = _load_history_encoder(mcfg.history_encoder, **knob)
        hist_tok = load_tokenizer(mcfg.history_encoder)
    net = CodebookNetwork(decoder=decoder, encoder=encoder, history_encoder=history, cfg=mcfg)
    if net.needs_encoder_copy() and ctx.init_from and (ctx.init_from / "encoder").is_dir():
        net.copy_encoder()  # its weights come with model.init_from (e.g. the init stage's)
    model = CodebookModel(net, tok, enc_tok, mcfg, history_tokenizer=hist_tok)
    trained = sum(p.numel() for p in net.parameters() if p.requires_grad)
    logger.info(
        "codebook: %d codes × %d dims, %d slots; %.2fM parameters (%.2fM trained in stage %s)",
        mcfg.n_codes,
        net.code_dim,
        mcfg.slots,
        sum(p.numel() for p in net.parameters()) / 1e6,
        trained / 1e6,
        mcfg.stage,
    )
    return model


def load(directory: Path, cfg: RunConfig) -> CodebookModel:
    """The model saved in a checkpoint directory."""
    from safetensors.torch import load_file

    mcfg: CodebookConfig = cfg.model
    directory = Path(directory)
    if not (directory / META_FILE).is_file():
        raise UsageError(f"{directory}: not a codebook checkpoint (no {META_FILE})")
    meta = json.loads((directory / META_FILE).read_text())
    knob = knobs(mcfg)
    tok = load_tokenizer(directory)
    enc_dir = directory / "encoder_tokenizer"
    enc_tok = load_tokenizer(enc_dir) if enc_dir.is_dir() else tok
    hist_dir = directory / "history_tokenizer"
    hist_tok = load_tokenizer(hist_dir) if hist_dir.is_dir() else None
    encoder, history = None, None
    if meta.get("frozen_base"):
        recorded = json.loads((directory / BASE_FILE).read_text())
        parts = recorded.get("parts", {})
        for part, ref in (
            ("decoder", mcfg.decoder),
            ("encoder", mcfg.encoder),
            ("history_encoder", mcfg.history_encoder),
        ):
            if part in parts:
                check_base_part(directory, parts[part], str(ref))
        assert mcfg.decoder is not None
        decoder = load_pretrained(mcfg.decoder, arch="causal", **knob)
        if mcfg.encoder != "decoder":
            encoder = _load_encoder(mcfg.encoder, **knob)
        if "history_encoder" in parts:
            history = _load_history_encoder(mcfg.history_encoder, **knob)
    else:
        decoder = load_pretrained(directory / "decoder", arch="causal", **knob)
        if (directory / "encoder").is_dir():
            encoder = _load_encoder(
                directory / "encoder", decoder_like=mcfg.encoder == "decoder", **knob
            )
    if (directory / "history_encoder").is_dir():
        history = _load_history_encoder(directory / "history_encoder", **knob)
    if decoder.config.pad_token_id is None:
        decoder.config.pad_token_id = tok.pad_token_id
    net = CodebookNetwork(decoder=decoder, encoder=encoder, history_encoder=history, cfg=mcfg)
    state = load_file(str(directory / STATE_FILE))
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if k.split(".", 1)[0] not in _SUBMODELS]
    if missing or unexpected:
        raise UsageError(
            f"{directory / STATE_FILE}: does not match the recipe's model "
            f"(missing: {', '.join(missing) or '-'}; unexpected: {', '.join(unexpected) or '-'})"
        )
    return CodebookModel(net, tok, enc_tok, mcfg, history_tokenizer=hist_tok)


def check_base_part(directory: Path, recorded: dict[str, Any], ref: str) -> None:
    """A frozen part must be loaded from the weights it was trained on (sha256 compared)."""
    from personadlg.models.fingerprint import short

    current = base_identity(ref)
    if recorded.get("sha256") and current["sha256"] and recorded["sha256"] != current["sha256"]:
        raise UsageError(
            f"{directory}: trained on the frozen base {recorded.get('ref')} "
            f"({short(recorded['sha256'])}), but {ref} has other weights "
            f"({short(current['sha256'])}); load it onto the base it was trained on"
        )


__all__ = ["CodebookModel", "build", "load", "persona_segments"]
