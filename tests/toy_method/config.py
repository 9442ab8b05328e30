"""The `model:` section of a lastturn recipe (light: dataclasses only)."""

from dataclasses import dataclass, field
from typing import Any

from personadlg.config import ModelConfig, check
from personadlg.models.config_parts import TokenizerConfig


@dataclass
class LastTurnConfig(ModelConfig):
    from_config: dict[str, Any] = field(
        default_factory=lambda: {"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 32},
        metadata={"help": "the transformers config of the from-scratch LM"},
    )
    tokenizer: TokenizerConfig = field(
        default_factory=lambda: TokenizerConfig(train=True, vocab_size=300),
        metadata={"help": "the tokenizer, trained on the training data"},
    )
    max_length: int = field(default=64, metadata={"help": "prompt + reply tokens"})
    max_response_tokens: int = field(default=24, metadata={"help": "longest trained reply"})

    def __post_init__(self) -> None:
        check(
            []
            if 0 < self.max_response_tokens < self.max_length
            else ["need 0 < model.max_response_tokens < model.max_length"]
        )
