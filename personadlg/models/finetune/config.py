"""`model:` section of the `finetune` method (the papers' baselines)."""

from __future__ import annotations

from dataclasses import dataclass

from personadlg.config import check
from personadlg.models.config_parts import PromptLMConfig


@dataclass
class FinetuneConfig(PromptLMConfig):
    """A causal LM or encoder-decoder fine-tuned on context -> assistant reply."""

    def __post_init__(self) -> None:
        check(self.backbone_problems() + self.budget_problems())
