"""Model-based metrics: NLI coherence, persona consistency (C-score), personalization accuracy,
perplexity, and embedding similarities. Each needs a model directory; inputs are batched and run on
a GPU when there is one.
"""

from __future__ import annotations

import json
import logging
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from personadlg.errors import UsageError
from personadlg.metrics.base import (
    Computed,
    EvalData,
    mean_computed,
    need_personas,
    pairs_computed,
    signature,
)
from personadlg.metrics.persona import lift_parts, lift_values, other_personas
from personadlg.models.loading import from_pretrained, is_hub_id, resolve_model

logger = logging.getLogger(__name__)

_ENTAIL = ("entailment", "entail", "entails", "positive")
_NEUTRAL = ("neutral",)
_CONTRA = ("contradiction", "contradict", "contradicts", "negative")


def _device() -> Any:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _tag(path: str | Path) -> str:
    """The model in a signature: its name and weights hash (`models/identity.py`)."""
    from personadlg.models.identity import model_id

    return model_id(str(path))


def _source(path: str) -> str:
    """A model directory, or a hub id (a bundled copy when installed); else a clear error."""
    resolved = resolve_model(path)
    if not Path(resolved).exists() and not is_hub_id(path):
        raise UsageError(f"{path}: no such model directory")
    return resolved


@lru_cache(maxsize=16)
def load_sequence_classifier(path: str) -> tuple[Any, Any, dict[int, str]]:
    """(model, tokenizer, id2label) of a Hugging Face sequence-classification model (directory or
    hub id), in eval mode."""
    from transformers import AutoModelForSequenceClassification

    from personadlg.models.backbone import load_tokenizer

    source = _source(path)
    tok = load_tokenizer(source)
    model = from_pretrained(AutoModelForSequenceClassification, source).to(_device()).eval()
    id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
    return model, tok, id2label


_CLASSIFIED: OrderedDict[str, np.ndarray] = OrderedDict()
"""The last few `classify` results (personalization-acc and -prob read the same probabilities)."""


def classify(
    path: str,
    texts: list[str],
    pairs: list[str] | None = None,
    *,
    batch_size: int = 64,
    max_length: int = 256,
) -> np.ndarray:
    """Class probabilities (N, C) for TEXTS (or text pairs TEXTS, PAIRS), batched; pairs truncate the
    first text from the left. The last 8 results are kept: asking again costs nothing."""
    import hashlib

    h = hashlib.sha256(f"{path}\x00{max_length}\x00{pairs is not None}".encode())
    for t in [*texts, *(pairs or [])]:
        h.update(t.encode("utf-8", "surrogatepass") + b"\x00")
    key = h.hexdigest()
    if key in _CLASSIFIED:
        _CLASSIFIED.move_to_end(key)
        return _CLASSIFIED[key].copy()
    probs = _classify(path, texts, pairs, batch_size=batch_size, max_length=max_length)
    _CLASSIFIED[key] = probs
    while len(_CLASSIFIED) > 8:
        _CLASSIFIED.popitem(last=False)
    return probs.copy()


def _classify(
    path: str, texts: list[str], pairs: list[str] | None, *, batch_size: int, max_length: int
) -> np.ndarray:
    import torch

    model, tok, _ = load_sequence_classifier(path)
    out = []
    side = tok.truncation_side
    tok.truncation_side = "left"  # drop the oldest context first
    try:
        for i in range(0, len(texts), batch_size):
            a = texts[i : i + batch_size]
            b = pairs[i : i + batch_size] if pairs is not None else None
            enc = tok(
                a,
                b,
                padding=True,
                truncation="only_first" if b is not None else True,
                max_length=max_length,
                return_tensors="pt",
            )
            with torch.no_grad():
                logits = model(**_inputs_for(model, enc)).logits
            out.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
    finally:
        tok.truncation_side = side
    return np.concatenate(out) if out else np.zeros((0, len(model.config.id2label)))


def _inputs_for(model: Any, enc: Any) -> dict[str, Any]:
    """The tokenizer outputs the model's forward accepts (e.g. no token_type_ids for DistilBERT), on its device."""
    import inspect

    accepted = inspect.signature(model.forward).parameters
    return {k: v.to(model.device) for k, v in enc.items() if k in accepted}


