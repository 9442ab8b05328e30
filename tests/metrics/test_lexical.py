"""Lexical and persona metrics against hand-computed values, sacrebleu, rouge-score and NLTK."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from personadlg.metrics.base import EvalData, bootstrap_ci
from personadlg.metrics.catalog import higher_is_better
from personadlg.metrics.evaluate import evaluate_texts
from personadlg.metrics.lexical import CorpusBLEU, Distinct, RougeL, SelfBLEU, SentenceBLEU
from personadlg.metrics.persona import (
    PCo,
    PersonaCopy,
    copies_persona,
    pco_example,
    persona_idf,
    words,
)
from personadlg.metrics.selfbleu import self_bleu, self_bleu_reference
from personadlg.metrics.tokenize import TokenSetting, get_tokenizer


def value(metric, **cols):
    return metric.compute(EvalData(**cols)).aggregate(None)


# -- tokenization -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,lc,text,tokens",
    [
        ("13a", False, "Hello, world!", ["Hello", ",", "world", "!"]),
        ("13a", True, "Hello, World!", ["hello", ",", "world", "!"]),
        ("whitespace", False, "Hello, world!", ["Hello,", "world!"]),
        ("char", False, "ab c", ["a", "b", "c"]),
        ("zh", False, "我爱茶", ["我", "爱", "茶"]),
        ("intl", False, "it's here, 你好!", ["it", "'", "s", "here", ",", "你好", "!"]),
    ],
)
def test_tokenizers(name, lc, text, tokens):
    assert get_tokenizer(name, lc)(text) == tokens


# -- BLEU ----------------------------------------------------------------------------------------------


def test_bleu_by_hand():
    # hyp "the cat sat on the mat" vs ref "the cat is on the mat": unigram matches 5/6, bigram 3/5, equal lengths
    hyps, refs = ["the cat sat on the mat"], ["the cat is on the mat"]
    assert value(CorpusBLEU(1), generations=hyps, references=refs) == pytest.approx(100 * 5 / 6)
    assert value(CorpusBLEU(2), generations=hyps, references=refs) == pytest.approx(
        100 * math.sqrt(5 / 6 * 3 / 5)
    )
    # brevity penalty: hyp of 3 words vs ref of 6 → exp(1 - 6/3)
    assert value(CorpusBLEU(1), generations=["the cat sat"], references=refs) == pytest.approx(
        100 * 2 / 3 * math.exp(-1)
    )


def _random_corpus(seed, n=60):
    rng = random.Random(seed)
    vocab = "the a cat dog sat ran on in mat hat , . ! big small".split()
    hyps = [" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 14))) for _ in range(n)]
    refs = [" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 14))) for _ in range(n)]
    return hyps, refs


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_bleu_equals_sacrebleu(seed, order):
    from sacrebleu.metrics import BLEU

    hyps, refs = _random_corpus(seed)
    ours = value(CorpusBLEU(order), generations=hyps, references=refs)
    assert ours == pytest.approx(
        BLEU(max_ngram_order=order).corpus_score(hyps, [refs]).score, abs=1e-9
    )
    sent = value(SentenceBLEU(order), generations=hyps, references=refs)
    expected = np.mean(
        [
            BLEU(max_ngram_order=order, effective_order=True).sentence_score(h, [r]).score
            for h, r in zip(hyps, refs)
        ]
    )
    assert sent == pytest.approx(expected, abs=1e-9)


def test_signature_names_the_order_and_tokenizer():
    sig = CorpusBLEU(2, TokenSetting("intl", True)).signature()
    assert sig.startswith("bleu|n:2|tok:intl|lc:yes|smooth:exp|agg:corpus|nrefs:1|sacrebleu:")
    with pytest.raises(ValueError, match="needs a reference"):
        value(CorpusBLEU(1), generations=["a"], references=[None])


# -- ROUGE-L -------------------------------------------------------------------------------------------


def test_rouge_l_by_hand_and_non_ascii():
    # LCS("the cat sat on the mat", "the cat is on the mat") = 5 → P = R = 5/6
    r = RougeL()
    assert value(
        r, generations=["the cat sat on the mat"], references=["the cat is on the mat"]
    ) == pytest.approx(100 * 5 / 6)
    # P = 3/3, R = 3/6 → F = 2PR/(P+R) = 2/3
    assert value(
        r, generations=["the cat sat"], references=["the cat sat on the mat"]
    ) == pytest.approx(100 * 2 / 3)
    assert value(
        RougeL("r"), generations=["the cat sat"], references=["the cat sat on the mat"]
    ) == pytest.approx(50.0)
    # rouge-score's own tokenizer drops non-ASCII text; ours keeps it
    assert value(
        RougeL(tok=TokenSetting("zh")), generations=["我爱喝茶"], references=["我爱喝咖啡"]
    ) == pytest.approx(100 * (2 * 0.75 * 0.6) / (0.75 + 0.6))


# -- Dist ------------------------------------------------------------------------------------------------


def test_distinct_by_hand():
    gens = ["a b a b", "a b c", ""]
    # unigrams: a b a b | a b c → 7 total, 3 distinct; bigrams: ab ba ab | ab bc → 5 total, 3 distinct (never across responses)
    assert value(Distinct(1), generations=gens) == pytest.approx(100 * 3 / 7)
    assert value(Distinct(2), generations=gens) == pytest.approx(100 * 3 / 5)
    # sentence means: (2/4 + 3/3)/2 for n=1; (2/3 + 2/2)/2 for n=2; the empty response has no n-gram
    assert value(Distinct(1, True), generations=gens) == pytest.approx(100 * (0.5 + 1) / 2)
    assert value(Distinct(2, True), generations=gens) == pytest.approx(100 * (2 / 3 + 1) / 2)


def test_corpus_distinct_on_a_subset_is_recomputed_exactly():
    c = Distinct(2).compute(EvalData(generations=["a b c", "a b d", "x y"]))
    assert c.aggregate(np.array([0, 1])) == pytest.approx(100 * 3 / 4)


# -- self-BLEU -------------------------------------------------------------------------------------------


def _nltk_self_bleu(tokens, order=4):
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    sm = SmoothingFunction().method1
    return [
        sentence_bleu(
            [t for j, t in enumerate(tokens) if j != i],
            h,
            weights=(1 / order,) * order,
            smoothing_function=sm,
        )
        for i, h in enumerate(tokens)
    ]


@pytest.mark.parametrize("seed", range(12))
def test_self_bleu_equals_nltk_and_the_quadratic_formula(seed):
    rng = random.Random(seed)
    vocab = "a b c d e f".split()[: rng.randint(2, 6)]
    tokens = [
        [rng.choice(vocab) for _ in range(rng.choice([0, 1, 2, 3, 4, 7, 12]))]
        for _ in range(rng.randint(2, 25))
    ]
    tokens += [list(tokens[0]), list(tokens[1])]  # duplicates count as references
    fast, slow = self_bleu(tokens), self_bleu_reference(tokens)
    assert max(abs(a - b) for a, b in zip(fast, slow)) < 1e-9
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nl = _nltk_self_bleu(tokens)
    assert max(abs(a - b) for a, b in zip(fast, nl)) < 1e-9
    for order in (2, 3):
        assert (
            max(
                abs(a - b)
                for a, b in zip(self_bleu(tokens, order), self_bleu_reference(tokens, order))
            )
            < 1e-9
        )


def test_self_bleu_edge_cases():
    assert self_bleu([["a", "b"]]) == [0.0]  # nobody to compare with
    assert self_bleu([[], ["a"]]) == [0.0, 0.0]  # no unigram match → 0
    same = self_bleu([["x", "y", "z", "w"]] * 3)
    assert same == pytest.approx([1.0, 1.0, 1.0])
    assert higher_is_better("sbleu") is False
    assert value(SelfBLEU(), generations=["a b c d", "a b c d"]) == pytest.approx(100.0)


def test_self_bleu_sampled_variant_is_seeded():
    gens = [" ".join(random.Random(i).choice("abcdefg") for _ in range(8)) for i in range(30)]
    a = value(SelfBLEU(sample=5, seed=1), generations=gens)
    assert (
        a
        == value(SelfBLEU(sample=5, seed=1), generations=gens)
        != value(SelfBLEU(sample=5, seed=2), generations=gens)
    )
    assert "refs:sample5:seed1" in SelfBLEU(sample=5, seed=1).signature()


# -- persona ---------------------------------------------------------------------------------------------


def test_words_drop_punctuation_keep_contractions():
    assert words("I'm here. Really, it's 5 o'clock!") == [
        "i'm",
        "here",
        "really",
        "it's",
        "5",
        "o'clock",
    ]


def test_pco_by_hand():
    personas = [["i like tea .", "i have a dog ."], ["i like dogs ."]]
    idf = persona_idf(personas)
    # distinct sentences: "i like tea", "i have a dog", "i like dogs"; df(i)=3, df(like)=2, df(tea)=1
    assert idf["i"] == pytest.approx(1 / (1 + math.log(4)))
    assert idf["like"] == pytest.approx(1 / (1 + math.log(3)))
    assert idf["tea"] == pytest.approx(1 / (1 + math.log(2)))
    # generation shares {i, like, tea} with s1 and {i} with s2 → max(mean(idf i, like, tea), idf i)
    expected = (idf["i"] + idf["like"] + idf["tea"]) / 3
    assert pco_example("Yes, I like TEA!", personas[0], idf) == pytest.approx(expected)
    assert pco_example("nothing shared", personas[0], idf) == 0.0
    gens = ["Yes, I like TEA!", "nothing shared"]
    v = value(PCo(stopwords="none"), generations=gens, personas=personas)  # the papers' variant
    assert v == pytest.approx(100 * expected / 2)
    # by default the function word "i" does not count
    v = value(PCo(), generations=gens, personas=personas)
    assert v == pytest.approx(100 * (idf["like"] + idf["tea"]) / 2 / 2)


def test_persona_copy():
    persona = ["i work night shifts at a children's hospital .", "i like tea ."]
    assert copies_persona("well, i work night shifts at a clinic", persona)  # 5 words in a row
    assert not copies_persona("i work nights at a hospital", persona)
    assert copies_persona(
        "Honestly I like tea a lot", persona
    )  # a whole sentence shorter than 5 words
    assert value(
        PersonaCopy(), generations=["i like tea", "no"], personas=[persona, persona]
    ) == pytest.approx(50.0)


# -- aggregation ------------------------------------------------------------------------------------------


def test_bootstrap_interval_is_seeded_and_brackets_the_value():
    gens = [" ".join(random.Random(i).choice("abcdef") for _ in range(6)) for i in range(40)]
    refs = [" ".join(random.Random(i + 99).choice("abcdef") for _ in range(6)) for i in range(40)]
    c = CorpusBLEU(1).compute(EvalData(generations=gens, references=refs))
    lo, hi = bootstrap_ci(c, 40, 300, seed=0)
    assert lo < c.aggregate(None) < hi
    assert bootstrap_ci(c, 40, 300, seed=0) == (lo, hi)


def test_evaluate_texts_library_call():
    scores = evaluate_texts(
        ["i love tea"],
        references=["i like tea"],
        personas=[["i love tea ."]],
        metrics=["bleu-1", "p-co", "dist-1"],
    )
    assert set(scores) == {"bleu-1", "p-co", "dist-1"}
    assert scores["bleu-1"].value == pytest.approx(100 * 2 / 3) and scores["dist-1"].value == 100.0
    assert scores["bleu-1"].signature.startswith("bleu|n:1|")
    default = evaluate_texts(["a b", "c d"])
    assert set(default) == {"dist-1", "dist-2", "sbleu"}  # no references, no personas
