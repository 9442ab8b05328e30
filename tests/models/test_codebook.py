"""The codebook method (MORPHEUS) with tiny models: the three stages chained and resumed, the VQ
gradients, the prefix, code prediction diagnostics, checkpoints (save → load gives identical
generations, frozen-decoder checkpoints hold only what trained), and the generation modes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from personadlg.errors import UsageError
from personadlg.training.checkpoint import load_checkpoint
from personadlg.training.trainer import train
from tests.conftest import read_jsonl, read_metrics, small_recipe

TINY_CODEBOOK = [
    "model.decoder_from_config={model_type: gpt2, n_layer: 2, n_head: 2, n_embd: 32, n_positions: 128}",
    "model.tokenizer.vocab_size=400",
    "model.n_codes=8",
    "model.slots=3",
    "model.max_length=96",
    "model.max_response_tokens=24",
    "model.stage_train={role: {max_steps: 4}, joint: {max_steps: 6}}",
    "train.batch_size=4",
    "train.log_every=1",
    "train.eval_every=3",
    "train.save_every=3",
    "train.lr=3e-3",
    "generate.max_new_tokens=8",
    "generate.batch_size=4",
]


def codebook_recipe(small_data: dict[str, Path], out: Path, *extra: str):
    return small_recipe("codebook/tiny", small_data, out, *extra, settings=TINY_CODEBOOK)


@pytest.fixture(scope="module")
def codebook_run(tmp_path_factory, small_data):
    out = tmp_path_factory.mktemp("codebook") / "run"
    return train(codebook_recipe(small_data, out))


def _state(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = dict(load_file(str(directory / "codebook.safetensors")))
    dec = directory / "decoder" / "model.safetensors"
    if dec.is_file():
        out.update({f"decoder.{k}": v for k, v in load_file(str(dec)).items()})
    return out


def test_three_stages_each_with_its_own_checkpoint_chained_by_init_from(codebook_run):
    out = codebook_run.output_dir
    role, init = out / "stages" / "1-role", out / "stages" / "2-init"
    assert [s.output_dir for s in codebook_run.stages] == [role, init, out]
    assert [s.steps for s in codebook_run.stages] == [4, 0, 6]
    cfgs = [yaml.safe_load((d / "final" / "config.yaml").read_text()) for d in (role, init, out)]
    assert [c["model"]["stage"] for c in cfgs] == ["role", "init", "joint"]
    assert cfgs[0]["model"]["init_from"] is None
    assert cfgs[1]["lineage"]["init_from"] == str(role / "final")
    assert cfgs[2]["lineage"]["init_from"] == str(init / "final")
    assert cfgs[2]["lineage"]["weights_sha256"].startswith("sha256:")
    r, i = _state(role / "final"), _state(init / "final")
    # the init stage changed only the codebook (its EM ran on role-aware encodings)
    assert not torch.equal(r["codebook"], i["codebook"])
    for k in r:
        if k != "codebook":
            assert torch.equal(r[k], i[k]), k
    report = json.loads((init / "init_report.json").read_text())
    assert report["method"] == "em" and report["codes"] == 8 and report["segments"] > 8
    assert report["used"] >= 2


def test_joint_training_logs_every_term_and_the_codebook_diagnostics(codebook_run):
    records = read_metrics(codebook_run.output_dir)
    steps = [r for r in records if r["split"] == "train"]
    assert len(steps) == 6
    for r in steps:
        assert {"loss", "lm", "vq", "code", "contrastive"} <= set(r)
        assert r["loss"] == pytest.approx(
            r["lm"] + r["vq"] + r["code"] + r["contrastive"], rel=1e-4
        )
    valid = [r for r in records if r["split"] == "valid"]
    assert [r["step"] for r in valid] == [3, 6]
    for r in valid:
        assert {"ppl", "codes_used", "dead_codes", "usage_ppl", "vq_dist", "code_acc"} <= set(r)
        assert {"code_acc_majority", "code_acc_slot0", "code_acc_slot2"} <= set(r)
        assert r["codes_used"] + r["dead_codes"] == 8
        assert 1.0 <= r["usage_ppl"] <= 8.0
    role = read_metrics(codebook_run.output_dir / "stages" / "1-role")
    assert {r["split"] for r in role} == {"train", "valid"}
    assert all("vq" not in r for r in role)  # stage 1: the response NLL only


def test_resume_auto_skips_finished_stages_and_reproduces_the_interrupted_one(
    codebook_run, small_data, tmp_path
):
    src = codebook_run.output_dir
    copy = tmp_path / "run"
    train(codebook_recipe(small_data, copy))
    # as if killed after step 3 of the joint stage: its step-3 checkpoint is the newest
    shutil.rmtree(copy / "final")
    for d in copy.glob("step-*"):
        if d.name != "step-000003":
            shutil.rmtree(d)
    result = train(codebook_recipe(small_data, copy), resume="auto")
    assert result.steps == 6
    assert [s.steps for s in result.stages] == [4, 0, 6]
    ours, theirs = _state(copy / "final"), _state(src / "final")
    for k in theirs:
        assert torch.equal(ours[k], theirs[k]), k
    with pytest.raises(UsageError, match="already holds checkpoints"):
        train(codebook_recipe(small_data, copy))
    with pytest.raises(UsageError, match="stage role finished in .*train.max_steps: 4 -> 5"):
        train(
            codebook_recipe(
                small_data, copy, "model.stage_train={role: {max_steps: 5}, joint: {max_steps: 6}}"
            ),
            resume="auto",
        )
    # a change to the last stage alone does not trip the earlier ones
    with pytest.raises(UsageError, match="stage joint finished in .*train.lr: 0.003 -> 0.004"):
        train(
            codebook_recipe(
                small_data,
                copy,
                "model.stage_train={role: {max_steps: 4}, joint: {max_steps: 6, lr: 0.004}}",
            ),
            resume="auto",
        )
    again = train(codebook_recipe(small_data, copy), resume="auto")  # all done: nothing to train
    assert again.final_dir == copy / "final" and [s.steps for s in again.stages] == [4, 0, 6]


def test_save_load_gives_identical_generations_and_records_the_codes(
    codebook_run, small_data, tmp_path
):
    from personadlg.config import GenerateConfig
    from personadlg.generation.generate import generate_file
    from personadlg.training.checkpoint import load_model

    ck = codebook_run.final_dir
    cfg, model = load_checkpoint(ck)
    model.save(tmp_path / "again")
    again = load_model(tmp_path / "again", cfg)
    exs = _examples(small_data["test"], 6)
    for dec in (GenerateConfig(max_new_tokens=8), GenerateConfig(max_new_tokens=8, do_sample=True)):
        a = model.generate(exs, decoding=dec, seeds=list(range(6)), targets=[None] * 6)
        b = again.generate(exs, decoding=dec, seeds=list(range(6)), targets=[None] * 6)
        assert a.texts == b.texts and a.records == b.records
    out = tmp_path / "gen.jsonl"
    generate_file(ck, small_data["test"], out, limit=6, loaded=(cfg, model))
    for r in read_jsonl(out):
        assert len(r["decoding"]["codes"]) == 3
        assert all(0 <= c < 8 for c in r["decoding"]["codes"])
        assert r["decoding"]["codes"] == sorted(r["decoding"]["codes"])
        assert r["decoding"]["codebook"]["persona_mode"] == "predicted"


def _examples(path: Path, n: int):
    from personadlg.generation.generate import load_examples

    return list(load_examples(path, "all"))[:n]


def test_predicted_oracle_and_forced_codes(codebook_run, small_data):
    from personadlg.config import GenerateConfig
    from personadlg.models.codebook.config import CodebookConfig

    cfg, model = load_checkpoint(codebook_run.final_dir)
    exs = _examples(small_data["test"], 4)
    dec = GenerateConfig(max_new_tokens=6)
    g = model.generate(exs, decoding=dec, seeds=[0] * 4, targets=[None] * 4)
    # predicted = argmax of the predictor on the prefix-free history state
    ids, mask = model._prompts(exs, 6)
    state = model.net.history_state(ids, mask, torch.full((4,), ids.shape[1] - 1))
    expected = model.net.predict(state).argmax(-1).sort(-1).values
    assert [r["codes"] for r in g.records] == expected.tolist()
    # oracle = the persona's segments snapped to their nearest codes
    oracle = CodebookConfig(**{**cfg.model.__dict__, "persona_mode": "oracle"})
    model.configure(oracle)
    go = model.generate(exs, decoding=dec, seeds=[0] * 4, targets=[None] * 4)
    assert go.shared["codebook"]["persona_mode"] == "oracle"
    seg_ids, seg_len = _nested([model.segment_ids(ex.persona) for ex in exs], model)
    with torch.no_grad():
        z = model.net.encode_segments(seg_ids, seg_len)
    assert [r["codes"] for r in go.records] == model.net.quantize(z).tolist()
    # forced codes condition every example the same way, and codes change the output
    forced = [CodebookConfig(**{**cfg.model.__dict__, "codes": [c] * 3}) for c in range(8)]
    texts = set()
    for f in forced:
        model.configure(f)
        out = model.generate(exs[:1], decoding=dec, seeds=[0], targets=[None])
        assert out.records == [{"codes": f.codes}]
        texts.add(out.texts[0])
    with pytest.raises(UsageError, match="fixed by training"):
        model.configure(CodebookConfig(**{**cfg.model.__dict__, "n_codes": 9}))


def _nested(segments, model):
    from personadlg.models.collate import pad_nested

    return pad_nested(segments, model.encoder_tokenizer.pad_token_id or 0)


def test_the_codes_change_the_logits(codebook_run, small_data):
    _, model = load_checkpoint(codebook_run.final_dir)
    net = model.net.eval()
    feats = [model.encode(ex) for ex in _examples(small_data["test"], 2)]
    batch = model.collate([f for f in feats if f])
    from personadlg.models.prefix import cache_kwargs, teacher_forced_inputs

    def logits(codes: list[int]) -> torch.Tensor:
        vec = net.codebook[torch.tensor([codes] * batch["input_ids"].shape[0])].float()
        cache = net.prefix(vec)
        inputs = teacher_forced_inputs(batch["input_ids"], batch["attention_mask"], 3)
        with torch.no_grad():
            return net.decoder(**inputs, **cache_kwargs(net.decoder, cache)).logits

    a, b = logits([0, 1, 2]), logits([5, 6, 7])
    assert (a - b).abs().max() > 1e-4
    assert torch.equal(logits([0, 1, 2]), a)


# -- gradients of the loss terms -------------------------------------------------------------------


@pytest.fixture(scope="module")
def separate_encoder(tmp_path_factory, small_data, tiny_gpt2_dir, tiny_bert_dir):
    """A codebook model on a pretrained tiny GPT-2 with a separate BERT persona encoder (built,
    not trained), and one batch."""
    from personadlg.config import load_recipe
    from personadlg.models.base import BuildContext
    from personadlg.models.codebook.model import build
    from personadlg.training.data import dialogue_examples

    cfg = load_recipe(
        "codebook/tiny",
        [
            "model.decoder_from_config={}",
            f"model.decoder={tiny_gpt2_dir}",
            "model.tokenizer.train=false",
            f"model.encoder={tiny_bert_dir}",
            "model.freeze_encoder=false",
            "model.n_codes=8",
            "model.slots=3",
            "model.stage=joint",
            f"data.train={small_data['train']}",
        ],
    )
    ctx = BuildContext(
        train_examples=lambda: dialogue_examples(small_data["train"], cfg),
        work_dir=tmp_path_factory.mktemp("sep"),
    )
    model = build(cfg, ctx)
    exs = list(dialogue_examples(small_data["train"], cfg))[:4]
    batch = model.collate([model.encode(ex) for ex in exs])
    return model, batch


def _grads(model, batch, **weights) -> dict[str, float]:
    net = model.net
    for k, v in weights.items():
        setattr(net.cfg, k, v)
    net.train()
    net.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    terms = net(**batch)
    terms["loss"].backward()

    def norm(params) -> float:
        return float(sum(p.grad.abs().sum() for p in params if p.grad is not None))

    return {
        "encoder": norm(net.encoder.parameters()),
        "codebook": norm([net.codebook]),
        "decoder": norm(net.decoder.parameters()),
        "predictor": norm(net.predictor.parameters()),
    }


ZERO = {"lm_weight": 0.0, "vq_weight": 0.0, "code_weight": 0.0, "contrastive_weight": 0.0}


@pytest.mark.parametrize(
    ("mode", "encoder", "codebook"),
    [("encoder", True, False), ("codebook", False, True), ("reverse", False, True)],
)
def test_lm_gradient_goes_where_the_straight_through_mode_says(
    separate_encoder, mode, encoder, codebook
):
    model, batch = separate_encoder
    model.net.cfg.straight_through = mode
    g = _grads(model, batch, **{**ZERO, "lm_weight": 1.0})
    assert (g["encoder"] > 0) is encoder
    assert (g["codebook"] > 0) is codebook
    assert g["decoder"] > 0 and g["predictor"] == 0


def test_vq_and_contrastive_gradients(separate_encoder):
    model, batch = separate_encoder
    model.net.cfg.straight_through = "encoder"
    g = _grads(model, batch, **{**ZERO, "vq_weight": 1.0}, beta=0.0)
    assert g["codebook"] > 0 and g["encoder"] == 0  # no commitment: only the codes move
    g = _grads(model, batch, **{**ZERO, "vq_weight": 1.0}, beta=0.25)
    assert g["codebook"] > 0 and g["encoder"] > 0
    g = _grads(model, batch, **{**ZERO, "contrastive_weight": 1.0})
    assert g["codebook"] > 0 and g["encoder"] > 0 and g["decoder"] == 0
    g = _grads(model, batch, **{**ZERO, "code_weight": 1.0})
    assert g["predictor"] > 0 and g["decoder"] == 0 and g["encoder"] == 0  # predictor_grad off
    model.net.cfg.predictor_grad = True
    g = _grads(model, batch, **{**ZERO, "code_weight": 1.0})
    model.net.cfg.predictor_grad = False
    assert g["predictor"] > 0 and g["decoder"] > 0


def test_frozen_decoder_checkpoint_holds_only_what_trained(small_data, tiny_gpt2_dir, tmp_path):
    out = tmp_path / "run"
    result = train(
        codebook_recipe(
            small_data,
            out,
            "model.decoder_from_config={}",
            f"model.decoder={tiny_gpt2_dir}",
            "model.tokenizer.train=false",
            "model.freeze_decoder=true",
            "model.stages=[init,joint]",
            "model.stage_train={joint: {max_steps: 3}}",
        )
    )
    final = result.final_dir
    assert not (final / "decoder").exists()
    base = json.loads((final / "base.json").read_text())
    assert base["ref"] == str(tiny_gpt2_dir) and base["sha256"].startswith("sha256:")
    state = _state(final)
    assert "codebook" in state and not any(k.startswith("decoder.") for k in state)
    _, model = load_checkpoint(final)
    from safetensors.torch import load_file

    base_weights = load_file(str(tiny_gpt2_dir / "model.safetensors"))
    for k, v in model.net.decoder.state_dict().items():
        if k in base_weights:
            assert torch.equal(v, base_weights[k]), k  # the decoder did not train
    # another base with the same name is refused
    other = tmp_path / "other-base"
    shutil.copytree(tiny_gpt2_dir, other)
    cfg = yaml.safe_load((final / "config.yaml").read_text())
    w = load_file(str(other / "model.safetensors"))
    from safetensors.torch import save_file

    w = {k: v + 0.01 for k, v in w.items()}
    save_file(w, str(other / "model.safetensors"), metadata={"format": "pt"})
    cfg["model"]["decoder"] = str(other)
    (final / "config.yaml").write_text(yaml.safe_dump(cfg))
    (final / "base.json").write_text(
        json.dumps({**base, "parts": {"decoder": {**base["parts"]["decoder"], "ref": str(other)}}})
    )
    with pytest.raises(UsageError, match="other weights"):
        load_checkpoint(final)


def test_the_encoder_is_frozen_from_stage_init_on(codebook_run, separate_encoder):
    _, model = load_checkpoint(codebook_run.final_dir)
    enc = model.net.encoder
    assert enc is not None and not any(p.requires_grad for p in enc.parameters())
    assert (codebook_run.final_dir / "encoder" / "model.safetensors").is_file()
    # the joint stage's persona encoder is the decoder as it left stage 1, not as it is now
    from safetensors.torch import load_file

    role = load_file(str(codebook_run.stages[0].final_dir / "decoder" / "model.safetensors"))
    frozen = {k: v for k, v in enc.state_dict().items()}
    for k, v in frozen.items():
        assert torch.equal(v, role[f"transformer.{k}"]), k
    assert any(
        not torch.equal(v, role[f"transformer.{k}"])
        for k, v in model.net.decoder.transformer.state_dict().items()
        if f"transformer.{k}" in role
    )


def test_dead_codes_are_reseeded(separate_encoder):
    model, batch = separate_encoder
    net = model.net
    net.cfg.dead_code_steps = 2
    net.train()
    with torch.no_grad():
        net.step = 0
        net(**batch)
    used = set(
        net.quantize(net.encode_segments(batch["seg_ids"], batch["seg_len"])).flatten().tolist()
    )
    before = net.codebook.detach().clone()
    n = net.restart_dead_codes(5)
    net.cfg.dead_code_steps = 0
    assert n == 8  # last use at step 0, 5 steps ago: every code is re-seeded
    changed = (net.codebook.detach() != before).any(-1)
    assert int(changed.sum()) == 8
    assert used  # some codes were in use


def test_config_errors_are_clear():
    from personadlg.config import load_recipe
    from personadlg.errors import ConfigError

    for over, msg in [
        ("model.stages=[joint,role]", "in the order"),
        ("model.stages=[roles]", "expected role, init or joint"),
        ("model.codes=[1,2]", "expected 4 code ids"),
        ("model.codes=[1,2,3,99]", "ids in 0..31"),
        ("model.n_codes=1", "n_codes must be >= 2"),
        ("model.freeze_decoder=true", "freeze_decoder needs a pretrained"),
        ("model.stage_train={warmup: {epochs: 1}}", "expected a stage"),
    ]:
        with pytest.raises((ConfigError, UsageError), match=msg):
            load_recipe("codebook/tiny", [over])


def test_generate_cli_flags(codebook_run, small_data, tmp_path, cli):
    out = tmp_path / "gen.jsonl"
    r = cli(
        "generate",
        codebook_run.final_dir,
        "-i",
        small_data["test"],
        "-o",
        out,
        "--limit",
        "3",
        "--codes",
        "1,2,3",
    )
    assert r.code == 0, r.stderr
    assert [rec["decoding"]["codes"] for rec in read_jsonl(out)] == [[1, 2, 3]] * 3
    out2 = tmp_path / "oracle.jsonl"
    r = cli(
        "generate",
        codebook_run.final_dir,
        "-i",
        small_data["test"],
        "-o",
        out2,
        "--limit",
        "3",
        "--persona-mode",
        "oracle",
    )
    assert r.code == 0, r.stderr
    assert all(rec["decoding"]["codebook"]["persona_mode"] == "oracle" for rec in read_jsonl(out2))
    r = cli(
        "generate",
        codebook_run.final_dir,
        "-i",
        small_data["test"],
        "-o",
        tmp_path / "x.jsonl",
        "--codes",
        "1,2",
    )
    assert r.code == 2 and "expected 3 code ids" in r.stderr


def test_inspect_reports_usage_nearest_sentences_and_samples(codebook_run, small_data, cli):
    from personadlg.generation.generate import load_examples
    from personadlg.models.codebook.inspect import inspect_codebook

    _, model = load_checkpoint(codebook_run.final_dir)
    examples = load_examples(small_data["train"], "all")
    report = inspect_codebook(model, examples, top=2)
    rows = report["codes"]
    assert sorted(r["code"] for r in rows) == list(range(8))
    assert sum(r["assigned"] for r in rows) == 3 * len(examples)  # M segments per example
    assert sum(r["predicted"] for r in rows) == 3 * len(examples)
    assert report["assigned"]["used"] == sum(1 for r in rows if r["assigned"])
    for r in rows:
        assert len(r["nearest"]) == 2
        d = [n["distance"] for n in r["nearest"]]
        assert d == sorted(d)
    # the nearest sentence of a used code is assigned to it
    used = [r for r in rows if r["assigned"]]
    assert any(r["nearest"][0]["own"] for r in used)
    one = inspect_codebook(model, examples, code=5, contexts=2)
    assert [r["code"] for r in one["codes"]] == [5] and len(one["generations"]) == 2
    r = cli("codebook", "inspect", codebook_run.final_dir, "--data", small_data["train"], "--json")
    assert r.code == 0, r.stderr
    assert len(r.json()["codes"]) == 8
    r = cli(
        "codebook", "inspect", codebook_run.final_dir, "--data", small_data["train"], "--code", "3"
    )
    assert r.code == 0 and "code 3:" in r.stdout
    r = cli(
        "codebook", "inspect", codebook_run.final_dir, "--data", small_data["train"], "--code", "8"
    )
    assert r.code == 2 and "0..7" in r.stderr


def test_chat_shows_the_codes_of_the_last_reply(codebook_run):
    from personadlg.config import GenerateConfig
    from personadlg.generation.chat import ChatSession
    from personadlg.registry import METHODS

    _, model = load_checkpoint(codebook_run.final_dir)
    s = ChatSession(
        model=model,
        decoding=GenerateConfig(max_new_tokens=5),
        method="codebook",
        supports=("history",),
        method_commands=METHODS.get("codebook").chat_commands,
    )
    assert "  /codes" in s.command("/help") and "(codebook)" in s.command("/help")
    assert "no reply yet" in s.command("/codes")
    s.reply("hi, what do you do for fun?")
    shown = s.command("/codes")
    assert shown.startswith("codes of the last reply: ") and "(predicted)" in shown
    assert len(shown.split(":")[1].split("(")[0].split()) == 3


def test_without_codebook_the_prefix_is_regressed_from_the_history(small_data, tmp_path):
    """The 'without codebook' ablation: continuous encodings as the prefix in training, a vector
    predicted from the history (MSE) at generation; no VQ, contrast or code diagnostics."""
    result = train(
        codebook_recipe(
            small_data,
            tmp_path / "run",
            "model.quantize=false",
            "model.stages=[role,joint]",
            "model.stage_train={role: {max_steps: 2}, joint: {max_steps: 3}}",
        )
    )
    rows = [r for r in read_metrics(result.output_dir) if r["split"] == "train"]
    assert rows and all({"lm", "code"} <= set(r) and "vq" not in r for r in rows)
    _, model = load_checkpoint(result.final_dir)
    from personadlg.config import GenerateConfig

    exs = _examples(small_data["test"], 2)
    g = model.generate(
        exs, decoding=GenerateConfig(max_new_tokens=4), seeds=[0, 0], targets=[None] * 2
    )
    assert len(g.texts) == 2 and g.records is None
    with pytest.raises(UsageError, match="no codebook"):
        from personadlg.models.codebook.inspect import inspect_codebook

        inspect_codebook(model, exs)
