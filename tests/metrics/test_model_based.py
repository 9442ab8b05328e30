"""Model-based metrics against direct computations with the same tiny models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from personadlg.errors import UsageError
from personadlg.metrics.base import EvalData
from personadlg.metrics.model_based import (
    NLI,
    CScore,
    EmbeddingSimilarity,
    Perplexity,
    PersonaCosine,
    Personalization,
)

GENS = [
    "I bake bread every sunday.",
    "The sea glitters like broken glass at dawn.",
    "It rained.",
    "",
]


def _classifier(tmp_path_factory, tokenizer_dir, labels, name):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(len(labels))
    out = tmp_path_factory.mktemp(name)
    BertForSequenceClassification(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def style_clf(tmp_path_factory, tiny_tokenizer_dir):
    return _classifier(tmp_path_factory, tiny_tokenizer_dir, ["plain", "lyrical"], "style")


@pytest.fixture(scope="module")
def nli3(tmp_path_factory, tiny_tokenizer_dir):
    return _classifier(
        tmp_path_factory, tiny_tokenizer_dir, ["entailment", "neutral", "contradiction"], "nli3"
    )


def _probs(path, texts, pairs=None):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    out = []
    for i, t in enumerate(texts):  # one at a time: no padding effects
        enc = tok(t, pairs[i] if pairs else None, return_tensors="pt")
        with torch.no_grad():
            out.append(
                torch.softmax(
                    model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits,
                    -1,
                )[0].numpy()
            )
    return np.array(out)


def test_personalization_matches_direct_classification(style_clf):
    targets = [
        {"language_style": "plain"},
        {"language_style": "lyrical"},
        {"language_style": "lyrical"},
        {},
    ]
    data = EvalData(generations=GENS, targets=targets)
    p = _probs(str(style_clf), GENS[:3])
    want = [0, 1, 1]
    acc = Personalization({"language_style": str(style_clf)}, "acc").compute(data)
    prob = Personalization({"language_style": str(style_clf)}, "prob").compute(data)
    assert acc.aggregate(None) == pytest.approx(
        100 * np.mean([p[i].argmax() == w for i, w in enumerate(want)])
    )
    assert prob.aggregate(None) == pytest.approx(
        100 * np.mean([p[i, w] for i, w in enumerate(want)]), abs=1e-4
    )
    assert acc.n == 3 and acc.details["by_attribute"]["language_style"] == pytest.approx(
        acc.aggregate(None)
    )
    with pytest.raises(
        UsageError, match=r"target aspect\(s\) \['poetic'\] are not among its labels"
    ):
        Personalization({"language_style": str(style_clf)}).compute(
            EvalData(generations=["x"], targets=[{"language_style": "poetic"}])
        )


def test_nli_coherence_matches_direct_computation(nli3):
    contexts = [
        [{"role": "user", "content": "do you bake?"}],
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "how is the sea?"},
        ],
        [],
        [{"role": "user", "content": "x"}],
    ]
    data = EvalData(generations=GENS, contexts=contexts)
    premises = ["\n".join(m["content"] for m in c) for c in contexts]
    p = _probs(str(nli3), premises, GENS)
    assert NLI(str(nli3), "prob").compute(data).aggregate(None) == pytest.approx(
        100 * p[:, 0].mean(), abs=1e-4
    )
    assert NLI(str(nli3), "acc").compute(data).aggregate(None) == pytest.approx(
        100 * (p.argmax(1) == 0).mean()
    )


def test_c_score_matches_direct_computation(nli3, style_clf):
    personas = [["i bake bread .", "i have a dog ."], ["i love the sea ."], [], ["i like rain ."]]
    data = EvalData(generations=GENS, personas=personas)
    score = {0: 1, 1: 0, 2: -1}
    expected = []
    for g, ps in zip(GENS, personas):
        if ps:
            p = _probs(str(nli3), ps, [g] * len(ps))
            expected.append(sum(score[int(x)] for x in p.argmax(1)))
    assert CScore(str(nli3)).compute(data).aggregate(None) == pytest.approx(np.mean(expected))
    with pytest.raises(UsageError, match="cannot tell which NLI label is entailment"):
        CScore(str(style_clf)).compute(data)


def test_perplexity_matches_a_sequence_by_sequence_computation(tiny_gpt2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    lm = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir).eval()
    nll, count = 0.0, 0
    for g in GENS:
        ids = torch.tensor([[tok.bos_token_id, *tok(g, add_special_tokens=False)["input_ids"]]])
        if ids.shape[1] < 2:
            continue
        with torch.no_grad():
            logits = lm(input_ids=ids).logits
        nll += torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum").item()
        count += ids.shape[1] - 1
    got = Perplexity(str(tiny_gpt2_dir), batch_size=3).compute(EvalData(generations=GENS))
    assert got.aggregate(None) == pytest.approx(math.exp(nll / count), rel=1e-4)
    assert got.details["tokens"] == count


def test_embedding_similarities(tiny_bert_dir):
    from transformers import AutoModel, AutoTokenizer

    tok, model = (
        AutoTokenizer.from_pretrained(tiny_bert_dir),
        AutoModel.from_pretrained(tiny_bert_dir).eval(),
    )

    def emb(t):
        enc = tok(t, return_tensors="pt")
        with torch.no_grad():
            h = model(
                input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
            ).last_hidden_state[0]
        v = h.mean(0)
        return (v / v.norm()).numpy()

    gens, refs = GENS[:3], ["I make bread on sundays.", "The ocean shines.", "Rain fell."]
    got = (
        EmbeddingSimilarity(str(tiny_bert_dir))
        .compute(EvalData(generations=gens, references=refs))
        .aggregate(None)
    )
    assert got == pytest.approx(
        100 * np.mean([emb(g) @ emb(r) for g, r in zip(gens, refs)]), abs=1e-3
    )
    personas = [["i bake .", "i run ."], ["i sail ."], ["i sing ."]]
    got = (
        PersonaCosine(str(tiny_bert_dir))
        .compute(EvalData(generations=gens, personas=personas))
        .aggregate(None)
    )
    assert got == pytest.approx(
        100 * np.mean([max(emb(g) @ emb(s) for s in p) for g, p in zip(gens, personas)]), abs=1e-3
    )
