"""The lora method with tiny models: the profile-aware base stage, one adapter per user on the frozen
base (only the adapter trains; seeded per user, so order, resumes and processes do not change it),
adapters/index.json, resume skipping finished users, generation mixing users in one batch (each
row equal to that user alone), the unknown-user fallback, the LRU of loaded adapters, chat."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from personadlg.config import GenerateConfig, load_recipe
from personadlg.errors import ConfigError, UsageError
from personadlg.generation.chat import ChatSession
from personadlg.models.base import as_generations
from personadlg.models.fingerprint import weights_fingerprint
from personadlg.models.lora.adapters import adapter_name, read_index
from personadlg.training.checkpoint import load_checkpoint
from personadlg.training.data import iter_examples
from personadlg.training.trainer import train
from tests.conftest import DEMO, read_jsonl, small_recipe

USERS = ["u-006", "u-007"]
TINY_LORA = [
    "model.from_config={model_type: gpt2, n_layer: 2, n_head: 2, n_embd: 32, n_positions: 128}",
    "model.tokenizer.vocab_size=400",
    "model.max_length=96",
    "model.max_response_tokens=24",
    "model.min_examples=8",
    f"model.users_data={DEMO}",  # the whole demo corpus: ~45 turns per user
    "model.stage_train={base: {max_steps: 150}, users: {epochs: 2, lr: 0.005, early_stopping_patience: 0}}",
    "train.lr=5e-3",
    "train.batch_size=4",
    "train.log_every=1",
    "train.eval_every=6",
    "generate.max_new_tokens=8",
    "generate.batch_size=4",
]


def lora_recipe(small_data: dict[str, Path], out: Path, *extra: str):
    return small_recipe(
        "lora/tiny", small_data, out, "model.users=[u-006,u-007]", *extra, settings=TINY_LORA
    )


def users_recipe(small_data: dict[str, Path], base_run: Path, out: Path, *extra: str):
    """Stage users alone, on the base stage of BASE_RUN."""
    return lora_recipe(
        small_data,
        out,
        "model.stages=[users]",
        f"model.init_from={base_run / 'stages' / '1-base'}",
        *extra,
    )


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, small_data) -> Path:
    out = tmp_path_factory.mktemp("lora") / "run"
    train(lora_recipe(small_data, out))
    return out


@pytest.fixture(scope="module")
def loaded(lora_run):
    return load_checkpoint(lora_run / "final")


def _examples(small_data, users: list[str]):
    cfg = load_recipe("lora/tiny", [f"data.train={small_data['train']}"])
    out = []
    for u in users:
        out += [ex for ex in iter_examples(small_data["train"], cfg.data) if ex.user_id == u][:2]
    return out


FORCED = {"max_new_tokens": 8, "min_new_tokens": 8, "no_repeat_ngram_size": 1}
"""8 distinct tokens: an undertrained tiny model would otherwise repeat one token or end at once."""


def _generate(model, examples, **decoding):
    cfg = GenerateConfig(**{**FORCED, **decoding})
    seeds = list(range(len(examples)))
    return as_generations(
        model.generate(examples, decoding=cfg, seeds=seeds, targets=[None] * len(examples))
    )


def test_the_users_stage_trains_each_adapter_and_leaves_the_base_unchanged(lora_run):
    base = lora_run / "stages" / "1-base" / "final"
    final = lora_run / "final"
    assert (
        load_file(str(final / "model.safetensors")).keys()
        == load_file(str(base / "model.safetensors")).keys()
    )
    for k, v in load_file(str(base / "model.safetensors")).items():
        assert torch.equal(v, load_file(str(final / "model.safetensors"))[k]), k
    index = read_index(lora_run / "adapters")
    assert sorted(index["users"]) == USERS
    assert index["base"]["sha256"] == weights_fingerprint(base) == weights_fingerprint(final)
    for entry in index["users"].values():
        adapter = lora_run / "adapters" / entry["dir"]
        config = json.loads((adapter / "adapter_config.json").read_text())
        assert config["r"] == 12 and config["peft_type"] == "LORA"
        weights = load_file(str(adapter / "adapter_model.safetensors"))
        b = [v for k, v in weights.items() if "lora_B" in k]
        assert b and all(float(v.abs().sum()) > 0 for v in b)  # B starts at zero: it trained
        assert not any("lora" not in k for k in weights)  # the adapter only
        assert (
            entry["steps"] > 0
            and entry["examples"] == entry["train_examples"] + entry["valid_examples"]
        )
        assert entry["valid_loss_after"] <= entry["valid_loss_before"]
        assert entry["profile"]  # the user's profile, for chat
        metrics = read_jsonl(lora_run / "users" / entry["dir"] / "metrics.jsonl")
        assert {m["split"] for m in metrics} == {"train", "valid"}
        assert not (lora_run / "users" / entry["dir"] / "final").exists()


@pytest.mark.parametrize(
    "decoding",
    [{}, {"do_sample": True, "top_k": 20}, {"num_beams": 3}],
    ids=["greedy", "sampling", "beams"],
)
def test_a_mixed_user_batch_equals_each_user_alone(loaded, small_data, decoding):
    _, model = loaded
    examples = _examples(small_data, ["u-006", "u-007", "u-001"])
    mixed = _generate(model, examples, **decoding)
    assert all(mixed.texts)
    assert [r["adapter"] for r in mixed.records] == ["u-006"] * 2 + ["u-007"] * 2 + [None] * 2
    for i, ex in enumerate(examples):
        alone = as_generations(
            model.generate(
                [ex],
                decoding=GenerateConfig(**{**FORCED, **decoding}),
                seeds=[i],
                targets=[None],
            )
        )
        assert alone.texts[0] == mixed.texts[i], (i, ex.user_id)


def test_an_adapter_changes_only_its_users_outputs(loaded, small_data):
    _, model = loaded
    examples = _examples(small_data, ["u-006", "u-007", "u-001"])
    with_adapters = _generate(model, examples).texts
    users = model.users
    try:
        model.users = {}  # every user unknown: the base answers all
        base_only = _generate(model, examples).texts
    finally:
        model.users = users
    assert base_only[4:] == with_adapters[4:]  # u-001 has no adapter
    assert base_only[:4] != with_adapters[:4]


def test_an_unknown_user_gets_the_base_model_and_the_record_says_so(
    lora_run, loaded, small_data, tmp_path
):
    _, model = loaded
    examples = _examples(small_data, ["u-001"])
    gens = _generate(model, examples)
    assert all(r["adapter"] is None for r in gens.records)
    assert "no adapter for user 'u-001'" in gens.records[0]["adapter_fallback"]
    _, base = load_checkpoint(lora_run / "stages" / "1-base" / "final")
    assert _generate(base, examples).texts == gens.texts


def test_at_most_max_loaded_adapters_stay_in_memory(loaded, small_data):
    _, model = loaded
    examples = _examples(small_data, ["u-006", "u-007"])
    expected = _generate(model, examples).texts
    assert _generate(model, examples, max_loaded_adapters=1).texts == expected
    assert len(model.loaded) == 1
    assert _generate(model, examples, max_loaded_adapters=4).texts == expected


def test_save_load_gives_identical_generations(lora_run, loaded, small_data):
    examples = _examples(small_data, ["u-006", "u-007"])
    _, again = load_checkpoint(lora_run / "final")
    assert _generate(again, examples).texts == _generate(loaded[1], examples).texts


def test_generate_writes_the_adapter_into_each_record(cli, lora_run, small_data, tmp_path):
    out = tmp_path / "gen.jsonl"
    r = cli("generate", lora_run / "final", "-i", small_data["train"], "-o", out, "--limit", "12")
    assert r.code == 0, r.stderr
    recs = read_jsonl(out)
    assert len(recs) == 12
    for rec in recs:
        if rec["user_id"] in USERS:
            assert rec["decoding"]["adapter"] == rec["user_id"]
        else:
            assert rec["decoding"]["adapter"] is None and rec["decoding"]["adapter_fallback"]


def test_resume_trains_only_the_missing_users_and_each_adapter_is_order_independent(
    lora_run, small_data, tmp_path
):
    out = tmp_path / "users"
    first = train(users_recipe(small_data, lora_run, out, "model.users=[u-007]"))
    assert first.last_valid["users"] == 1
    entry = read_index(out / "adapters")["users"]["u-007"]
    with pytest.raises(UsageError, match="--resume auto"):
        train(users_recipe(small_data, lora_run, out))
    (out / "users" / "u-006").mkdir(parents=True)  # what a crash in the middle of u-006 leaves
    (out / "users" / "u-006" / "metrics.jsonl").write_text('{"step": 1}\n')
    train(users_recipe(small_data, lora_run, out), resume="auto")
    index = read_index(out / "adapters")
    assert sorted(index["users"]) == USERS
    assert index["users"]["u-007"] == entry  # skipped, not retrained
    for user in USERS:  # the same adapter as the run that trained both users in one go
        a = load_file(str(out / "adapters" / user / "adapter_model.safetensors"))
        b = load_file(str(lora_run / "adapters" / user / "adapter_model.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), user
    assert read_jsonl(out / "users" / "u-006" / "metrics.jsonl")[0]["split"] == "train"


def test_two_processes_split_the_users_and_train_the_same_adapters(lora_run, small_data, tmp_path):
    out = tmp_path / "two"
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "personadlg", "-q"]
    cmd += ["train", "lora/tiny", *TINY_LORA, f"data.train={small_data['train']}"]
    cmd += [f"train.output_dir={out}", "model.stages=[users]", "model.users=[u-006,u-007]"]
    cmd += [f"model.init_from={lora_run / 'stages' / '1-base'}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(read_index(out / "adapters")["users"]) == USERS
    for user in USERS:
        a = load_file(str(out / "adapters" / user / "adapter_model.safetensors"))
        b = load_file(str(lora_run / "adapters" / user / "adapter_model.safetensors"))
        # equal up to float summation order (torchrun runs each process with one thread)
        worst = max(float((a[k] - b[k]).abs().max()) for k in a)
        assert worst < 1e-6, (user, worst)
    assert (out / "final" / "trainer_state.json").is_file()


def test_users_that_do_not_exist_or_a_changed_base_are_refused(lora_run, small_data, tmp_path):
    with pytest.raises(UsageError, match="'u-0066' has no training examples.*did you mean 'u-006'"):
        train(users_recipe(small_data, lora_run, tmp_path / "a", "model.users=[u-0066]"))
    with pytest.raises(ConfigError, match="model.init_from"):
        lora_recipe(small_data, tmp_path / "b", "model.stages=[users]")
    with pytest.raises(ConfigError, match="model.lora.r"):
        lora_recipe(small_data, tmp_path / "c", "model.lora.r=0")
    out = tmp_path / "d"
    shutil.copytree(lora_run / "adapters", out / "adapters")
    other = tmp_path / "other-base"
    shutil.copytree(lora_run / "stages" / "1-base", other)
    weights = load_file(str(other / "final" / "model.safetensors"))
    from safetensors.torch import save_file

    save_file({k: v + 1 for k, v in weights.items()}, str(other / "final" / "model.safetensors"))
    with pytest.raises(UsageError, match="adapters of two bases"):
        train(
            lora_recipe(small_data, out, "model.stages=[users]", f"model.init_from={other}"),
            resume="auto",
        )


def test_adapter_names_are_safe_and_distinct():
    assert adapter_name("u-007") == "u-007"
    odd = ["john.doe", "john_doe", "a/b", "../x", "__base__", "", "é" * 3, "x" * 100]
    names = [adapter_name(u) for u in odd]
    assert names[1] == "john_doe" and len(set(names)) == len(names)
    assert all(n and "." not in n and "/" not in n and n != "__base__" for n in names)


def test_ls_adapters_says_what_a_directory_is_when_it_is_not_a_lora_run(cli, trained_tiny):
    """Not `no runs/adapters/index.json` for `runs/finetune-tiny`: what DIR is, what was expected."""
    for path in (trained_tiny.parent, trained_tiny):
        r = cli("ls", "adapters", path)
        flat = " ".join(r.stderr.split())
        assert r.code == 2 and "of method 'finetune', not lora" in flat, r.stderr
        assert "expects a lora run dir" in flat and "Traceback" not in r.stderr


def test_ls_adapters_and_train_users_flags(cli, lora_run, small_data, tmp_path):
    r = cli("ls", "adapters", lora_run)
    assert r.code == 0 and "u-006" in r.stdout and "u-007" in r.stdout
    r = cli("ls", "adapters", lora_run, "--json")
    assert sorted(json.loads(r.stdout)["users"]) == USERS
    r = cli("ls", "adapters", tmp_path)
    assert (
        r.code == 2 and "holds no personadlg run" in r.stderr and "adapters/index.json" in r.stderr
    )
    r = cli("ls", "adapters", tmp_path / "nowhere")
    assert r.code == 2 and "no such file or directory" in r.stderr
    r = cli("train", "finetune/tiny", "--users", "u-1")
    assert r.code == 2 and "--users applies to lora recipes" in r.stderr
    ids = tmp_path / "ids.txt"
    ids.write_text("# users to adapt\nu-007\n")
    out = tmp_path / "flags"
    r = cli(
        "train",
        "lora/tiny",
        *TINY_LORA,
        f"data.train={small_data['train']}",
        f"train.output_dir={out}",
        "model.stages=[users]",
        f"model.init_from={lora_run / 'stages' / '1-base'}",
        "--users-file",
        ids,
    )
    assert r.code == 0, r.stderr
    assert sorted(read_index(out / "adapters")["users"]) == ["u-007"]


def test_chat_as_a_user_uses_their_adapter_and_profile(loaded):
    _, model = loaded
    session = ChatSession(
        model=model,
        decoding=GenerateConfig(max_new_tokens=6),
        method="lora",
        supports=("profile", "user"),
    )
    note = session.command("/user u-006")
    assert "adapter u-006" in note and session.profile == model.known_user("u-006")["profile"]
    session.reply("hello there")
    assert session.last_record["adapter"] == "u-006"
    assert "the base model answers" in session.command("/user nobody")
    session.reply("and you?")
    assert session.last_record["adapter"] is None
    assert session.command("/profile age=20s") == "(profile: age=20s)"
    assert session.profile == {"age": "20s"}


@pytest.mark.parametrize("num_beams", [1, 3])
def test_an_encoder_decoder_base_serves_mixed_user_batches(small_data, tmp_path, num_beams):
    out = tmp_path / f"t5-{num_beams}"
    cfg = lora_recipe(
        small_data,
        out,
        "model.from_config={model_type: t5, d_model: 32, d_kv: 16, d_ff: 64, num_layers: 2, num_heads: 2}",
        "model.users=[u-006]",
        "model.stage_train={base: {max_steps: 20}, users: {epochs: 2, lr: 0.005}}",
    )
    train(cfg)
    index = read_index(out / "adapters")
    assert list(index["users"]) == ["u-006"]
    adapter = json.loads((out / "adapters" / "u-006" / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_2_SEQ_LM" and set(adapter["target_modules"]) == {"q", "v"}
    _, model = load_checkpoint(out / "final")
    examples = _examples(small_data, ["u-006", "u-001"])
    mixed = _generate(model, examples, num_beams=num_beams)
    assert [r["adapter"] for r in mixed.records] == ["u-006", "u-006", None, None]
    for i, ex in enumerate(examples):
        alone = as_generations(
            model.generate(
                [ex],
                decoding=GenerateConfig(**{**FORCED, "num_beams": num_beams}),
                seeds=[i],
                targets=[None],
            )
        )
        assert alone.texts[0] == mixed.texts[i], (i, ex.user_id)


def test_validation_holds_out_turns_or_whole_last_dialogues():
    from functools import partial

    from personadlg.models.lora.users import validation_split as split
    from personadlg.training.stage_tools import TrainerTools

    validation_split = partial(split, tools=TrainerTools(acc=None))
    ids = ["a"] * 4 + ["b"] * 3 + ["c"] * 3
    keep, held = validation_split(ids, "dialogue", 0.2, seed=0)
    assert [ids[i] for i in held] == ["c"] * 3 and keep == list(range(7))
    keep, held = validation_split(ids, "dialogue", 0.5, seed=0)
    assert {ids[i] for i in held} == {"b", "c"} and {ids[i] for i in keep} == {"a"}
    keep, held = validation_split(["a"] * 5, "dialogue", 0.2, seed=0)  # one dialogue: by turns
    assert len(held) == 1 and len(keep) == 4
    keep, held = validation_split(ids, "turns", 0.2, seed=0)
    assert len(held) == 2 and sorted(keep + held) == list(range(10))


def test_an_output_made_with_other_adapters_is_not_appended_to(cli, lora_run, small_data, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(lora_run, run)
    out = tmp_path / "gen.jsonl"
    args = ("generate", run / "final", "-i", small_data["train"], "-o", out)
    assert cli(*args, "--limit", "4").code == 0
    assert cli(*args, "--limit", "8").code == 0  # same adapters: appends
    index = json.loads((run / "adapters" / "index.json").read_text())
    index["users"]["u-006"]["steps"] += 1  # what training the user again leaves
    (run / "adapters" / "index.json").write_text(json.dumps(index))
    r = cli(*args, "--limit", "12")
    assert r.code == 2 and "served_sha256" in r.stderr
    assert len(read_jsonl(out)) == 8


def test_generation_may_change_only_the_adapters_directory(cli, lora_run, small_data, tmp_path):
    out = tmp_path / "gen.jsonl"
    r = cli(
        "generate", lora_run / "final", "-i", small_data["train"], "-o", out, "model.max_length=64"
    )
    assert r.code == 2 and "fixed by training: max_length" in r.stderr
    r = cli(
        "generate",
        lora_run / "final",
        "-i",
        small_data["train"],
        "-o",
        out,
        f"model.adapters={tmp_path}",
    )
    assert r.code == 2 and "model.adapters" in r.stderr
    r = cli(
        "generate",
        lora_run / "final",
        "-i",
        small_data["train"],
        "-o",
        out,
        "--limit",
        "4",
        f"model.adapters={lora_run / 'adapters'}",
    )
    assert r.code == 0, r.stderr
