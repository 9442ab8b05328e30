"""Method classifier: attribute, text and NLI tasks; standard HF output; accuracy and macro-F1."""

from __future__ import annotations

import json

import pytest
import torch

from personadlg.errors import NotAvailableError, UsageError
from personadlg.models.classifier.data import Item, read_items
from personadlg.models.classifier.model import confusion_metrics
from personadlg.training.trainer import train
from tests.conftest import shared, write_jsonl

TINY = [
    "model.from_config={model_type: bert, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64, max_position_embeddings: 128}",
    "model.tokenizer.vocab_size=400",
    "model.max_length=64",
    "train.batch_size=8",
    "train.log_every=5",
]


def recipe(name, out, *extra):
    from personadlg.config import load_recipe

    return load_recipe(name, [*TINY, f"train.output_dir={out}", *extra])


def test_confusion_metrics_by_hand():
    cm = torch.tensor([[3.0, 1.0], [2.0, 4.0]])  # rows gold
    m = confusion_metrics(cm)
    p0, r0 = 3 / 5, 3 / 4
    p1, r1 = 4 / 5, 4 / 6
    f0, f1 = 2 * p0 * r0 / (p0 + r0), 2 * p1 * r1 / (p1 + r1)
    assert m["accuracy"] == pytest.approx(70.0) and m["macro_f1"] == pytest.approx(
        100 * (f0 + f1) / 2
    )


def test_attribute_classifier_is_a_standard_hf_directory(tmp_path, small_data):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    result = train(
        recipe(
            "classifier/attribute-tiny",
            tmp_path / "run",
            f"data.train={small_data['train']}",
            "data.attribute=attitude",
            "train.max_steps=6",
            "data.valid_fraction=0.2",
        )
    )
    clf = AutoModelForSequenceClassification.from_pretrained(result.final_dir)
    assert clf.config.id2label == {0: "pessimistic", 1: "optimistic"}
    tok = AutoTokenizer.from_pretrained(result.final_dir)
    ids = tok("hello there")["input_ids"]
    assert (
        ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    )  # the trained tokenizer adds BERT's specials itself
    res = json.loads((result.final_dir / "eval_results.json").read_text())
    assert 0 <= res["accuracy"] <= 100 and 0 <= res["macro_f1"] <= 100 and "ppl" not in res
    from personadlg.training.checkpoint import load_checkpoint

    _, model = load_checkpoint(result.final_dir)
    with pytest.raises(NotAvailableError, match="does not generate"):
        model.generate([], decoding=None, seeds=[], targets=[])


def test_classifier_learns_a_separable_task(tmp_path):
    lines = {
        "0": [f"the sky is grey and cold number {i}" for i in range(60)],
        "1": [f"sunshine warm bright happy day {i}" for i in range(60)],
    }
    for k, v in lines.items():
        (tmp_path / f"mood.train.{k}").write_text("\n".join(v) + "\n")
    result = train(
        recipe(
            "classifier/text-tiny",
            tmp_path / "run",
            f"data.train={tmp_path}/mood.train.*",
            "model.labels=[sad, happy]",
            "train.max_steps=40",
            "train.lr=3e-3",
            "data.valid_fraction=0.25",
            "train.epochs=0",
        )
    )
    assert result.last_valid["accuracy"] == pytest.approx(100.0) and result.last_valid[
        "macro_f1"
    ] == pytest.approx(100.0)


def test_readers(tmp_path):
    from personadlg.config import load_recipe

    cfg = load_recipe("classifier/text-tiny", ["model.labels=[neg, pos]"])
    p = write_jsonl(
        tmp_path / "t.jsonl", [{"text": "great", "label": 1}, {"text": "awful", "labels": "neg"}]
    )
    assert list(read_items(p, cfg)) == [Item("great", "pos"), Item("awful", "neg")]
    bad = write_jsonl(tmp_path / "b.jsonl", [{"text": 3, "label": 1}])
    from personadlg.errors import DataError

    with pytest.raises(DataError, match=r"b.jsonl:1: field 'text': expected a string, got 3"):
        list(read_items(bad, cfg))
    nli = load_recipe("classifier/nli-tiny")
    rcdg = tmp_path / "nli.txt"
    rcdg.write_text(
        "i love dogs .</s>i have a dog .</s>positive\ni hate dogs .</s>i have a dog .</s>negative\n"
    )
    assert list(read_items(rcdg, nli)) == [
        Item("i have a dog .", "entailment", "i love dogs ."),
        Item("i have a dog .", "contradiction", "i hate dogs ."),
    ]
    js = write_jsonl(
        tmp_path / "n.jsonl",
        [
            {"premise": "p", "hypothesis": "h", "label": "neutral"},
            {"input": ["a", "b"], "output": "c", "labels": 1},
        ],
    )
    assert list(read_items(js, nli)) == [Item("p", "neutral", "h"), Item("a\nb", "entailment", "c")]
    rcdg.write_text("no separators here\n")
    with pytest.raises(DataError, match="nli.txt:1: expected 'utterance</s>persona sentence</s>"):
        list(read_items(rcdg, nli))


def test_attribute_task_needs_the_attribute(tmp_path, small_data):
    with pytest.raises(UsageError, match="needs data.attribute"):
        train(
            recipe(
                "classifier/attribute-tiny",
                tmp_path / "run",
                f"data.train={small_data['train']}",
                "data.attribute=null",
                "train.max_steps=1",
            )
        )
    with pytest.raises(UsageError, match="no dialogue is labelled with data.attribute=tone"):
        train(
            recipe(
                "classifier/attribute-tiny",
                tmp_path / "run2",
                f"data.train={small_data['train']}",
                "data.attribute=tone",
                "train.max_steps=1",
            )
        )


def test_rcdg_nli_trains(tmp_path):
    src = shared("rcdg", "nli-valid.txt")
    lines = src.read_text().splitlines()[:400]
    (tmp_path / "nli.txt").write_text("\n".join(lines) + "\n")
    result = train(
        recipe(
            "classifier/nli-tiny",
            tmp_path / "run",
            f"data.train={tmp_path / 'nli.txt'}",
            "data.valid=null",
            "data.valid_fraction=0.2",
            "train.max_steps=5",
        )
    )
    from transformers import AutoConfig

    assert set(AutoConfig.from_pretrained(result.final_dir).id2label.values()) == {
        "entailment",
        "neutral",
        "contradiction",
    }
