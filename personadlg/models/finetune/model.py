"""The `finetune` model: a Hugging Face causal LM or encoder-decoder trained on the assistant's replies.

Training sequences (causal): `prompt + " " + reply + EOS`, loss only on the reply and EOS.
Encoder-decoder: the prompt is the encoder input, the reply + EOS the decoder target.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from personadlg.config import GenerateConfig, RunConfig
from personadlg.data.schema import Example
from personadlg.models.backbone import (
    build_from_config,
    dialogue_tokenizer,
    is_seq2seq,
    load_pretrained,
    load_tokenizer,
    position_limit,
)
from personadlg.models.base import BuildContext, PromptReading, TokenView
from personadlg.models.collate import pad_sequences
from personadlg.models.config_parts import PromptLMConfig
from personadlg.models.decoding import generate_ids
from personadlg.models.detokenize import decode
from personadlg.models.finetune.config import FinetuneConfig
from personadlg.models.lm_loss import reply_aligned, reply_loss
from personadlg.models.render import RenderOptions, render

logger = logging.getLogger(__name__)

IGNORE = -100  # the same as lm_loss.IGNORE


class LMLoss(nn.Module):
    """Wraps a HF LM so `forward(**batch)` returns the trainer's loss terms: {"loss": mean target-token NLL}
    (causal LMs: `lm_loss.reply_loss`, the LM head only where a reply token is predicted)."""

    def __init__(self, lm: nn.Module, *, causal: bool = True) -> None:
        super().__init__()
        self.lm = lm
        self.causal = causal

    def forward(self, **batch: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.causal:
            return {"loss": reply_loss(self.lm, **batch)}
        return {"loss": self.lm(**batch, use_cache=False).loss}


class FinetuneModel:
    """A fine-tuned dialogue LM (see module docstring)."""

    name = "finetune"
    tokenizer: Any
    module: nn.Module

    def __init__(self, lm: Any, tokenizer: Any, cfg: PromptLMConfig) -> None:
        self.lm, self.tokenizer, self.cfg = lm, tokenizer, cfg
        self.seq2seq = is_seq2seq(lm.config)
        self.module = LMLoss(lm, causal=not self.seq2seq)
        if not self.seq2seq and getattr(lm, "loss_type", "") is None:
            lm.loss_type = (
                "ForCausalLM"  # GPT-2's class name does not tell transformers which loss it uses
            )
        self.opts = RenderOptions(
            cfg.persona_in_prompt,
            cfg.profile_in_prompt,
            cfg.attributes_in_prompt,
            cfg.chat_template,
            cfg.profile_template,
        )

    # -- training ---------------------------------------------------------------------------------

    def _render(
        self,
        example: Example,
        *,
        with_target: bool,
        attributes: dict[str, str] | None = None,
        max_new_tokens: int = 0,
    ):
        c = self.cfg
        budget = c.max_length
        limit = position_limit(self.lm.config)
        if with_target:
            budget = c.max_length - c.max_response_tokens - 1 if not self.seq2seq else c.max_length
        elif not self.seq2seq and limit:
            budget = min(budget, limit - max_new_tokens)
        return render(
            example,
            self.tokenizer,
            self.opts,
            max_prompt_tokens=max(budget, 1),
            max_target_tokens=c.max_response_tokens,
            with_target=with_target,
            attributes=attributes,
        )

    def encode(self, example: Example) -> dict[str, Any] | None:
        if not example.reference:
            return None
        r = self._render(example, with_target=True)
        if self.seq2seq:
            return {"input_ids": r.prompt_ids, "labels": r.target_ids}
        return {
            "input_ids": r.prompt_ids + r.target_ids,
            "labels": [IGNORE] * len(r.prompt_ids) + r.target_ids,
        }

    def collate(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not self.seq2seq:  # every reply starts in the same column (`lm_loss.reply_aligned`)
            return reply_aligned(features, self.tokenizer.pad_token_id)
        ids, mask = pad_sequences([f["input_ids"] for f in features], self.tokenizer.pad_token_id)
        labels, _ = pad_sequences([f["labels"] for f in features], IGNORE)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def count_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[int, int]:
        targets = int((batch["labels"] != IGNORE).sum())
        seen = int(batch["attention_mask"].sum()) + (targets if self.seq2seq else 0)
        return seen, targets

    def explain(self, example: Example) -> list[TokenView]:
        feats = self.encode(example)
        if feats is None:
            return []
        out = []
        if self.seq2seq:
            out += [
                TokenView(self.tokenizer.convert_ids_to_tokens(t), t, False, "encoder")
                for t in feats["input_ids"]
            ]
            out += [
                TokenView(self.tokenizer.convert_ids_to_tokens(t), t, True, "decoder")
                for t in feats["labels"]
            ]
            return out
        return [
            TokenView(self.tokenizer.convert_ids_to_tokens(t), t, lab != IGNORE)
            for t, lab in zip(feats["input_ids"], feats["labels"])
        ]

    # -- generation ---------------------------------------------------------------------------------

    def prompt_reading(self, supports: tuple[str, ...]) -> PromptReading:
        """The recipe's prompt lines narrow SUPPORTS (a persona rendered by the profile template
        counts as a persona); `model.max_length` caps the prompt."""
        c = self.cfg
        template = c.profile_template
        used = {
            "persona": bool(c.persona_in_prompt)
            or bool(c.profile_in_prompt and template is not None and template.persona),
            "profile": bool(c.profile_in_prompt),
            "attributes": bool(c.attributes_in_prompt),
        }
        kept = [s for s in supports if used.get(s, True)]
        kept += [s for s, on in used.items() if on and s not in kept]
        return PromptReading(
            supports=tuple(kept),
            render=self.opts,
            prompt_cap=c.max_length,
            cap_name="model.max_length",
            context_budget=c.max_length,
            decoder_reads_prompt=not self.seq2seq,
        )

    def max_new_tokens_limit(self) -> int | None:
        """New tokens the model's positions leave room for: after a 1-token prompt (causal), or
        in the decoder (seq2seq with absolute positions); None when unbounded (e.g. T5)."""
        limit = position_limit(self.lm.config)
        if limit is None:
            return None
        return limit - 1

    def generate(
        self,
        examples: Sequence[Example],
        *,
        decoding: GenerateConfig,
        seeds: Sequence[int],
        targets: Sequence[dict[str, str] | None],
    ) -> list[str]:
        return self.generate_with(
            self.lm, examples, decoding=decoding, seeds=seeds, targets=targets
        )

    def generate_with(
        self,
        lm: Any,
        examples: Sequence[Example],
        *,
        decoding: GenerateConfig,
        seeds: Sequence[int],
        targets: Sequence[dict[str, str] | None],
        **model_kwargs: Any,
    ) -> list[str]:
        """`generate` through LM (this model's LM, or a peft model wrapping it; MODEL_KWARGS go to
        its `generate`, e.g. peft's `adapter_names`)."""
        tok = self.tokenizer
        prompts = [
            self._render(
                ex, with_target=False, attributes=t, max_new_tokens=decoding.max_new_tokens
            ).prompt_ids
            for ex, t in zip(examples, targets)
        ]
        n = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), n), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):  # causal: left padding; seq2seq: right padding
            if self.seq2seq:
                ids[i, : len(p)], mask[i, : len(p)] = torch.tensor(p), 1
            else:
                ids[i, n - len(p) :], mask[i, n - len(p) :] = torch.tensor(p), 1
        device = next(self.lm.parameters()).device
        lm.eval()
        new = generate_ids(
            lm,
            ids.to(device),
            mask.to(device),
            cfg=decoding,
            seeds=seeds,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            **model_kwargs,
        )
        return [decode(tok, row, truecase_text=self.cfg.tokenizer.truecase) for row in new.tolist()]

    # -- persistence ------------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        self.lm.save_pretrained(
            directory
        )  # model.safetensors + config.json + generation_config.json
        self.tokenizer.save_pretrained(directory)


