from __future__ import annotations

import pytest

from personadlg.errors import NotAvailableError, UsageError
from personadlg.registry import FILTERS, FORMATS, METHODS, METRICS, Registry


def test_registries_list_everything_by_name():
    assert METHODS.names() == ["finetune", "cvae", "codebook", "lora", "api", "classifier"]
    assert set(FORMATS.names()) == {
        "jsonl",
        "miracle",
        "morpheus",
        "parlai",
        "rcdg",
        "clv",
        "sharegpt",
        "openai",
        "csv",
        "tsv",
        "parquet",
    }
    assert {
        "bleu-1",
        "bleu-2",
        "rouge-l",
        "dist-1",
        "dist-2",
        "sbleu",
        "p-co",
        "p-co-lift",
        "persona-cos-lift",
        "nli-prob",
        "personalization-acc",
        "ppl",
        "emb-sim",
    } <= set(METRICS.names())
    assert METRICS.entry("sbleu").meta["higher_is_better"] is False
    assert METRICS.entry("bleu-1").meta["higher_is_better"] is True
    assert "near_dup" in FILTERS and FILTERS.entry("language").meta["default"] is False


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UsageError, match=r"unknown method 'cave' \(did you mean 'cvae'\?\)"):
        METHODS.get("cave")
    with pytest.raises(UsageError, match="did you mean 'parlai'"):
        FORMATS.get("parlia")


def test_lazy_entries_resolve_and_are_cached():
    fmt = FORMATS.get("parlai")
    assert fmt.name == "parlai"
    assert FORMATS.get("parlai") is fmt
    assert callable(FILTERS.get("refusal"))


def test_missing_module_is_reported_as_not_available():
    reg: Registry[object] = Registry("thing")
    reg.register("ghost", "personadlg.no_such_module:THING")
    assert not reg.entry("ghost").available
    with pytest.raises(NotAvailableError, match="not available"):
        reg.get("ghost")


def test_target_must_declare_its_own_name():
    reg: Registry[object] = Registry("format")
    reg.register("parlai2", "personadlg.data.formats.parlai:FORMAT")
    with pytest.raises(ValueError, match="resolves to an object named 'parlai'"):
        reg.get("parlai2")


def test_bad_registration():
    reg: Registry[object] = Registry("x")
    reg.register("a", "m:a")
    with pytest.raises(ValueError):
        reg.register("a", "m:a")
    with pytest.raises(ValueError):
        reg.register("b", "no-colon")


def test_each_metric_is_built_by_its_registered_factory():
    from personadlg.metrics.catalog import make_metric
    from personadlg.metrics.options import EvalOptions

    opts = EvalOptions()
    for entry in METRICS.entries():
        assert entry.module == "personadlg.metrics.catalog", entry
        assert isinstance(entry.meta["higher_is_better"], bool), entry
        try:
            metric = make_metric(entry.name, opts)
        except UsageError as err:  # model-based metrics need their model
            assert f"metric {entry.name} needs --" in str(err)
            continue
        assert metric.name == entry.name
    assert make_metric("bleu-3-sent", opts).order == 3
    assert make_metric("dist-2-sent", opts).sentence is True
