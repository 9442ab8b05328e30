"""`model:` section of the `classifier` method (evaluation models: attribute classifiers, NLI)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from personadlg.config import ModelConfig, check
from personadlg.models.config_parts import TokenizerConfig, source_problems, trust_remote_code_field


@dataclass
class ClassifierConfig(ModelConfig):
    """A sequence classifier: text → aspect (attribute / text tasks), or (premise, hypothesis) → NLI label."""

    task: Literal["attribute", "text", "nli"] = field(
        default="attribute",
        metadata={
            "help": "attribute: assistant messages of dialogues labelled with data.attribute; text: {text, label} JSONL or one file per class; nli: premise/hypothesis/label pairs"
        },
    )
    backbone: str | None = field(
        default=None,
        metadata={"help": "Hugging Face encoder by hub id or dir (e.g. bert-base-uncased)"},
    )
    from_config: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "build an encoder from scratch, e.g. {model_type: bert, num_hidden_layers: 2}"
        },
    )
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    labels: list[str] = field(
        default_factory=list,
        metadata={
            "help": "label names in id order (default: the declared aspects, or the labels found in the data)"
        },
    )
    max_length: int = field(
        default=128,
        metadata={"help": "longest input in tokens (pairs lose the start of the first text first)"},
    )
    trust_remote_code: bool = trust_remote_code_field()

    def __post_init__(self) -> None:
        problems = source_problems(
            pretrained_key="backbone",
            pretrained=self.backbone,
            config_key="from_config",
            from_config=self.from_config,
            tokenizer=self.tokenizer,
            kind="a pretrained encoder",
            example="bert",
            what="classifier",
        )
        if len(set(self.labels)) != len(self.labels):
            problems.append(f"model.labels must be distinct, got {self.labels}")
        if self.max_length < 8:
            problems.append(f"model.max_length must be >= 8, got {self.max_length}")
        check(problems)