def nli_roles(id2label: dict[int, str], entailment_label: str | None = None) -> dict[str, int]:
    """Indices of entailment / neutral / contradiction from the model's labels (names or synonyms)."""
    roles: dict[str, int] = {}
    for i, name in id2label.items():
        low = name.lower()
        if (entailment_label and name == entailment_label) or (
            not entailment_label and low in _ENTAIL
        ):
            roles["entailment"] = i
        elif low in _NEUTRAL:
            roles["neutral"] = i
        elif low in _CONTRA:
            roles["contradiction"] = i
    if "entailment" not in roles:
        raise UsageError(
            f"cannot tell which NLI label is entailment among {sorted(id2label.values())}; pass --nli-entailment-label NAME"
        )
    return roles


def _context_text(context: list[dict[str, str]], turns: int) -> str:
    msgs = context[-turns:] if turns > 0 else context
    return "\n".join(m["content"] for m in msgs)


@dataclass
class NLI:
    """nli-prob: mean P(entailment | premise = context, hypothesis = generation) × 100; nli-acc: % argmax = entailment."""

    model: str
    kind: str = "prob"
    context_turns: int = 0
    entailment_label: str | None = None
    requires: tuple[str, ...] = ("contexts",)

    @property
    def name(self) -> str:
        return f"nli-{self.kind}"

    def signature(self) -> str:
        return signature(
            "nli",
            stat=self.kind,
            model=_tag(self.model),
            premise=f"context-last{self.context_turns or 'all'}-lefttrunc",
            agg="mean",
        )

    def compute(self, data: EvalData) -> Computed:
        _, _, id2label = load_sequence_classifier(str(self.model))
        ent = nli_roles(id2label, self.entailment_label)["entailment"]
        probs = classify(
            str(self.model),
            [_context_text(c, self.context_turns) for c in data.contexts],
            list(data.generations),
        )
        values = (
            probs[:, ent] if self.kind == "prob" else (probs.argmax(axis=1) == ent).astype(float)
        )
        return mean_computed(values, n=len(data))


@dataclass
class CScore:
    """C-score (Madotto et al. 2019): Σ over persona sentences of NLI(sentence, generation) ∈ {1, 0, -1}; mean over examples."""

    model: str
    entailment_label: str | None = None
    requires: tuple[str, ...] = ("personas",)
    name = "c-score"

    def signature(self) -> str:
        return signature(
            "c-score",
            model=_tag(self.model),
            premise="persona-sentence",
            scores="entail:1|neutral:0|contradict:-1",
            agg="mean-of-sum",
        )

    def compute(self, data: EvalData) -> Computed:
        _, _, id2label = load_sequence_classifier(str(self.model))
        roles = nli_roles(id2label, self.entailment_label)
        if len(roles) < 3:
            raise ValueError(  # a default run skips it; asking for it explicitly fails
                f"c-score needs a 3-class NLI model (entailment, neutral, contradiction); {self.model} has {sorted(id2label.values())}"
            )
        value_of = {roles["entailment"]: 1.0, roles["neutral"]: 0.0, roles["contradiction"]: -1.0}
        premises, hyps, owner = [], [], []
        for i, (g, p) in enumerate(zip(data.generations, data.personas)):
            for s in p:
                premises.append(s)
                hyps.append(g)
                owner.append(i)
        need_personas(data, self.name)
        labels = classify(str(self.model), premises, hyps).argmax(axis=1)
        values = np.full(len(data), np.nan)
        for i, lab in zip(owner, labels):
            values[i] = (0.0 if np.isnan(values[i]) else values[i]) + value_of[int(lab)]
        return mean_computed(values, scale=1.0)


