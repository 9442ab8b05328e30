"""`model:` section of the `codebook` method (MORPHEUS: a persona codebook, arXiv 2407.02345)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from personadlg.config import ModelConfig, check
from personadlg.models.config_parts import (
    TokenizerConfig,
    length_problems,
    source_problems,
    trust_remote_code_field,
)

STAGES = ("role", "init", "joint")
"""The paper's three stages: role awareness (the decoder learns to use encoded persona segments as
a prefix), codebook initialisation (no gradient step), joint training (codes, VQ, code
prediction, contrast)."""

INIT_METHODS = ("em", "kmeans", "random", "sequential", "mean")

GENERATION_FIELDS = ("persona_mode", "code_sampling", "code_top_k", "codes")
"""Fields `generate` / `chat` may change (`model.X=...`, `--persona-mode`, `--codes`)."""


@dataclass
class CodebookConfig(ModelConfig):
    """A causal LM conditioned on M persona codes (a key/value prefix) predicted from the history."""

    decoder: str | None = field(
        default=None, metadata={"help": "causal LM by hub id or dir (e.g. gpt2), from_pretrained"}
    )
    decoder_from_config: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "build the decoder from scratch, e.g. {model_type: gpt2, n_layer: 2}"},
    )
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    encoder: str = field(
        default="decoder",
        metadata={
            "help": "persona encoder: 'decoder' (the decoder itself, as the reference) or an HF encoder by hub id or dir"
        },
    )
    freeze_encoder: bool = field(
        default=True,
        metadata={
            "help": "stages init and joint encode persona segments with a frozen copy of the role-aware decoder (or the frozen encoder), so the codes' space does not drift while the decoder trains; false: the reference's shared, training encoder"
        },
    )
    role_trains_encoder: bool = field(
        default=True,
        metadata={
            "help": "stage role also trains a separate persona encoder (false: a pretrained sentence encoder such as all-MiniLM-L6-v2 stays as it is in every stage)"
        },
    )
    encoder_pool: Literal["auto", "last", "mean", "cls"] = field(
        default="auto",
        metadata={
            "help": "segment pooling: last (the state of an appended end token), mean, cls; auto = last for the decoder, mean for an encoder"
        },
    )
    n_codes: int = field(default=100, metadata={"help": "codebook size N"})
    slots: int = field(
        default=5,
        metadata={
            "help": "persona segments M per example (sentences, cycled when fewer) = prefix positions"
        },
    )
    stages: list[str] = field(
        default_factory=lambda: list(STAGES),
        metadata={
            "help": "stages to run in order, each with its own checkpoint (role, init, joint); [init, joint] = without role awareness"
        },
    )
    stage: Literal["role", "init", "joint"] = field(
        default="joint",
        metadata={"help": "the stage this run trains (set per stage by the stage driver)"},
    )
    stage_train: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata={
            "help": "train.* overrides per stage, e.g. {role: {epochs: 2}, joint: {lr: 1e-4}}"
        },
    )
    init_method: Literal["em", "kmeans", "random", "sequential", "mean"] = field(
        default="em",
        metadata={
            "help": "codebook initialisation: Gaussian-mixture EM, kmeans, random, sequential, mean"
        },
    )
    init_iterations: int = field(default=100, metadata={"help": "EM / k-means iterations at most"})
    init_tol: float = field(default=1e-4, metadata={"help": "EM / k-means convergence tolerance"})
    init_min_variance: float = field(
        default=1e-3, metadata={"help": "EM variance floor, relative to the data's variance"}
    )
    quantize: bool = field(
        default=True,
        metadata={
            "help": "false: no codebook (the 'without codebook' ablation): the prefix is the continuous encoding in training and a vector regressed from the history at inference"
        },
    )
    straight_through: Literal["encoder", "codebook", "reverse"] = field(
        default="encoder",
        metadata={
            "help": "what L_G trains through the quantiser: encoder (VQ-VAE: the prefix is the code, gradients go to the encoding), codebook (the code rows), reverse (the reference: the encoding's value, gradients to the codes)"
        },
    )
    beta: float = field(default=0.05, metadata={"help": "VQ commitment weight (paper: 0.05)"})
    lm_weight: float = field(default=1.0, metadata={"help": "weight of L_G (response NLL)"})
    vq_weight: float = field(default=1.0, metadata={"help": "weight of L_V (VQ)"})
    code_weight: float = field(default=1.0, metadata={"help": "weight of L_D (code prediction)"})
    contrastive_weight: float = field(
        default=1.0,
        metadata={"help": "weight of L_C (InfoNCE, 0 = the 'without contrastive loss' ablation)"},
    )
    temperature: float = field(
        default=0.5, metadata={"help": "InfoNCE temperature tau (paper 0.5, reference 0.07)"}
    )
    code_loss: Literal["ce", "focal"] = field(
        default="ce", metadata={"help": "code-prediction loss: cross-entropy or focal"}
    )
    focal_gamma: float = field(default=2.0, metadata={"help": "focal loss gamma"})
    prefix_hidden: int = field(
        default=0, metadata={"help": "hidden size of the code → prefix MLP (0 = 2 × code dim)"}
    )
    shared_kv: bool = field(
        default=False,
        metadata={"help": "one MLP output as both key and value prefix (the reference)"},
    )
    predictor_hidden: int = field(
        default=0,
        metadata={
            "help": "hidden size of each slot's code-prediction head (0 = the decoder's hidden size)"
        },
    )
    history_pool: Literal["last", "mean"] = field(
        default="mean",
        metadata={
            "help": "the history state code prediction reads: the last prompt token's, or the mean over the prompt (both without any prefix, in training and at inference)"
        },
    )
    history_encoder: str = field(
        default="decoder",
        metadata={
            "help": "what code prediction reads the history with: 'decoder' (its own final states, pooled by history_pool) or an HF encoder by hub id or dir (its mean-pooled sentence embedding of the history, e.g. sentence-transformers/all-MiniLM-L6-v2)"
        },
    )
    tune_history_encoder: bool = field(
        default=False,
        metadata={
            "help": "with an HF history_encoder: L_D also trains it in stage joint (default: frozen, its sentence embeddings as they are)"
        },
    )
    predictor_grad: bool = field(
        default=False,
        metadata={
            "help": "L_D also trains the decoder through the history pass (default: only the predictor)"
        },
    )
    sort_slots: bool = field(
        default=True,
        metadata={
            "help": "order each example's M codes by index (persona sentence order carries no information)"
        },
    )
    freeze_decoder: bool = field(
        default=False,
        metadata={
            "help": "train only the codebook, prefix MLP and predictor (the paper's PEFT variant; checkpoints hold only them)"
        },
    )
    dead_code_steps: int = field(
        default=0,
        metadata={
            "help": "re-seed a code unused for this many steps from recent encodings (0 = off)"
        },
    )
    max_length: int = field(
        default=256, metadata={"help": "longest training sequence (oldest turns dropped)"}
    )
    max_response_tokens: int = field(default=64, metadata={"help": "longest trained response"})
    max_segment_tokens: int = field(default=32, metadata={"help": "longest persona segment"})
    persona_mode: Literal["predicted", "oracle"] = field(
        default="predicted",
        metadata={
            "help": "generation: codes predicted from the history (no persona text), or oracle (the record's persona encoded and snapped to the nearest codes)"
        },
    )
    code_sampling: Literal["argmax", "topk"] = field(
        default="argmax",
        metadata={"help": "generation: argmax codes, or sampled from each slot's top-k"},
    )
    code_top_k: int = field(default=5, metadata={"help": "k of code_sampling: topk"})
    codes: list[int] = field(
        default_factory=list,
        metadata={"help": "generation: force these M codes for every example (e.g. [3, 17, ...])"},
    )
    trust_remote_code: bool = trust_remote_code_field(
        "the decoder needs custom code; only with --trust-remote-code"
    )

    def __post_init__(self) -> None:
        problems = source_problems(
            pretrained_key="decoder",
            pretrained=self.decoder,
            config_key="decoder_from_config",
            from_config=self.decoder_from_config,
            tokenizer=self.tokenizer,
            kind="a pretrained causal LM",
            example="gpt2",
            what="decoder",
        )
        if self.freeze_decoder and not self.decoder:
            problems.append(
                "model.freeze_decoder needs a pretrained model.decoder (a frozen random decoder learns nothing)"
            )
        if not self.stages:
            problems.append("model.stages: expected at least one of role, init, joint")
        for s in self.stages:
            if s not in STAGES:
                problems.append(f"model.stages: expected role, init or joint, got {s!r}")
        if list(self.stages) != [s for s in STAGES if s in self.stages]:
            problems.append(
                f"model.stages: expected them in the order role, init, joint, got {self.stages}"
            )
        for s, over in self.stage_train.items():
            if s not in STAGES:
                problems.append(f"model.stage_train.{s}: expected a stage (role, init, joint)")
            elif not isinstance(over, dict):
                problems.append(f"model.stage_train.{s}: expected a mapping of train.* fields")
        if self.n_codes < 2:
            problems.append(f"model.n_codes must be >= 2, got {self.n_codes}")
        if self.slots < 1:
            problems.append(f"model.slots must be >= 1, got {self.slots}")
        if self.temperature <= 0:
            problems.append(f"model.temperature must be > 0, got {self.temperature}")
        for name in ("beta", "lm_weight", "vq_weight", "code_weight", "contrastive_weight"):
            if getattr(self, name) < 0:
                problems.append(f"model.{name} must be >= 0, got {getattr(self, name)}")
        if self.focal_gamma < 0:
            problems.append(f"model.focal_gamma must be >= 0, got {self.focal_gamma}")
        if self.code_top_k < 1:
            problems.append(f"model.code_top_k must be >= 1, got {self.code_top_k}")
        if self.codes and len(self.codes) != self.slots:
            problems.append(
                f"model.codes: expected {self.slots} code ids (model.slots), got {len(self.codes)}"
            )
        if any(c < 0 or c >= self.n_codes for c in self.codes):
            problems.append(f"model.codes: expected ids in 0..{self.n_codes - 1}, got {self.codes}")
        if self.codes and not self.quantize:
            problems.append("model.codes needs a codebook (model.quantize: true)")
        if self.persona_mode == "oracle" and self.codes:
            problems.append("model.codes and model.persona_mode=oracle exclude each other")
        if self.dead_code_steps < 0:
            problems.append("model.dead_code_steps must be >= 0")
        if self.init_iterations < 1 or self.init_tol < 0 or self.init_min_variance < 0:
            problems.append(
                "need model.init_iterations >= 1, model.init_tol >= 0, model.init_min_variance >= 0"
            )
        problems += length_problems(self.max_length, self.max_response_tokens)
        if self.tune_history_encoder and self.history_encoder == "decoder":
            problems.append(
                "model.tune_history_encoder needs an HF model.history_encoder (with the decoder's states: model.predictor_grad)"
            )
        if self.max_segment_tokens < 2:
            problems.append("model.max_segment_tokens must be >= 2")
        check(problems)