def build(cfg: RunConfig, ctx: BuildContext) -> FinetuneModel:
    """A fresh model: a pretrained backbone, or one built from `model.from_config` with a trained tokenizer."""
    mcfg: FinetuneConfig = cfg.model
    opts = RenderOptions(
        mcfg.persona_in_prompt,
        mcfg.profile_in_prompt,
        mcfg.attributes_in_prompt,
        "plain",
        mcfg.profile_template,
    )
    tok = dialogue_tokenizer(
        mcfg.tokenizer,
        ctx,
        render=opts,
        pretrained=mcfg.backbone,
    )
    if mcfg.from_config:
        torch.manual_seed(cfg.train.seed)
        lm = build_from_config(
            mcfg.from_config,
            tok,
            arch=mcfg.arch,
            dtype=mcfg.dtype,
            attn_implementation=mcfg.attn_implementation,
        )
    else:
        assert mcfg.backbone is not None
        lm = load_pretrained(
            mcfg.backbone,
            arch=mcfg.arch,
            dtype=mcfg.dtype,
            attn_implementation=mcfg.attn_implementation,
        )
        if len(tok) > lm.get_input_embeddings().weight.shape[0]:
            lm.resize_token_embeddings(len(tok))
    if lm.config.pad_token_id is None:
        lm.config.pad_token_id = tok.pad_token_id
    return FinetuneModel(lm, tok, mcfg)


def load(directory: Path, cfg: RunConfig) -> FinetuneModel:
    """The model saved in a checkpoint directory."""
    mcfg: FinetuneConfig = cfg.model
    tok = load_tokenizer(directory)
    lm = load_pretrained(
        directory, arch=mcfg.arch, dtype=mcfg.dtype, attn_implementation=mcfg.attn_implementation
    )
    return FinetuneModel(lm, tok, mcfg)
