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

    def unregister(self, name: str) -> None:
        """Forget NAME (e.g. to register another implementation under it)."""
        self.entry(name)
        del self._entries[name]
        self._loaded.pop(name, None)

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
"""Methods by name; each entry's target is the method's `SPEC` (`models/spec.py: MethodSpec`)."""
METRICS: Registry[Any] = Registry("metric")
FORMATS: Registry[Any] = Registry("format")
FILTERS: Registry[Any] = Registry("filter")

# --- methods: each is declared once, by `SPEC` in models/<name>/__init__.py (models/spec.py) ---
METHODS.register("finetune", "personadlg.models.finetune:SPEC")
METHODS.register("cvae", "personadlg.models.cvae:SPEC")
METHODS.register("codebook", "personadlg.models.codebook:SPEC")
METHODS.register("lora", "personadlg.models.lora:SPEC")
METHODS.register("api", "personadlg.models.api:SPEC")
METHODS.register("classifier", "personadlg.models.classifier:SPEC")

ENTRY_POINTS = "personadlg.methods"
"""The entry-point group through which an installed package adds methods: in its pyproject.toml,
`[project.entry-points."personadlg.methods"]` with `NAME = "package:SPEC"`."""


def register_installed_methods() -> None:
    """Register the methods installed packages declare (a name personadlg has is kept, and the
    clash logged)."""
    import logging
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINTS):
        if ep.name in METHODS:
            logging.getLogger(__name__).warning(
                "method %r of %s is not registered: the name is taken", ep.name, ep.value
            )
            continue
        METHODS.register(ep.name, ep.value)


register_installed_methods()


def method_facts(name: str) -> dict[str, Any]:
    """What `ls methods` says of method NAME, read from its spec (imports no torch)."""
    spec = METHODS.get(name)
    return {
        "help": spec.description,
        "trained": spec.trained,
        "supports": list(spec.supports),
        "stages": list(spec.stages),
        "flags": {cmd: sorted(flags) for cmd, flags in spec.flags.items()},
        "listings": sorted(spec.listings),
        "commands": sorted(spec.commands),
    }


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

