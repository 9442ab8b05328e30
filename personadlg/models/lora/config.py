"""`model:` section of the `lora` method (arXiv 2409.00887): a profile-aware base, one adapter per user."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from personadlg.config import check
from personadlg.models.config_parts import PromptLMConfig
from personadlg.models.profile_prompt import ProfileTemplate

STAGES = ("base", "users")
"""Profile-aware training of the whole model, then one LoRA adapter per user on the frozen base."""

GENERATION_FIELDS = ("adapters",)
"""Fields `generate` / `chat` may change (`model.adapters=DIR`)."""


@dataclass(frozen=True)
class LoraSettings:
    """The per-user adapter: peft's LoraConfig fields."""

    r: int = field(default=12, metadata={"help": "LoRA rank (the paper: 12)"})
    alpha: float = field(default=24.0, metadata={"help": "lora_alpha (scaling = alpha / r)"})
    dropout: float = field(default=0.05, metadata={"help": "lora_dropout"})
    target_modules: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "module names to adapt (empty: peft's default for the model type, e.g. c_attn for gpt2, q/v for t5)"
        },
    )
    bias: Literal["none", "all", "lora_only"] = field(
        default="none", metadata={"help": "which biases train with the adapter"}
    )

    def __post_init__(self) -> None:
        problems = []
        if self.r < 1:
            problems.append(f"model.lora.r must be >= 1, got {self.r}")
        if self.alpha <= 0:
            problems.append(f"model.lora.alpha must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            problems.append(f"model.lora.dropout must be in [0, 1), got {self.dropout}")
        check(problems)

    def to_peft(self, lm: Any) -> Any:
        """The peft LoraConfig of one user's adapter on LM (GPT-2's Conv1D layers: fan_in_fan_out)."""
        from peft import LoraConfig, TaskType
        from transformers.pytorch_utils import Conv1D

        seq2seq = bool(getattr(lm.config, "is_encoder_decoder", False))
        return LoraConfig(
            fan_in_fan_out=any(isinstance(m, Conv1D) for m in lm.modules()),
            r=self.r,
            lora_alpha=self.alpha,  # type: ignore[arg-type]  # peft's hint says int; floats work
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules) or None,
            bias=self.bias,
            task_type=TaskType.SEQ_2_SEQ_LM if seq2seq else TaskType.CAUSAL_LM,
        )


@dataclass
class LoRAFinetuneConfig(PromptLMConfig):
    """A causal LM or encoder-decoder trained with the user's profile in the prompt (stage `base`),
    then one LoRA adapter per user on that frozen model (stage `users`)."""

    profile_in_prompt: bool = field(
        default=True, metadata={"help": "put the user profile in the prompt (the paper: yes)"}
    )
    profile_template: ProfileTemplate | None = field(
        default_factory=ProfileTemplate,
        metadata={
            "help": "how the profile is rendered ({item, separator, keys, only_keys, persona}); default [key: value] pairs, e.g. model.profile_template='{keys: [age, gender], persona: true}'"
        },
    )
    stages: list[str] = field(
        default_factory=lambda: list(STAGES),
        metadata={
            "help": "stages to run in order (base, users); [users] with model.init_from=RUN adds adapters to a trained base"
        },
    )
    stage: Literal["base", "users"] = field(
        default="users",
        metadata={"help": "the stage this run trains (set per stage by the stage driver)"},
    )
    stage_train: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata={
            "help": "train.* overrides per stage, e.g. {users: {lr: 3e-4, epochs: 10, early_stopping_patience: 2}}"
        },
    )
    lora: LoraSettings = field(default_factory=LoraSettings)
    users_data: str | None = field(
        default=None,
        metadata={
            "help": "stage users: the dialogues of the users to adapt (default: data.train); records need user_id"
        },
    )
    min_examples: int = field(
        default=8,
        metadata={
            "help": "stage users: a user gets an adapter when they have at least this many training turns"
        },
    )
    user_valid_fraction: float = field(
        default=0.2,
        metadata={
            "help": "stage users: share of each user's turns held out for validation and early stopping (at least 1 turn, or 1 dialogue)"
        },
    )
    user_valid_by: Literal["turns", "dialogue"] = field(
        default="turns",
        metadata={
            "help": "stage users: hold out random turns (turns) or the user's last training dialogue(s) (dialogue: validation on a conversation the adapter has not seen)"
        },
    )
    users: list[str] = field(
        default_factory=list,
        metadata={"help": "stage users: train only these user ids (--users u1,u2)"},
    )
    users_file: str | None = field(
        default=None,
        metadata={"help": "stage users: train only the user ids in this file, one per line"},
    )
    adapters: str | None = field(
        default=None,
        metadata={
            "help": "generation: the adapters directory (default: adapters/ of the checkpoint's run)"
        },
    )

    def __post_init__(self) -> None:
        problems = []
        if "base" in self.stages:  # stage users alone takes its base from model.init_from
            problems += self.backbone_problems()
        problems += self.budget_problems()
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown or not self.stages or len(set(self.stages)) != len(self.stages):
            problems.append(
                f"model.stages: expected an ordered subset of {list(STAGES)}, got {self.stages}"
            )
        elif self.stages[0] == "users" and not self.init_from:
            problems.append(
                "model.stages starts with users: set model.init_from to the trained base (a lora or finetune run)"
            )
        if list(self.stages) != [s for s in STAGES if s in self.stages]:
            problems.append(f"model.stages: base comes before users, got {self.stages}")
        if self.min_examples < 2:
            problems.append(
                f"model.min_examples must be >= 2 (one to train, one to validate), got {self.min_examples}"
            )
        if not 0 < self.user_valid_fraction < 1:
            problems.append(
                f"model.user_valid_fraction must be in (0, 1), got {self.user_valid_fraction}"
            )
        bad = [u for u in self.users if not isinstance(u, str) or not u]
        if bad:
            problems.append(f"model.users: expected non-empty user ids, got {bad[0]!r}")
        check(problems)
