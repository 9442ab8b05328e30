"""`model:` section of the `cvae` method (MIRACLE): encoders, decoder, latent, losses and the ODE."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from personadlg.config import ModelConfig, check
from personadlg.models.config_parts import (
    TokenizerConfig,
    tokenizer_problems,
    trust_remote_code_field,
)

SOLVERS = (
    "dopri5",
    "dopri8",
    "bosh3",
    "fehlberg2",
    "adaptive_heun",
    "euler",
    "midpoint",
    "heun3",
    "rk4",
    "explicit_adams",
    "implicit_adams",
)
FIXED_GRID = ("euler", "midpoint", "heun3", "rk4", "explicit_adams", "implicit_adams")


@dataclass
class ODEConfig:
    """Generation: the energy over the latent heads and the ODE that moves z towards the targets.

    dz/dt = -1/2 * beta(t) * guidance_scale * grad_z sum_i w_i log p_i(target_i | z), from t = 1 to
    t = 0, beta(t) = beta_min + t (beta_max - beta_min): the VP-SDE probability-flow ODE of
    N(0, I) x prod_i p_i(target_i | z).
    """

    solver: Literal[SOLVERS] = field(  # type: ignore[valid-type]
        default="dopri5", metadata={"help": "torchdiffeq solver (adaptive or fixed-grid)"}
    )
    atol: float = field(default=1e-3, metadata={"help": "absolute tolerance (adaptive solvers)"})
    rtol: float = field(default=1e-3, metadata={"help": "relative tolerance (adaptive solvers)"})
    step_size: float = field(
        default=0.05, metadata={"help": "step of the fixed-grid solvers (euler, rk4, ...)"}
    )
    beta_min: float = field(default=0.1, metadata={"help": "beta(t) at t = 0"})
    beta_max: float = field(default=20.0, metadata={"help": "beta(t) at t = 1"})
    guidance_scale: float = field(
        default=4.0,
        metadata={
            "help": "strength of the energy gradient (0 = no guidance: decode the start latent); chosen from the sweep in the README"
        },
    )
    start: Literal["prior_mean", "prior_sample"] = field(
        default="prior_mean",
        metadata={
            "help": "start point: the context's prior mean (MIRACLE) or a seeded prior sample (more diverse)"
        },
    )
    weights: dict[str, float] = field(
        default_factory=dict,
        metadata={"help": "per-attribute expert weight w_i (default 1 for every attribute)"},
    )
    batch_size: int = field(
        default=1024,
        metadata={
            "help": "(example, target) pairs per ODE solve; the decoder still takes generate.batch_size at a time"
        },
    )
    max_nfe: int = field(
        default=2000,
        metadata={"help": "stop with an error when the solver needs more function evaluations"},
    )

    def __post_init__(self) -> None:
        problems = []
        if self.atol <= 0 or self.rtol <= 0:
            problems.append("model.ode.atol and model.ode.rtol must be > 0")
        if not 0 < self.step_size <= 1:
            problems.append(f"model.ode.step_size must be in (0, 1], got {self.step_size}")
        if self.beta_min < 0 or self.beta_max < self.beta_min:
            problems.append("need 0 <= model.ode.beta_min <= model.ode.beta_max")
        if self.batch_size < 1:
            problems.append(f"model.ode.batch_size must be >= 1, got {self.batch_size}")
        if self.guidance_scale < 0:
            problems.append(f"model.ode.guidance_scale must be >= 0, got {self.guidance_scale}")
        problems += [
            f"model.ode.weights.{k} must be >= 0, got {v}" for k, v in self.weights.items() if v < 0
        ]
        check(problems)


@dataclass
class CVAEConfig(ModelConfig):
    """A conditional VAE whose latent space is aligned with personal attributes (MIRACLE)."""

    encoder: str | None = field(
        default=None,
        metadata={
            "help": "prior/posterior encoder: Hugging Face hub id or dir (bert-base-uncased)"
        },
    )
    encoder_from_config: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "build the encoders from scratch, e.g. {model_type: bert, ...}"},
    )
    share_encoder: bool = field(
        default=False,
        metadata={"help": "one encoder network for prior and posterior (separate output heads)"},
    )
    freeze_encoders: bool = field(
        default=False,
        metadata={
            "help": "keep the pretrained prior / posterior encoders as they are: their sentence embeddings, standardised, feed the Gaussian heads, which train (fine-tuning a small sentence encoder on the CVAE objective can collapse its embeddings)"
        },
    )
    encoder_tokenizer: str | None = field(
        default=None,
        metadata={
            "help": "encoder tokenizer (default: the encoder's; from-scratch encoders share the decoder's)"
        },
    )
    decoder: str | None = field(
        default=None,
        metadata={
            "help": "GPT-2-like causal LM: hub id or dir (microsoft/DialoGPT-medium), fully fine-tuned"
        },
    )
    decoder_from_config: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "build the decoder from scratch, e.g. {model_type: gpt2, n_layer: 2}"},
    )
    tokenizer: TokenizerConfig = field(
        default_factory=TokenizerConfig,
        metadata={"help": "decoder tokenizer (default: the decoder's; or trained on the data)"},
    )
    latent_dim: int = field(default=768, metadata={"help": "size of z (MIRACLE: 768)"})
    decoder_sees_context: bool = field(
        default=False,
        metadata={
            "help": "give the decoder the context as a prompt (MIRACLE: no, context reaches it only through z)"
        },
    )
    word_dropout: float = field(
        default=0.0,
        metadata={
            "help": "share of the decoder's input tokens replaced by the unknown token in training (Bowman et al. 2016), so a pretrained decoder cannot model the reply without z"
        },
    )
    persona_in_prompt: bool = field(
        default=False, metadata={"help": "put the persona sentences in the context text"}
    )
    max_context_tokens: int = field(
        default=256,
        metadata={"help": "context budget in tokens (the oldest turns are dropped first)"},
    )
    max_response_tokens: int = field(
        default=64, metadata={"help": "longest trained response in tokens"}
    )
    kl_weight: float = field(default=0.001, metadata={"help": "weight of the KL term"})
    free_bits: float = field(
        default=0.9,
        metadata={"help": "per-dimension KL threshold in nats: only dimensions above it count"},
    )
    beta_schedule: Literal["cyclic_step", "cyclic_linear", "constant"] = field(
        default="cyclic_step",
        metadata={
            "help": "KL beta: cyclic_step (MIRACLE: 0 for beta_zero_steps of every beta_period, else 1), cyclic_linear (0, then a linear ramp over beta_ramp_steps, then 1), constant (1)"
        },
    )
    beta_period: int = field(default=40, metadata={"help": "steps per beta cycle"})
    beta_zero_steps: int = field(
        default=8,
        metadata={"help": "steps with beta = 0 (z = posterior mean) at the start of each cycle"},
    )
    beta_ramp_steps: int = field(
        default=16, metadata={"help": "cyclic_linear: steps of the ramp from 0 to 1"}
    )
    cls_weight: float = field(
        default=0.05, metadata={"help": "weight of the latent attribute heads' cross-entropy"}
    )
    gap_weight: float = field(
        default=0.002, metadata={"help": "weight of the attribute distance loss"}
    )
    gap_sign: Literal["pull", "push"] = field(
        default="pull",
        metadata={
            "help": "pull attribute centres together (MIRACLE) or push them apart (hinge at gap_margin)"
        },
    )
    gap_margin: float = field(
        default=1.0, metadata={"help": "push: centres further apart than this (MSE) stop pushing"}
    )
    head_hidden: int = field(
        default=128, metadata={"help": "hidden size of each latent attribute head"}
    )
    attribute_batches: bool = field(
        default=True,
        metadata={"help": "attribute-homogeneous micro-batches (MIRACLE's sampler)"},
    )
    ode: ODEConfig = field(default_factory=ODEConfig)
    trust_remote_code: bool = trust_remote_code_field()

    def __post_init__(self) -> None:
        problems = []
        if bool(self.encoder) == bool(self.encoder_from_config):
            problems.append("set exactly one of model.encoder and model.encoder_from_config")
        if bool(self.decoder) == bool(self.decoder_from_config):
            problems.append("set exactly one of model.decoder and model.decoder_from_config")
        for key in ("encoder_from_config", "decoder_from_config"):
            conf = getattr(self, key)
            if conf and "model_type" not in conf:
                problems.append(f"model.{key} needs a model_type (bert, gpt2, ...)")
        problems += tokenizer_problems(
            from_config=self.decoder_from_config, tokenizer=self.tokenizer, what="decoder"
        )
        if self.latent_dim < 1:
            problems.append(f"model.latent_dim must be >= 1, got {self.latent_dim}")
        if self.max_context_tokens < 4 or self.max_response_tokens < 1:
            problems.append("need model.max_context_tokens >= 4 and model.max_response_tokens >= 1")
        if self.kl_weight < 0 or self.free_bits < 0 or self.cls_weight < 0 or self.gap_weight < 0:
            problems.append("model.kl_weight, free_bits, cls_weight and gap_weight must be >= 0")
        if self.beta_period < 1 or not 0 <= self.beta_zero_steps <= self.beta_period:
            problems.append("need model.beta_period >= 1 and 0 <= beta_zero_steps <= beta_period")
        if self.beta_ramp_steps < 1:
            problems.append(f"model.beta_ramp_steps must be >= 1, got {self.beta_ramp_steps}")
        if self.freeze_encoders and not self.encoder:
            problems.append("model.freeze_encoders needs pretrained encoders (model.encoder)")
        if not 0.0 <= self.word_dropout < 1.0:
            problems.append(f"model.word_dropout must be in [0, 1), got {self.word_dropout}")
        if self.head_hidden < 1:
            problems.append(f"model.head_hidden must be >= 1, got {self.head_hidden}")
        check(problems)