# --- metrics (factories: metrics/catalog.py; `make_metric` calls one with eval's options, params)
# Each entry is the metric's one declaration: name, factory, params, direction and help.
_M = "personadlg.metrics.catalog"
METRICS.register(
    "bleu-1",
    f"{_M}:corpus_bleu",
    params={"order": 1},
    higher_is_better=True,
    help="corpus BLEU, n-gram order 1 (sacrebleu's formula)",
)
METRICS.register(
    "bleu-2",
    f"{_M}:corpus_bleu",
    params={"order": 2},
    higher_is_better=True,
    help="corpus BLEU, n-gram order 2",
)
METRICS.register(
    "bleu-3",
    f"{_M}:corpus_bleu",
    params={"order": 3},
    higher_is_better=True,
    help="corpus BLEU, n-gram order 3",
)
METRICS.register(
    "bleu-4",
    f"{_M}:corpus_bleu",
    params={"order": 4},
    higher_is_better=True,
    help="corpus BLEU, n-gram order 4",
)
METRICS.register(
    "bleu-1-sent",
    f"{_M}:sentence_bleu",
    params={"order": 1},
    higher_is_better=True,
    help="mean sentence BLEU-1 (exp smoothing, effective order)",
)
METRICS.register(
    "bleu-2-sent",
    f"{_M}:sentence_bleu",
    params={"order": 2},
    higher_is_better=True,
    help="mean sentence BLEU-2",
)
METRICS.register(
    "bleu-3-sent",
    f"{_M}:sentence_bleu",
    params={"order": 3},
    higher_is_better=True,
    help="mean sentence BLEU-3",
)
METRICS.register(
    "bleu-4-sent",
    f"{_M}:sentence_bleu",
    params={"order": 4},
    higher_is_better=True,
    help="mean sentence BLEU-4",
)
METRICS.register(
    "rouge-l",
    f"{_M}:rouge_l",
    params={"part": "f"},
    higher_is_better=True,
    help="mean ROUGE-L F-measure (rouge-score with our tokenizer)",
)
METRICS.register(
    "rouge-l-r",
    f"{_M}:rouge_l",
    params={"part": "r"},
    higher_is_better=True,
    help="mean ROUGE-L recall",
)
METRICS.register(
    "rouge-l-p",
    f"{_M}:rouge_l",
    params={"part": "p"},
    higher_is_better=True,
    help="mean ROUGE-L precision",
)
METRICS.register(
    "dist-1",
    f"{_M}:distinct",
    params={"order": 1},
    higher_is_better=True,
    help="corpus distinct unigrams / unigrams",
)
METRICS.register(
    "dist-2",
    f"{_M}:distinct",
    params={"order": 2},
    higher_is_better=True,
    help="corpus distinct bigrams / bigrams",
)
METRICS.register(
    "dist-1-sent",
    f"{_M}:distinct",
    params={"order": 1, "sentence": True},
    higher_is_better=True,
    help="mean per-response distinct unigram ratio",
)
METRICS.register(
    "dist-2-sent",
    f"{_M}:distinct",
    params={"order": 2, "sentence": True},
    higher_is_better=True,
    help="mean per-response distinct bigram ratio",
)
METRICS.register(
    "sbleu",
    f"{_M}:self_bleu",
    higher_is_better=False,
    help="self-BLEU-4 against all other generations (exact NLTK method1, O(n-grams))",
)
METRICS.register(
    "p-co",
    f"{_M}:p_co",
    higher_is_better=True,
    help="persona coverage (idf-weighted persona words in the generation, no stop words)",
)
METRICS.register(
    "p-co-lift",
    f"{_M}:p_co_lift",
    higher_is_better=True,
    help="P-Co with the own persona minus P-Co with another example's (about 0 when persona-blind)",
)
METRICS.register(
    "persona-copy",
    f"{_M}:persona_copy",
    higher_is_better=False,
    help="% generations copying >= 5 words of their persona",
)
METRICS.register(
    "persona-cos",
    f"{_M}:persona_cos",
    higher_is_better=True,
    help="max cosine between generation and persona sentences (--embedder)",
)
METRICS.register(
    "persona-cos-lift",
    f"{_M}:persona_cos_lift",
    higher_is_better=True,
    help="persona-cos with the own persona minus with another example's (--embedder)",
)
METRICS.register(
    "nli-prob",
    f"{_M}:nli",
    params={"kind": "prob"},
    higher_is_better=True,
    help="mean P(entailment | context, generation) (--nli)",
)
METRICS.register(
    "nli-acc",
    f"{_M}:nli",
    params={"kind": "acc"},
    higher_is_better=True,
    help="% generations whose NLI argmax is entailment (--nli)",
)
METRICS.register(
    "c-score",
    f"{_M}:c_score",
    higher_is_better=True,
    help="persona consistency: entail 1, neutral 0, contradict -1, summed (--nli, 3-class)",
)
METRICS.register(
    "personalization-acc",
    f"{_M}:personalization",
    params={"kind": "acc"},
    higher_is_better=True,
    help="% targeted (generation, attribute) pairs classified as the target aspect (--classifier)",
)
METRICS.register(
    "personalization-prob",
    f"{_M}:personalization",
    params={"kind": "prob"},
    higher_is_better=True,
    help="mean probability of the target aspect (--classifier)",
)
METRICS.register(
    "ppl",
    f"{_M}:perplexity",
    higher_is_better=False,
    help="perplexity of the generations under a causal LM (--lm)",
)
METRICS.register(
    "emb-sim",
    f"{_M}:emb_sim",
    higher_is_better=True,
    help="cosine of generation and reference embeddings (--embedder)",
)
METRICS.register(
    "judge-persona",
    f"{_M}:judge",
    params={"kind": "persona"},
    higher_is_better=True,
    help="LLM judge: 1-5 fit of the response with the persona / profile, mean (--judge)",
)
METRICS.register(
    "judge-attributes",
    f"{_M}:judge",
    params={"kind": "attributes"},
    higher_is_better=True,
    help="LLM judge: % targeted (generation, attribute) pairs showing the target aspect (--judge)",
)
METRICS.register(
    "judge-coherence",
    f"{_M}:judge",
    params={"kind": "coherence"},
    higher_is_better=True,
    help="LLM judge: 1-5 fit of the response with the context, mean (--judge)",
)
