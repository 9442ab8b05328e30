"""Parts the methods' `model:` sections share: the tokenizer section, the checks on where a model
comes from and on its sequence budget, the `trust_remote_code` switch, and the fields of a
prompt-conditioned LM (finetune, lora).

Light, like every `models/<name>/config.py`: dataclasses only, so recipes validate without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from personadlg.config import ModelConfig, check
from personadlg.models.profile_prompt import ProfileTemplate

TRUST_REMOTE_CODE_HELP = "the backbone needs custom model code; enabled only with --trust-remote-code on the command line"


def trust_remote_code_field(help_text: str = TRUST_REMOTE_CODE_HELP) -> Any:
    """The `trust_remote_code` field: off in a recipe, switched on only from the command line."""
    return field(default=False, metadata={"help": help_text})


@dataclass
class TokenizerConfig:
    """Where the tokenizer comes from: the backbone, a path, or trained on the training data."""

    path: str | None = field(
        default=None, metadata={"help": "tokenizer hub id or dir (default: the backbone's)"}
    )
    train: bool = field(
        default=False,
        metadata={"help": "train a new tokenizer on the training data with `tokenizers`"},
    )
    vocab_size: int = field(
        default=4000, metadata={"help": "vocabulary size of a trained tokenizer"}
    )
    min_frequency: int = field(
        default=2, metadata={"help": "minimum pair frequency of a trained BPE tokenizer"}
    )
    truecase: bool = field(
        default=False,
        metadata={
            "help": "capitalise sentence starts and 'I' in generated text (for an uncased tokenizer, e.g. all-MiniLM-L6-v2, trained on cased data)"
        },
    )

    def __post_init__(self) -> None:
        check(
            []
            if self.vocab_size >= 64
            else [f"model.tokenizer.vocab_size must be >= 64, got {self.vocab_size}"]
        )


def tokenizer_problems(
    *, from_config: dict[str, Any], tokenizer: TokenizerConfig, what: str
) -> list[str]:
    """A from-scratch WHAT (built from FROM_CONFIG) needs a tokenizer to train or to load."""
    if from_config and not tokenizer.train and not tokenizer.path:
        return [f"a from-scratch {what} needs model.tokenizer.train: true or model.tokenizer.path"]
    return []


def source_problems(
    *,
    pretrained_key: str,
    pretrained: str | None,
    config_key: str,
    from_config: dict[str, Any],
    tokenizer: TokenizerConfig,
    kind: str,
    example: str,
    what: str,
) -> list[str]:
    """Where a model comes from: exactly one of a pretrained model and a config to build from,
    the config with a model_type, a from-scratch model with a tokenizer to train or load."""
    problems = []
    if bool(pretrained) == bool(from_config):
        problems.append(
            f"set exactly one of model.{pretrained_key} ({kind}) and model.{config_key} (build from scratch)"
        )
    if from_config and "model_type" not in from_config:
        problems.append(f"model.{config_key} needs a model_type, e.g. {example}")
    return problems + tokenizer_problems(from_config=from_config, tokenizer=tokenizer, what=what)


def length_problems(max_length: int, max_response_tokens: int) -> list[str]:
    """The sequence budget: a prompt and a response both fit in `max_length`."""
    if max_length < 8 or max_response_tokens < 1 or max_response_tokens >= max_length:
        return ["need model.max_length >= 8 and 1 <= model.max_response_tokens < model.max_length"]
    return []


@dataclass
class PromptLMConfig(ModelConfig):
    """A causal LM or encoder-decoder that reads the context, and the persona, profile and
    attributes its recipe enables, as a prompt (the fields of finetune and lora)."""

    backbone: str | None = field(
        default=None,
        metadata={"help": "Hugging Face hub id or local dir, loaded with from_pretrained"},
    )
    from_config: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "build from scratch from a transformers config, e.g. {model_type: gpt2, n_layer: 2}"
        },
    )
    arch: Literal["auto", "causal", "seq2seq"] = field(
        default="auto", metadata={"help": "causal LM or encoder-decoder (auto: from the config)"}
    )
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    persona_in_prompt: bool = field(
        default=False,
        metadata={
            "help": "put the persona sentences in the prompt (persona-concatenation baseline)"
        },
    )
    profile_in_prompt: bool = field(
        default=False, metadata={"help": "put the user profile in the prompt"}
    )
    profile_template: ProfileTemplate | None = field(
        default=None,
        metadata={
            "help": "render the profile with this template ({item, separator, keys, only_keys, persona}; default [key: value] pairs) instead of the 'Profile:' line, e.g. model.profile_template='{keys: [age, gender]}'"
        },
    )
    attributes_in_prompt: bool = field(
        default=False, metadata={"help": "put the target attributes in the prompt"}
    )
    chat_template: Literal["auto", "plain"] = field(
        default="auto",
        metadata={
            "help": "use the tokenizer's chat template when it has one (auto) or the plain template"
        },
    )
    max_length: int = field(
        default=256,
        metadata={
            "help": "longest training sequence in tokens (context truncated from the oldest turn)"
        },
    )
    max_response_tokens: int = field(
        default=64, metadata={"help": "longest trained response in tokens"}
    )
    trust_remote_code: bool = trust_remote_code_field()

    def backbone_problems(self) -> list[str]:
        """Exactly one of model.backbone and model.from_config, with a tokenizer when from scratch."""
        return source_problems(
            pretrained_key="backbone",
            pretrained=self.backbone,
            config_key="from_config",
            from_config=self.from_config,
            tokenizer=self.tokenizer,
            kind="a pretrained model",
            example="gpt2 or t5",
            what="model",
        )

    def budget_problems(self) -> list[str]:
        """A prompt and a response both fit in model.max_length."""
        return length_problems(self.max_length, self.max_response_tokens)
