"""Registries of methods, metrics, data formats and clean filters, by name, with lazy imports.

Entries are declared here as `"module:attribute"` strings (the lm-eval `MODEL_MAPPING` idea), so
`personadlg --help` and `personadlg ls` never import torch. `Registry.get(name)` imports the target
on first use; unknown names fail with a did-you-mean suggestion.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from personadlg.errors import NotAvailableError, UsageError

T = TypeVar("T")


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """` (did you mean 'cvae'?)` or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


@dataclass(frozen=True)
class Entry:
    """One registered name: where it lives and what it is, readable without importing it."""

    name: str
    target: str
    help: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def module(self) -> str:
        return self.target.split(":", 1)[0]

    @property
    def available(self) -> bool:
        """True when the target module is installed (checked without importing it)."""
        try:
            return importlib.util.find_spec(self.module) is not None
        except ModuleNotFoundError:
            return False


class Registry(Generic[T]):
    """Name → lazily imported object, with helpful errors.

    Example:
        >>> FORMATS.get("parlai")          # imports personadlg.data.formats.parlai
        >>> FORMATS.get("parlia")          # UsageError: unknown format 'parlia' (did you mean 'parlai'?)
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._loaded: dict[str, T] = {}

    def register(self, name: str, target: str, *, help: str = "", **meta: Any) -> None:
        """Declare NAME as living at TARGET (`"package.module:attribute"`)."""
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        if ":" not in target:
            raise ValueError(f"target must look like 'module:attribute', got {target!r}")
        self._entries[name] = Entry(name=name, target=target, help=help, meta=dict(meta))

    def names(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def entry(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise UsageError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, self.names())}; "
                f"available: {', '.join(self.names())}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def get(self, name: str) -> T:
        """Import and return the object registered as NAME."""
        if name in self._loaded:
            return self._loaded[name]
        entry = self.entry(name)
        module_name, attr = entry.target.split(":", 1)
        if not entry.available:
            raise NotAvailableError(
                f"{self.kind} '{name}' is not available in this version of personadlg "
                f"(module {module_name} is not installed)"
            )
        module = importlib.import_module(module_name)
        try:
            obj = getattr(module, attr)
        except AttributeError:
            raise NotAvailableError(
                f"{self.kind} '{name}': {entry.target} does not exist"
            ) from None
        declared = getattr(obj, "name", name)
        if isinstance(declared, str) and declared != name:
            raise ValueError(f"{self.kind} '{name}' resolves to an object named '{declared}'")
        self._loaded[name] = obj
        return obj


METHODS: Registry[Any] = Registry("method")
METRICS: Registry[Any] = Registry("metric")
FORMATS: Registry[Any] = Registry("format")
FILTERS: Registry[Any] = Registry("filter")

# --- methods (models/<name>/__init__.py defines SPEC) ---------------------------------------------
METHODS.register(
    "finetune",
    "personadlg.models.finetune:SPEC",
    config="personadlg.models.finetune.config:FinetuneConfig",
    help="causal-LM / seq2seq fine-tune on context -> response; optional persona or profile in the prompt (the papers' baselines)",
)
METHODS.register(
    "cvae",
    "personadlg.models.cvae:SPEC",
    config="personadlg.models.cvae.config:CVAEConfig",
    cli={
        "generate": {
            "--no-guidance": {
                "overrides": ["model.ode.guidance_scale=0"],
                "help": "decode the start latent as is (the unguided baseline); targets are still recorded",
            }
        },
        "plot": {
            "--latent": {
                "value": "FILE",
                "action": "personadlg.models.cvae.latent_plot:plot_examples",
                "output": "latent_space.png",
                "help": "draw the latent space (PCA of prior and posterior means) of this data file",
            }
        },
    },
    help="MIRACLE: CVAE with latent multi-attribute control, EBM composition and ODE sampling (arXiv 2310.18342)",
)
METHODS.register(
    "codebook",
    "personadlg.models.codebook:SPEC",
    config="personadlg.models.codebook.config:CodebookConfig",
    cli={
        "generate": {
            "--persona-mode": {
                "value": "MODE",
                "override": "model.persona_mode={}",
                "help": "predicted (codes from the history, no persona text; default) or oracle (the record's persona snapped to its nearest codes: the upper bound)",
            },
            "--codes": {
                "value": "IDS",
                "override": "model.codes=[{}]",
                "help": "force these M codes for every example, e.g. --codes 3,17,17,40",
            },
        },
    },
    help="MORPHEUS: persona codebook, EM init, VQ + contrastive + code prediction (arXiv 2407.02345)",
)
METHODS.register(
    "lora",
    "personadlg.models.lora:SPEC",
    config="personadlg.models.lora.config:LoRAFinetuneConfig",
    help="profile-aware base model + one peft LoRA adapter per user (arXiv 2409.00887)",
)
METHODS.register(
    "api",
    "personadlg.models.api:SPEC",
    trained=False,
    help="no training: any OpenAI-compatible chat model prompted with persona / profile / attributes (the papers' LLM baselines); `generate api/persona ...`",
)
METHODS.register(
    "classifier",
    "personadlg.models.classifier:SPEC",
    config="personadlg.models.classifier.config:ClassifierConfig",
    help="sequence classifiers for evaluation: per-attribute aspect classifiers, NLI",
)

# --- data formats (data/formats/<name>.py defines FORMAT) -----------------------------------------
_F = "personadlg.data.formats"
FORMATS.register(
    "jsonl",
    f"{_F}.native:FORMAT",
    help="personadlg dialogue or example records, one JSON object per line",
    extensions=(".jsonl",),
)
FORMATS.register(
    "miracle",
    f"{_F}.miracle:FORMAT",
    help="MIRACLE JSONL: {input, output, personas, tag} dialogues or {text, labels} texts",
)
FORMATS.register(
    "morpheus", f"{_F}.morpheus:FORMAT", help="MORPHEUS JSON list of {persona, context, response}"
)
FORMATS.register(
    "parlai",
    f"{_F}.parlai:FORMAT",
    help="ParlAI FbDialog text, e.g. ConvAI2 *_self_original_no_cands.txt",
)
FORMATS.register(
    "rcdg",
    f"{_F}.rcdg:FORMAT",
    help="RCDG line-aligned per-/src-/tgt- files (persona joined by </s>)",
)
FORMATS.register(
    "clv",
    f"{_F}.clv:FORMAT",
    help="CLV / MORPHEUS Person_Dialog text: 3-line blocks separated by [SEP]",
)
FORMATS.register(
    "sharegpt",
    f"{_F}.sharegpt:FORMAT",
    help="ShareGPT JSON/JSONL: {conversations: [{from, value}]}",
)
FORMATS.register(
    "csv",
    f"{_F}.table:CSV",
    help="CSV with a header row, mapped onto dialogues by --column (transcript, context/response, persona, ...)",
    extensions=(".csv",),
)
FORMATS.register(
    "tsv",
    f"{_F}.table:TSV",
    help="tab-separated values with a header row, mapped by --column",
    extensions=(".tsv",),
)
FORMATS.register(
    "parquet",
    f"{_F}.table:PARQUET",
    help="Parquet (through pyarrow), mapped by --column",
    extensions=(".parquet",),
)
FORMATS.register(
    "openai",
    f"{_F}.openai:FORMAT",
    help="OpenAI chat fine-tuning JSONL: {messages: [{role, content}]}",
)

# --- clean filters (data/clean/filters.py) ----------------------------------------------------------
_C = "personadlg.data.clean.filters"
FILTERS.register("length", f"{_C}:length", help="message length bounds in words", default=True)
FILTERS.register(
    "min_turns", f"{_C}:min_turns", help="minimum number of assistant messages", default=True
)
FILTERS.register(
    "refusal",
    f"{_C}:refusal",
    help="refusals and AI disclaimers ('as an AI language model') in assistant messages",
    default=True,
)
FILTERS.register(
    "repetition",
    f"{_C}:repetition",
    help="degenerate repetition (a word or phrase looping)",
    default=True,
)
FILTERS.register(
    "script", f"{_C}:script", help="text in the wrong writing system (default: Latin)", default=True
)
FILTERS.register(
    "language",
    f"{_C}:language",
    help="text in the wrong language (stop-word profile; off unless --lang is given)",
    default=False,
)
FILTERS.register(
    "persona_copy",
    f"{_C}:persona_copy",
    help="assistant messages that parrot their persona sentences",
    default=True,
)
FILTERS.register(
    "attributes",
    f"{_C}:attributes",
    help="attribute/aspect names outside the declared attribute space (on when a space is given)",
    default=False,
)
FILTERS.register(
    "exact_dup",
    "personadlg.data.clean.dedup:exact_dup",
    help="exact duplicates after normalization (first kept)",
    default=True,
)
FILTERS.register(
    "near_dup",
    "personadlg.data.clean.dedup:near_dup",
    help="near-duplicates: MinHash + LSH above a Jaccard threshold (first kept)",
    default=True,
)

# --- metrics (definitions: methods/metrics.md; factories in metrics/catalog.py) ---------------------
for _name, _hib, _help in [
    ("bleu-1", True, "corpus BLEU, n-gram order 1 (sacrebleu's formula)"),
    ("bleu-2", True, "corpus BLEU, n-gram order 2"),
    ("bleu-3", True, "corpus BLEU, n-gram order 3"),
    ("bleu-4", True, "corpus BLEU, n-gram order 4"),
    ("bleu-1-sent", True, "mean sentence BLEU-1 (exp smoothing, effective order)"),
    ("bleu-2-sent", True, "mean sentence BLEU-2"),
    ("bleu-3-sent", True, "mean sentence BLEU-3"),
    ("bleu-4-sent", True, "mean sentence BLEU-4"),
    ("rouge-l", True, "mean ROUGE-L F-measure (rouge-score with our tokenizer)"),
    ("rouge-l-r", True, "mean ROUGE-L recall"),
    ("rouge-l-p", True, "mean ROUGE-L precision"),
    ("dist-1", True, "corpus distinct unigrams / unigrams"),
    ("dist-2", True, "corpus distinct bigrams / bigrams"),
    ("dist-1-sent", True, "mean per-response distinct unigram ratio"),
    ("dist-2-sent", True, "mean per-response distinct bigram ratio"),
    ("sbleu", False, "self-BLEU-4 against all other generations (exact NLTK method1, O(n-grams))"),
    (
        "p-co",
        True,
        "persona coverage (idf-weighted persona words in the generation, no stop words)",
    ),
    (
        "p-co-lift",
        True,
        "P-Co with the own persona minus P-Co with another example's (about 0 when persona-blind)",
    ),
    ("persona-copy", False, "% generations copying >= 5 words of their persona"),
    ("persona-cos", True, "max cosine between generation and persona sentences (--embedder)"),
    (
        "persona-cos-lift",
        True,
        "persona-cos with the own persona minus with another example's (--embedder)",
    ),
    ("nli-prob", True, "mean P(entailment | context, generation) (--nli)"),
    ("nli-acc", True, "% generations whose NLI argmax is entailment (--nli)"),
    (
        "c-score",
        True,
        "persona consistency: entail 1, neutral 0, contradict -1, summed (--nli, 3-class)",
    ),
    (
        "personalization-acc",
        True,
        "% targeted (generation, attribute) pairs classified as the target aspect (--classifier)",
    ),
    ("personalization-prob", True, "mean probability of the target aspect (--classifier)"),
    ("ppl", False, "perplexity of the generations under a causal LM (--lm)"),
    ("emb-sim", True, "cosine of generation and reference embeddings (--embedder)"),
    (
        "judge-persona",
        True,
        "LLM judge: 1-5 fit of the response with the persona / profile, mean (--judge)",
    ),
    (
        "judge-attributes",
        True,
        "LLM judge: % targeted (generation, attribute) pairs showing the target aspect (--judge)",
    ),
    (
        "judge-coherence",
        True,
        "LLM judge: 1-5 fit of the response with the context, mean (--judge)",
    ),
]:
    METRICS.register(
        _name,
        f"personadlg.metrics.catalog:{_name.replace('-', '_')}",
        help=_help,
        higher_is_better=_hib,
    )
