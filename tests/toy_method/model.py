"""The lastturn model: the library's building blocks (tokenizer, from-config LM, rendering,
reply-only loss, decoding) around one idea — the prompt is the newest turn alone."""

from __future__ import annotations

import dataclasses
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
    load_pretrained,
    load_tokenizer,
    position_limit,
)
from personadlg.models.base import BuildContext, TokenView
from personadlg.models.decoding import generate_ids
from personadlg.models.detokenize import decode
from personadlg.models.lm_loss import reply_aligned, reply_loss
from personadlg.models.render import RenderOptions, render

IGNORE = -100
PLAIN = RenderOptions(chat_template="plain")


class _Loss(nn.Module):
    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, **batch: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": reply_loss(self.lm, **batch)}


def last_turn(example: Example) -> Example:
    """EXAMPLE with its context cut to the newest message."""
    return dataclasses.replace(example, context=list(example.context[-1:]))


class LastTurnModel:
    name = "lastturn"
    tokenizer: Any
    module: nn.Module

    def __init__(self, lm: Any, tokenizer: Any, cfg: Any) -> None:
        self.lm, self.tokenizer, self.cfg = lm, tokenizer, cfg
        self.module = _Loss(lm)

    def _prompt(self, example: Example, *, with_target: bool, budget: int) -> Any:
        return render(
            last_turn(example),
            self.tokenizer,
            PLAIN,
            max_prompt_tokens=max(budget, 1),
            max_target_tokens=self.cfg.max_response_tokens,
            with_target=with_target,
        )

    def encode(self, example: Example) -> dict[str, Any] | None:
        if not example.reference:
            return None
        c = self.cfg
        r = self._prompt(example, with_target=True, budget=c.max_length - c.max_response_tokens)
        return {
            "input_ids": r.prompt_ids + r.target_ids,
            "labels": [IGNORE] * len(r.prompt_ids) + r.target_ids,
        }

    def collate(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return reply_aligned(features, self.tokenizer.pad_token_id)

    def count_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[int, int]:
        return int(batch["attention_mask"].sum()), int((batch["labels"] != IGNORE).sum())

    def explain(self, example: Example) -> list[TokenView]:
        feats = self.encode(example) or {"input_ids": [], "labels": []}
        return [
            TokenView(self.tokenizer.convert_ids_to_tokens(t), t, lab != IGNORE)
            for t, lab in zip(feats["input_ids"], feats["labels"])
        ]

    def max_new_tokens_limit(self) -> int | None:
        limit = position_limit(self.lm.config)
        return None if limit is None else limit - 1

    def generate(
        self,
        examples: Sequence[Example],
        *,
        decoding: GenerateConfig,
        seeds: Sequence[int],
        targets: Sequence[dict[str, str] | None],
    ) -> list[str]:
        tok = self.tokenizer
        budget = self.cfg.max_length - decoding.max_new_tokens
        prompts = [self._prompt(ex, with_target=False, budget=budget).prompt_ids for ex in examples]
        n = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), n), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):  # left padding
            ids[i, n - len(p) :], mask[i, n - len(p) :] = torch.tensor(p), 1
        self.lm.eval()
        new = generate_ids(
            self.lm,
            ids,
            mask,
            cfg=decoding,
            seeds=seeds,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        return [decode(tok, row) for row in new.tolist()]

    def save(self, directory: Path) -> None:
        self.lm.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)


def build(cfg: RunConfig, ctx: BuildContext) -> LastTurnModel:
    """A fresh model: a tokenizer trained on the training data, an LM from `model.from_config`."""
    tok = dialogue_tokenizer(cfg.model.tokenizer, ctx, render=PLAIN, pretrained=None)
    torch.manual_seed(cfg.train.seed)
    lm = build_from_config(cfg.model.from_config, tok)
    lm.config.pad_token_id = tok.pad_token_id
    return LastTurnModel(lm, tok, cfg.model)


def load(directory: Path, cfg: RunConfig) -> LastTurnModel:
    return LastTurnModel(load_pretrained(directory), load_tokenizer(directory), cfg.model)