@dataclass
class Personalization:
    """For every targeted (example, attribute) with a classifier: accuracy (argmax = target aspect) or mean P(target) × 100."""

    classifiers: dict[str, str]
    kind: str = "acc"
    requires: tuple[str, ...] = ("targets",)
    per_attribute: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"personalization-{self.kind}"

    def judges(self) -> dict[str, dict[str, Any]]:
        """Each classifier: its model id and its held-out accuracy (from the eval_results.json a
        personadlg classifier checkpoint carries: data it never trained on), with a 95% interval."""
        out = {}
        for attr, ref in sorted(self.classifiers.items()):
            info: dict[str, Any] = {"model": _tag(ref)}
            results = Path(resolve_model(ref)) / "eval_results.json"
            if results.is_file():
                r = json.loads(results.read_text())
                info["held_out_accuracy"] = r.get("accuracy")
                info["held_out_n"] = r.get("n")
                if "accuracy_ci95_lo" in r:
                    info["held_out_ci95"] = [r["accuracy_ci95_lo"], r["accuracy_ci95_hi"]]
            out[attr] = info
        return out

    def signature(self) -> str:
        parts = []
        for attr, j in self.judges().items():
            acc = j.get("held_out_accuracy")
            held = (
                f"(held-out acc {acc:.1f} n {j.get('held_out_n')})"
                if isinstance(acc, (int, float))
                else "(held-out acc unknown)"
            )
            parts.append(f"{attr}={j['model']}{held}")
        return signature(
            "personalization",
            stat=self.kind,
            classifiers=",".join(parts),
            target="target_attributes|attributes",
            agg="mean-over-pairs",
        )

    def compute(self, data: EvalData) -> Computed:
        values = np.full((len(data), len(self.classifiers)), np.nan)
        attrs = sorted(self.classifiers)
        for j, attr in enumerate(attrs):
            rows = [i for i, t in enumerate(data.targets) if attr in t]
            if not rows:
                continue
            _, _, id2label = load_sequence_classifier(str(self.classifiers[attr]))
            label2id = {v: k for k, v in id2label.items()}
            unknown = sorted({data.targets[i][attr] for i in rows} - set(label2id))
            if unknown:
                raise UsageError(
                    f"--classifier {attr}: target aspect(s) {unknown} are not among its labels {sorted(label2id)}"
                )
            probs = classify(str(self.classifiers[attr]), [data.generations[i] for i in rows])
            for r, i in enumerate(rows):
                target = label2id[data.targets[i][attr]]
                values[i, j] = (
                    float(probs[r].argmax() == target)
                    if self.kind == "acc"
                    else float(probs[r, target])
                )
        if np.isnan(values).all():
            raise ValueError(
                f"{self.name}: no example has a target for {', '.join(attrs)} (target_attributes or attributes)"
            )

        out = pairs_computed(
            values, attrs, details={"classifiers": self.judges()}, default_replicates=1000
        )
        if self.kind != "acc":  # probabilities are not yes / no answers to agree on
            out.cells = None
        return out


@lru_cache(maxsize=4)
def _load_lm(path: str) -> tuple[Any, Any]:
    from personadlg.models.backbone import load_pretrained, load_tokenizer

    source = _source(path)
    return load_pretrained(source, arch="causal").to(_device()).eval(), load_tokenizer(source)


@dataclass
class Perplexity:
    """exp(total NLL / total tokens) of the generations alone under a causal LM (the BOS token, if any, starts each)."""

    model: str
    batch_size: int = 32
    requires: tuple[str, ...] = ()
    name = "ppl"

    def signature(self) -> str:
        return signature(
            "ppl", model=_tag(self.model), text="generation-alone", agg="corpus-token-mean"
        )

    def compute(self, data: EvalData) -> Computed:
        import torch

        lm, tok = _load_lm(str(self.model))
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        limit = getattr(lm.config, "n_positions", None) or getattr(
            lm.config, "max_position_embeddings", 1024
        )
        seqs = [
            ([start] if start is not None else []) + tok(g, add_special_tokens=False)["input_ids"]
            for g in data.generations
        ]
        seqs = [s[:limit] for s in seqs]
        nll = np.zeros(len(seqs))
        count = np.zeros(len(seqs))
        for i in range(0, len(seqs), self.batch_size):
            chunk = seqs[i : i + self.batch_size]
            n = max(len(s) for s in chunk)
            if n < 2:
                continue
            ids = torch.full((len(chunk), n), tok.pad_token_id or 0, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, s in enumerate(chunk):
                ids[r, : len(s)] = torch.tensor(s)
                mask[r, : len(s)] = 1
            with torch.no_grad():
                logits = lm(
                    input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device)
                ).logits.float()
            logp = (
                torch.log_softmax(logits[:, :-1], dim=-1)
                .gather(-1, ids[:, 1:, None].to(lm.device))
                .squeeze(-1)
                .cpu()
            )
            m = mask[:, 1:].float()
            nll[i : i + len(chunk)] = -(logp * m).sum(dim=1).numpy()
            count[i : i + len(chunk)] = m.sum(dim=1).numpy()

        def agg(idx: np.ndarray | None) -> float:
            total_nll = nll.sum() if idx is None else nll[idx].sum()
            total = count.sum() if idx is None else count[idx].sum()
            return math.exp(total_nll / total) if total else float("nan")

        return Computed(aggregate=agg, n=len(data), details={"tokens": int(count.sum())})


