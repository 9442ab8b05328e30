"""The four `*/minilm` recipes end to end, with a tiny stand-in for all-MiniLM-L6-v2 (an encoder
checkpoint and an uncased WordPiece tokenizer): each warm-starts its decoder from the encoder, trains,
saves, loads and generates clean text; codebook's code predictor reads the history encoder's sentence
embedding; lora's adapters sit on the attention's query and value; a missing bundled model names the
extra that installs it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from personadlg.config import GenerateConfig, load_recipe
from personadlg.models.base import as_generations
from personadlg.training.checkpoint import load_checkpoint
from personadlg.training.data import iter_examples
from personadlg.training.trainer import train
from tests.conftest import DEMO

COMMON = [
    "train.batch_size=4",
    "train.log_every=1",
    "train.lr=3e-3",
    "generate.max_new_tokens=8",
    "generate.batch_size=4",
]
ARTIFACT = re.compile(r"##|\[(CLS|SEP|PAD|UNK|MASK)\]| ' [a-z]| [,.!?]")


def _overrides(method: str, mini: Path) -> list[str]:
    return {
        "finetune": [
            f"model.backbone={mini}",
            "model.max_length=96",
            "model.max_response_tokens=24",
            "train.max_steps=6",
        ],
        "cvae": [
            f"model.encoder={mini}",
            f"model.decoder={mini}",
            "model.latent_dim=8",
            "model.head_hidden=16",
            "model.max_context_tokens=48",
            "model.max_response_tokens=24",
            "train.max_steps=6",
        ],
        "codebook": [
            f"model.decoder={mini}",
            f"model.encoder={mini}",
            f"model.history_encoder={mini}",
            "model.n_codes=8",
            "model.slots=3",
            "model.max_length=96",
            "model.max_response_tokens=24",
            "model.stage_train={role: {max_steps: 3}, joint: {max_steps: 4}}",
        ],
        "lora": [
            f"model.backbone={mini}",
            "model.max_length=96",
            "model.max_response_tokens=24",
            f"model.users_data={DEMO}",
            "model.users=[u-006]",
            "model.stage_train={base: {max_steps: 4}, users: {max_steps: 3}}",
        ],
    }[method]


@pytest.fixture(scope="module")
def minilm_runs(tmp_path_factory, small_data, tiny_minilm_dir):
    """METHOD → its `METHOD/minilm` run on the stand-in (trained on first use, once per module)."""
    done: dict[str, object] = {}

    def get(method: str):
        if method not in done:
            out = tmp_path_factory.mktemp(f"{method}-minilm") / "run"
            cfg = load_recipe(
                f"{method}/minilm",
                [
                    *COMMON,
                    *_overrides(method, tiny_minilm_dir),
                    f"data.train={small_data['train']}",
                    f"data.valid={small_data['valid']}",
                    f"train.output_dir={out}",
                ],
            )
            assert cfg.model.tokenizer.truecase  # the recipes truecase the uncased model's replies
            done[method] = train(cfg)
        return done[method]

    return get


METHODS = ["finetune", "cvae", "codebook", "lora"]


def _decoder_weights(method: str, final: Path) -> dict[str, torch.Tensor]:
    if method == "lora":
        final = final.parent / "stages" / "1-base" / "final"
        return load_file(str(final / "model.safetensors"))
    sub = {"finetune": "", "cvae": "decoder", "codebook": "decoder"}[method]
    return load_file(str(final / sub / "model.safetensors"))


@pytest.mark.parametrize("method", METHODS)
def test_the_decoder_starts_from_the_encoder_and_trains(method, minilm_runs, tiny_minilm_dir):
    result = minilm_runs(method)
    encoder = load_file(str(tiny_minilm_dir / "model.safetensors"))
    decoder = _decoder_weights(method, result.final_dir)
    name = "encoder.layer.0.attention.self.query.weight"
    assert decoder[f"bert.{name}"].shape == encoder[name].shape  # the same body, now a decoder
    assert not torch.equal(decoder[f"bert.{name}"], encoder[name])  # which trained
    # one tensor for the LM head and the embeddings: saved once, under the embeddings' name
    assert "bert.embeddings.word_embeddings.weight" in decoder


@pytest.mark.parametrize("method", METHODS)
def test_generations_are_clean_text_and_survive_save_load(method, minilm_runs, small_data):
    result = minilm_runs(method)
    cfg, model = load_checkpoint(result.final_dir)
    examples = [ex for _, ex in zip(range(4), iter_examples(small_data["test"], cfg.data))]
    for ex in examples:
        if method == "lora":
            ex.user_id = "u-006"
    decoding = GenerateConfig(max_new_tokens=8, batch_size=4)
    targets = [{"attitude": "optimistic"} if method == "cvae" else None] * len(examples)
    first = as_generations(
        model.generate(examples, decoding=decoding, seeds=[0] * 4, targets=targets)
    ).texts
    _, again = load_checkpoint(result.final_dir)
    second = as_generations(
        again.generate(examples, decoding=decoding, seeds=[0] * 4, targets=targets)
    ).texts
    assert first == second
    for text in first:
        assert not ARTIFACT.search(text), text  # WordPiece pieces rejoined, specials dropped


def test_codebook_predicts_codes_from_the_history_encoders_sentence_embedding(
    minilm_runs, small_data, tiny_minilm_dir
):
    result = minilm_runs("codebook")
    from transformers import AutoModel, AutoTokenizer

    cfg, model = load_checkpoint(result.final_dir)
    net = model.net
    assert net.history_encoder is not None and net.predictor.w1.shape[1] == 32
    assert (result.final_dir / "history_encoder").is_dir()
    # frozen: the history encoder and the persona encoder (`role_trains_encoder: false`, frozen
    # in every stage) are the pretrained one, byte for byte
    saved = load_file(str(tiny_minilm_dir / "model.safetensors"))
    for part in (net.history_encoder, net.encoder):
        ours = part.state_dict()
        assert all(torch.equal(ours[k], saved[k]) for k in ours if k in saved)
    ex = next(iter_examples(small_data["test"], cfg.data))
    ids = model.history_ids(ex)
    tok = AutoTokenizer.from_pretrained(tiny_minilm_dir)
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id  # the encoder's own format
    enc = AutoModel.from_pretrained(tiny_minilm_dir).eval()
    with torch.no_grad():
        states = enc(input_ids=torch.tensor([ids])).last_hidden_state
        mine = net.history_embedding(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
    torch.testing.assert_close(mine, states.mean(1))  # sentence-transformers' mean pooling


def test_cvae_keeps_its_pretrained_encoders_and_trains_the_latent(minilm_runs, tiny_minilm_dir):
    """`freeze_encoders: true`: the prior and posterior encoders stay the pretrained one (their
    sentence embeddings feed the Gaussian heads, which train)."""
    result = minilm_runs("cvae")
    saved = load_file(str(tiny_minilm_dir / "model.safetensors"))
    for part in ("prior_encoder", "posterior_encoder"):
        ours = load_file(str(result.final_dir / part / "model.safetensors"))
        assert ours and all(torch.equal(v, saved[k]) for k, v in ours.items() if k in saved)
    _, model = load_checkpoint(result.final_dir)
    assert not any(p.requires_grad for p in model.net.prior_encoder.parameters())
    assert all(p.requires_grad for p in model.net.posterior_head.parameters())


def test_lora_adapts_query_and_value(minilm_runs):
    result = minilm_runs("lora")
    adapters = list((result.output_dir / "adapters").rglob("adapter_model.safetensors"))
    assert adapters
    names = list(load_file(str(adapters[0])))
    assert names and all(("query" in n or "value" in n) and "lora_" in n for n in names)


def test_a_missing_bundled_model_names_the_extra(cli, monkeypatch, small_data, tmp_path):
    import personadlg.models.loading as loading

    monkeypatch.setattr(loading, "bundled_dir", lambda hub_id: None)
    r = cli(
        "train",
        "finetune/minilm",
        f"data.train={small_data['train']}",
        f"train.output_dir={tmp_path / 'run'}",
    )
    assert r.code == 2, r.stderr
    assert "sentence-transformers/all-MiniLM-L6-v2" in r.stderr
    assert "personadlg[minilm]" in r.stderr and "Traceback" not in r.stderr
