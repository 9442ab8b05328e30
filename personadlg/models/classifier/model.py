"""The `classifier` model: a Hugging Face sequence classifier, saved as a standard HF directory.

The saved `final/` directory (config.json with id2label, model.safetensors, tokenizer) loads with
`AutoModelForSequenceClassification.from_pretrained`, which is what `personadlg eval --classifier`
and `--nli` do; `eval_results.json` beside it holds accuracy and macro-F1 on the held-out split.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from personadlg.config import GenerateConfig, RunConfig
from personadlg.errors import NotAvailableError, UsageError
from personadlg.models.backbone import (
    has_tokenizer,
    load_reporting,
    load_tokenizer,
    train_or_load_tokenizer,
)
from personadlg.models.base import BuildContext, TokenView
from personadlg.models.classifier.config import ClassifierConfig
from personadlg.models.classifier.data import Item, label_names
from personadlg.models.loading import from_pretrained

logger = logging.getLogger(__name__)


class ClassifierLoss(nn.Module):
    """`forward(**batch)` → {"loss": cross-entropy, "_logits": (B, C)}."""

    def __init__(self, clf: nn.Module) -> None:
        super().__init__()
        self.clf = clf

    def forward(self, **batch: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.clf(**batch)
        return {"loss": out.loss, "_logits": out.logits}


class ClassifierModel:
    name = "classifier"
    tokenizer: Any
    module: nn.Module
    perplexity = (
        False  # exp(cross-entropy) means nothing here; validation reports accuracy and macro-F1
    )

    def __init__(self, clf: Any, tokenizer: Any, cfg: ClassifierConfig) -> None:
        self.clf, self.tokenizer, self.cfg = clf, tokenizer, cfg
        self.module = ClassifierLoss(clf)
        self.label2id = {str(v): int(k) for k, v in clf.config.id2label.items()}

    def _ids(self, text: str, pair: str | None) -> list[int]:
        """The tokenizer's own single/pair encoding; pairs lose the start of the first text (the oldest context) first."""
        tok = self.tokenizer
        side = tok.truncation_side
        tok.truncation_side = "left" if pair is not None else "right"
        try:
            return tok(
                text,
                pair,
                truncation="only_first" if pair is not None else True,
                max_length=self.cfg.max_length,
            )["input_ids"]
        finally:
            tok.truncation_side = side

    def encode(self, example: Item) -> dict[str, Any] | None:
        if example.label not in self.label2id:
            raise UsageError(
                f"label {example.label!r} is not one of the classifier's labels {sorted(self.label2id)}"
            )
        return {
            "input_ids": self._ids(example.text, example.pair),
            "labels": [self.label2id[example.label]],
        }

    def collate(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pad = self.tokenizer.pad_token_id or 0
        n = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), n), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, f in enumerate(features):
            ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
            mask[i, : len(f["input_ids"])] = 1
        labels = torch.tensor([int(f["labels"][0]) for f in features], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def count_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[int, int]:
        return int(batch["attention_mask"].sum()), int(batch["labels"].numel())

    def eval_stats(
        self, batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Confusion counts (C, C): rows gold, columns predicted."""
        c = len(self.label2id)
        pred = outputs["_logits"].argmax(dim=-1).cpu()
        gold = batch["labels"].cpu()
        return {
            "confusion": torch.bincount(gold * c + pred, minlength=c * c)
            .reshape(c, c)
            .to(torch.float64)
        }

    def eval_metrics(self, stats: dict[str, torch.Tensor]) -> dict[str, float]:
        return confusion_metrics(stats["confusion"])

    def generate(
        self,
        examples: Sequence[Any],
        *,
        decoding: GenerateConfig,
        seeds: Sequence[int],
        targets: Sequence[dict[str, str] | None],
    ) -> list[str]:
        raise NotAvailableError(
            "a classifier checkpoint does not generate; use it with personadlg eval --classifier ATTR=DIR or --nli DIR"
        )

    def explain(self, example: Item) -> list[TokenView]:
        ids = self._ids(example.text, example.pair)
        return [TokenView(self.tokenizer.convert_ids_to_tokens(t), t, False, "input") for t in ids]

    def save(self, directory: Path) -> None:
        self.clf.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)


def confusion_metrics(confusion: torch.Tensor) -> dict[str, float]:
    """Accuracy and macro-F1 (both 0-100) from a (C, C) confusion matrix (rows gold)."""
    cm = confusion.double()
    total = cm.sum()
    tp = cm.diag()
    precision = tp / cm.sum(dim=0).clamp(min=1e-12)
    recall = tp / cm.sum(dim=1).clamp(min=1e-12)
    f1 = torch.where(
        precision + recall > 0, 2 * precision * recall / (precision + recall), torch.zeros_like(tp)
    )
    present = cm.sum(dim=1) > 0  # classes with gold examples
    out = {
        "accuracy": float(tp.sum() / total * 100) if total else float("nan"),
        "macro_f1": float(f1[present].mean() * 100) if present.any() else float("nan"),
        "n": int(total),
    }
    if total:
        from personadlg.intervals import wilson_interval

        lo, hi = wilson_interval(int(tp.sum()), int(total))
        out["accuracy_ci95_lo"], out["accuracy_ci95_hi"] = lo, hi
    return out


def _classifier_from(cfg: ClassifierConfig, tok: Any, names: list[str], seed: int) -> Any:
    from transformers import AutoConfig, AutoModelForSequenceClassification

    id2label = dict(enumerate(names))
    label2id = {n: i for i, n in id2label.items()}
    if cfg.from_config:
        kwargs = {k: v for k, v in cfg.from_config.items() if k != "model_type"}
        config = AutoConfig.for_model(
            cfg.from_config["model_type"],
            vocab_size=len(tok),
            num_labels=len(names),
            id2label=id2label,
            label2id=label2id,
            pad_token_id=tok.pad_token_id,
            **kwargs,
        )
        torch.manual_seed(seed)
        return AutoModelForSequenceClassification.from_config(config)
    assert cfg.backbone is not None
    model, fresh = load_reporting(
        AutoModelForSequenceClassification,
        cfg.backbone,
        what="classifier",
        new=("classifier", "score", "pre_classifier", "logits_proj"),
        unused=("cls.", "lm_head."),  # an MLM head in the checkpoint
        num_labels=len(names),
        id2label=id2label,
        label2id=label2id,
        ignore_mismatched_sizes=True,
    )
    if fresh:
        logger.info("%s: a new classification head (%s)", cfg.backbone, ", ".join(fresh))
    return model


def build(cfg: RunConfig, ctx: BuildContext) -> ClassifierModel:
    """A fresh classifier whose labels come from the recipe or the training data."""
    mcfg: ClassifierConfig = cfg.model
    items = list(ctx.train_examples())
    if not items:
        raise UsageError(
            f"{cfg.data.train}: no training items for the {mcfg.task} classifier"
            + (
                f" (no dialogue is labelled with data.attribute={cfg.data.attribute})"
                if mcfg.task == "attribute"
                else ""
            )
        )
    names = label_names({it.label for it in items}, cfg)
    if mcfg.tokenizer.train and ctx.init_from is not None and has_tokenizer(ctx.init_from):
        tok = load_tokenizer(ctx.init_from)
    elif mcfg.tokenizer.train:
        texts = (
            ([it.text for it in items] + [it.pair for it in items if it.pair])
            if ctx.is_main
            else None
        )
        tok = train_or_load_tokenizer(
            texts,
            path=ctx.work_dir / "tokenizer",
            vocab_size=mcfg.tokenizer.vocab_size,
            min_frequency=mcfg.tokenizer.min_frequency,
            is_main=ctx.is_main,
            barrier=ctx.barrier,
            cls_sep=True,
        )
    else:
        source = mcfg.tokenizer.path or mcfg.backbone
        assert source is not None
        tok = load_tokenizer(source)
    clf = _classifier_from(mcfg, tok, names, cfg.train.seed)
    logger.info("%s classifier over %d labels: %s", mcfg.task, len(names), ", ".join(names))
    return ClassifierModel(clf, tok, mcfg)


def load(directory: Path, cfg: RunConfig) -> ClassifierModel:
    from transformers import AutoModelForSequenceClassification

    mcfg: ClassifierConfig = cfg.model
    tok = load_tokenizer(directory)
    clf = from_pretrained(AutoModelForSequenceClassification, directory)
    return ClassifierModel(clf, tok, mcfg)