@lru_cache(maxsize=4)
def _load_embedder(path: str) -> tuple[Any, Any, str]:
    import json

    from transformers import AutoModel

    from personadlg.models.backbone import load_tokenizer

    source = _source(path)
    pooling = "mean"
    cfg = Path(source) / "1_Pooling" / "config.json"
    if cfg.is_file():  # a sentence-transformers directory: use its own pooling
        conf = json.loads(cfg.read_text())
        pooling = (
            "cls"
            if conf.get("pooling_mode_cls_token")
            else "max"
            if conf.get("pooling_mode_max_tokens")
            else "mean"
        )
    model = from_pretrained(AutoModel, source).to(_device()).eval()
    return model, load_tokenizer(source), pooling


def embed(path: str, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Sentence embeddings (N, D), L2-normalised; mean pooling unless the directory says otherwise."""
    import torch

    model, tok, pooling = _load_embedder(str(path))
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tok(
            texts[i : i + batch_size],
            padding=True,
            truncation=True,
            max_length=256,
            return_tensors="pt",
        )
        with torch.no_grad():
            hidden = model(**_inputs_for(model, enc)).last_hidden_state.float()
        mask = enc["attention_mask"].to(hidden.device).unsqueeze(-1).float()
        if pooling == "cls":
            vec = hidden[:, 0]
        elif pooling == "max":
            vec = hidden.masked_fill(mask == 0, -1e9).max(dim=1).values
        else:
            vec = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        out.append(torch.nn.functional.normalize(vec, dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 1))


def _embedder_parts(model: str) -> dict[str, str]:
    """The embedding model in a signature: its id and its pooling."""
    return {"model": _tag(model), "pooling": _load_embedder(str(model))[2]}


def _persona_cosine(model: str, data: EvalData) -> Callable[[int, list[str]], float]:
    """best(i, persona): the max cosine between generation i of DATA and a sentence of PERSONA
    (every persona sentence and generation embedded once)."""
    sentences = sorted({s for p in data.personas for s in p})
    index = {s: i for i, s in enumerate(sentences)}
    s_emb = embed(str(model), sentences)
    g_emb = embed(str(model), list(data.generations))

    def best(i: int, persona: list[str]) -> float:
        return max(float(g_emb[i] @ s_emb[index[s]]) for s in persona)

    return best


@dataclass
class EmbeddingSimilarity:
    """emb-sim: mean cosine of generation and reference embeddings (2409.00887's measure) × 100."""

    model: str
    requires: tuple[str, ...] = ("references",)
    name = "emb-sim"

    def signature(self) -> str:
        return signature("emb-sim", **_embedder_parts(self.model), agg="mean-cosine")

    def compute(self, data: EvalData) -> Computed:
        refs = [r or "" for r in data.references]
        g, r = embed(str(self.model), list(data.generations)), embed(str(self.model), refs)
        values = (g * r).sum(axis=1)
        return mean_computed(values, n=len(data))


@dataclass
class PersonaCosine:
    """persona-cos: mean over examples of the max cosine between the generation and a persona sentence × 100."""

    model: str
    requires: tuple[str, ...] = ("personas",)
    name = "persona-cos"

    def signature(self) -> str:
        return signature("persona-cos", **_embedder_parts(self.model), agg="mean-of-max-cosine")

    def compute(self, data: EvalData) -> Computed:
        need_personas(data, self.name)
        best = _persona_cosine(self.model, data)
        values = np.array([best(i, p) if p else np.nan for i, p in enumerate(data.personas)])
        return mean_computed(values)


@dataclass
class PersonaCosineLift:
    """persona-cos against the own persona minus against another example's persona (seeded
    derangements of the distinct personas, DRAWS draws), × 100; about 0 when persona-blind."""

    model: str
    draws: int = 10
    seed: int = 0
    requires: tuple[str, ...] = ("personas",)
    name = "persona-cos-lift"

    def signature(self) -> str:
        return signature(
            "persona-cos-lift", **_embedder_parts(self.model), **lift_parts(self.draws, self.seed)
        )

    def compute(self, data: EvalData) -> Computed:
        need_personas(data, self.name)
        others = other_personas(data.personas, draws=self.draws, seed=self.seed)
        values = lift_values(data.personas, others, _persona_cosine(self.model, data))
        return mean_computed(values)
