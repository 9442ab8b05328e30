"""Every bad value is a clear error (exit 2, the field, the value and what is allowed), found before
work starts, and leaves no output behind. Each case here failed before it was fixed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import DEMO, TINY, dialogue, write_jsonl

SURROGATE = '{"id": "x", "messages": [{"role": "user", "content": "hi \\ud800"}, {"role": "assistant", "content": "yo"}]}\n'


@pytest.fixture
def files(tmp_path: Path, small_data) -> dict[str, Path]:
    good = DEMO.read_text(encoding="utf-8").splitlines()[:4]
    f = {
        "good": tmp_path / "good.jsonl",
        "surrogate": tmp_path / "surrogate.jsonl",
        "nan": tmp_path / "nan.jsonl",
        "nested": tmp_path / "nested.jsonl",
        "dup_ids": tmp_path / "dup.jsonl",
        "dup_yaml": tmp_path / "dup.yaml",
        "gen": tmp_path / "gen.jsonl",
    }
    f["good"].write_text("\n".join(good) + "\n", encoding="utf-8")
    f["hub_cls"] = tmp_path / "hub-classifier"  # a model dir without a personadlg recipe
    f["hub_cls"].mkdir()
    (f["hub_cls"] / "config.json").write_text("{}")
    f["surrogate"].write_text("\n".join(good[:2]) + "\n" + SURROGATE, encoding="utf-8")
    f["nan"].write_text(
        '{"id": "x", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "profile": {"age": NaN}}\n'
    )
    f["nested"].write_text("[" * 100_000 + "\n")
    write_jsonl(f["dup_ids"], [dialogue("a", "hi", "yo"), dialogue("a", "hey", "ho")])
    f["dup_yaml"].write_text(
        "method: finetune\nmodel:\n  from_config: {model_type: gpt2}\n  tokenizer: {train: true}\n"
        "train:\n  lr: 0.1\n  lr: 0.2\n"
    )
    write_jsonl(
        f["gen"],
        [
            {
                "id": "a#1",
                "dialogue_id": "a",
                "context": [],
                "reference": "x",
                "generation": "x",
                "target_attributes": {"attitude": "optimistic"},
            }
        ],
    )
    return f


def _train(small_data, tmp_path, *extra):
    return (
        "train",
        "finetune/tiny",
        *TINY,
        f"data.train={small_data['train']}",
        f"train.output_dir={tmp_path / 'run'}",
        "train.max_steps=1",
        *extra,
    )


# (case id, command builder(files, ckpt, tmp, small_data), expected words in the message)
CASES = [
    ("clean-surrogate-rejected", None, None),  # clean keeps going: tested below
    (
        "convert-surrogate",
        lambda f, c, t, s: ("convert", f["surrogate"], "--out", t / "o.jsonl"),
        ["surrogate.jsonl:3", "lone surrogate"],
    ),
    (
        "split-surrogate",
        lambda f, c, t, s: ("split", f["surrogate"], "--out-dir", t / "parts"),
        ["surrogate.jsonl:3", "lone surrogate"],
    ),
    (
        "stats-surrogate",
        lambda f, c, t, s: ("stats", f["surrogate"]),
        ["surrogate.jsonl:3", "lone surrogate"],
    ),
    (
        "train-surrogate",
        lambda f, c, t, s: _train({"train": f["surrogate"]}, t),
        ["surrogate.jsonl:3", "lone surrogate"],
    ),
    (
        "generate-surrogate",
        lambda f, c, t, s: ("generate", c, "-i", f["surrogate"], "-o", t / "o.jsonl"),
        ["surrogate.jsonl:3", "lone surrogate"],
    ),
    (
        "convert-nested-brackets",
        lambda f, c, t, s: ("convert", f["nested"], "--out", t / "o.jsonl"),
        ["nested.jsonl"],
    ),
    ("stats-nested-brackets", lambda f, c, t, s: ("stats", f["nested"]), ["nested.jsonl"]),
    (
        "convert-nan",
        lambda f, c, t, s: ("convert", f["nan"], "--out", t / "o.jsonl"),
        ["nan.jsonl:1", "NaN"],
    ),
    (
        "stats-duplicate-ids",
        lambda f, c, t, s: ("stats", f["dup_ids"]),
        ["dup.jsonl:2", "field 'id'", "already used"],
    ),
    ("lr-nan", lambda f, c, t, s: _train(s, t, "train.lr=nan"), ["train.lr", "finite", "nan"]),
    ("lr-inf", lambda f, c, t, s: _train(s, t, "train.lr=inf"), ["train.lr", "finite", "inf"]),
    ("seed-1e30", lambda f, c, t, s: _train(s, t, "train.seed=1e30"), ["train.seed", "2**32"]),
    (
        "unknown-model-type",
        lambda f, c, t, s: _train(s, t, "model.from_config={model_type: gtp2}"),
        ["model.from_config.model_type", "'gtp2'", "did you mean 'gpt2'"],
    ),
    (
        "keep-last-0",
        lambda f, c, t, s: _train(s, t, "train.keep_last=0"),
        ["train.keep_last", ">= 1", "got 0"],
    ),
    (
        "duplicate-yaml-keys",
        lambda f, c, t, s: ("validate", f["dup_yaml"]),
        ["dup.yaml:7", "duplicate key 'lr'"],
    ),
    (
        "duplicate-override-keys",
        lambda f, c, t, s: (
            "validate",
            "cvae/tiny",
            "model.ode.weights={attitude: 1, attitude: 2}",
        ),
        ["duplicate key 'attitude'"],
    ),
    (
        "top-k-negative",
        lambda f, c, t, s: ("generate", c, "-i", f["good"], "-o", t / "o.jsonl", "top_k=-5"),
        ["generate.top_k", ">= 0", "-5"],
    ),
    (
        "limit-negative",
        lambda f, c, t, s: ("generate", c, "-i", f["good"], "-o", t / "o.jsonl", "--limit", "-1"),
        ["--limit", ">= 0", "-1"],
    ),
    (
        "max-new-tokens-beyond-positions",
        lambda f, c, t, s: (
            "generate",
            c,
            "-i",
            f["good"],
            "-o",
            t / "o.jsonl",
            "max_new_tokens=500",
        ),
        ["generate.max_new_tokens", "at most 127", "500"],
    ),
    (
        "chat-max-new-tokens",
        lambda f, c, t, s: ("chat", c, "max_new_tokens=500"),
        ["generate.max_new_tokens", "at most 127"],
    ),
    (
        "generate-temperature-nan",
        lambda f, c, t, s: ("generate", c, "-i", f["good"], "-o", t / "o.jsonl", "temperature=nan"),
        ["generate.temperature", "finite"],
    ),
    (
        "refusal-pattern",
        lambda f, c, t, s: ("clean", f["good"], "--out", t / "o.jsonl", "--refusal-pattern", "(["),
        ["--refusal-pattern", "'(['", "regular expression"],
    ),
    (
        "lang-xx",
        lambda f, c, t, s: ("clean", f["good"], "--out", t / "o.jsonl", "--lang", "xx"),
        ["--lang", "'xx'", "en, de"],
    ),
    (
        "eval-classifier-missing-dir",
        lambda f, c, t, s: (
            "eval",
            f["gen"],
            "--classifier",
            "attitude=/not/a/model",
            "--out",
            t / "r.json",
        ),
        ["--classifier attitude", "/not/a/model", "no such model directory"],
    ),
    (
        "eval-classifier-typo",
        lambda f, c, t, s: (
            "eval",
            f["gen"],
            "--classifier",
            f"atitude={f['hub_cls']}",
            "--out",
            t / "r.json",
        ),
        ["atitude", "did you mean 'attitude'", "targeted attributes: attitude"],
    ),
    (
        "eval-classifier-is-not-a-classifier",
        lambda f, c, t, s: (
            "eval",
            f["gen"],
            "--classifier",
            f"attitude={c}",
            "--out",
            t / "r.json",
        ),
        ["--classifier attitude=", "a finetune checkpoint, not a classifier"],
    ),
    (
        "demo-bad-cvae-override",
        lambda f, c, t, s: (
            "demo",
            "--out-dir",
            t / "demo",
            "--cvae-train",
            "model.ode.guidance_scale=nan",
        ),
        ["model.ode.guidance_scale", "finite"],
    ),
    (
        "demo-bad-classifier-override",
        lambda f, c, t, s: ("demo", "--out-dir", t / "demo", "--classifier-train", "train.lrr=1"),
        ["unknown key 'train.lrr'", "did you mean 'lr'"],
    ),
    (
        "demo-bad-train-override",
        lambda f, c, t, s: ("demo", "--out-dir", t / "demo", "--train", "train.keep_last=0"),
        ["train.keep_last"],
    ),
]


@pytest.mark.parametrize("case", [c for c in CASES if c[1] is not None], ids=lambda c: c[0])
def test_bad_value_is_a_clear_error_before_work_starts(
    case, files, trained_tiny, tmp_path, small_data, cli
):
    name, build, words = case
    before = sorted(p.name for p in tmp_path.iterdir())
    r = cli(*build(files, trained_tiny, tmp_path, small_data))
    assert r.code == 2, (name, r.code, r.stderr)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert "Traceback" not in r.stderr and len(errors) == 1, r.stderr
    for w in words:
        assert w in r.stderr, (name, w, r.stderr)
    after = sorted(p.name for p in tmp_path.iterdir())
    assert after == before, f"{name} left {set(after) - set(before)}"


def test_clean_rejects_a_line_with_a_lone_surrogate_and_keeps_the_rest(files, tmp_path, cli):
    r = cli("clean", files["surrogate"], "--out", tmp_path / "c.jsonl", "--json")
    assert r.code == 0, r.stderr
    rep = r.json()
    assert rep["units"] == 3 and rep["clean"] + rep["rejected"] == 3
    rejects = [json.loads(x) for x in (tmp_path / "c.rejects.jsonl").read_text().splitlines()]
    bad = [x for x in rejects if x["source"].endswith(":3")]
    assert bad and "lone surrogate" in bad[0]["reason"]
    (tmp_path / "c.jsonl").read_text(encoding="utf-8")  # valid UTF-8


def test_chat_reports_a_line_of_invalid_utf8_and_goes_on(trained_tiny, monkeypatch, capsys):
    import io

    from personadlg.cli import main

    stdin = io.TextIOWrapper(io.BytesIO(b"hello\n\xff\xfe bad\nhow are you?\n/quit\n"))
    monkeypatch.setattr("sys.stdin", stdin)
    with pytest.raises(SystemExit) as e:
        main(["chat", str(trained_tiny), "max_new_tokens=4"])
    out = capsys.readouterr().out.splitlines()
    assert e.value.code == 0
    assert sum(1 for ln in out if ln.startswith("bot> ")) == 2
    assert any("<stdin>:2: not valid UTF-8: byte 0xff" in ln for ln in out)


def test_demo_checks_every_stage_first_and_train_keys_reach_every_stage(tmp_path, monkeypatch):
    """All seven recipes are built (and checked) before the first stage; `--train train.*` keys
    reach each of them, so `--train train.max_steps=20` is a smoke run of the whole demo."""
    import personadlg.config as config
    import personadlg.demo as demo

    built = []
    real = config.load_recipe

    def recording(recipe, overrides=()):
        cfg = real(recipe, overrides)
        built.append((cfg.method, cfg.train.max_steps))
        return cfg

    class FirstStage(Exception):
        pass

    def first_stage(*a, **k):
        raise FirstStage

    monkeypatch.setattr(config, "load_recipe", recording)
    monkeypatch.setattr(demo, "stats", first_stage)
    with pytest.raises(FirstStage):
        demo.run_demo(tmp_path, train_overrides=("train.max_steps=7", "model.max_length=128"))
    assert built == [("finetune", 7)] + [("classifier", 7)] * 3 + [
        ("cvae", 7),
        ("codebook", 7),
        ("lora", 7),
    ]
