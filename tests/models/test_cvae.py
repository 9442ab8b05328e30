"""The cvae method end to end with tiny models: training (every loss term, diagnostics, schedule,
resume), checkpoints (save → load gives identical outputs), generation with targets, combinations,
the unguided baseline and ODE overrides, chat, and the latent-space picture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from personadlg.training.checkpoint import load_checkpoint
from personadlg.training.trainer import train
from tests.conftest import read_jsonl, read_metrics, small_recipe, write_jsonl

TINY_CVAE = [
    "model.encoder_from_config={model_type: bert, hidden_size: 32, num_hidden_layers: 1, "
    "num_attention_heads: 2, intermediate_size: 64, max_position_embeddings: 128}",
    "model.decoder_from_config={model_type: gpt2, n_layer: 2, n_head: 2, n_embd: 32, n_positions: 128}",
    "model.tokenizer.vocab_size=400",
    "model.latent_dim=8",
    "model.head_hidden=16",
    "model.max_context_tokens=48",
    "model.max_response_tokens=24",
    "model.beta_period=4",
    "model.beta_zero_steps=1",
    "train.batch_size=4",
    "train.log_every=1",
    "train.lr=3e-3",
    "generate.max_new_tokens=8",
    "generate.batch_size=4",
]
SPACE = {
    "attitude": ["pessimistic", "optimistic"],
    "language_style": ["plain", "lyrical"],
    "mental_characteristics": ["emotional", "critical"],
}


def cvae_recipe(small_data: dict[str, Path], out: Path, *extra: str):
    return small_recipe("cvae/tiny", small_data, out, *extra, settings=TINY_CVAE)


@pytest.fixture(scope="module")
def cvae_run(tmp_path_factory, small_data):
    out = tmp_path_factory.mktemp("cvae") / "run"
    result = train(cvae_recipe(small_data, out, "train.max_steps=12", "train.eval_every=6"))
    return result


def test_training_logs_every_term_the_schedule_and_the_diagnostics(cvae_run):
    records = read_metrics(cvae_run.output_dir)
    steps = [r for r in records if r["split"] == "train"]
    for r in steps:
        assert {"loss", "rec", "kl", "kl_raw", "cls", "gap", "beta"} <= set(r), r
        assert all(v == v for v in r.values() if isinstance(v, float))  # no NaN
    # period 4 with 1 step of beta = 0: the logged beta of step s (1-based) is 0 when (s-1) % 4 == 0
    assert [r["beta"] for r in steps] == [0.0 if (r["step"] - 1) % 4 == 0 else 1.0 for r in steps]
    valid = [r for r in records if r["split"] == "valid"]
    assert [r["step"] for r in valid] == [6, 12]
    for r in valid:
        assert {"active_units", "mi", "ppl", "ppl_prior", "rec_prior"} <= set(r)
        assert {f"acc_{a}" for a in SPACE} <= set(r) and {f"prior_acc_{a}" for a in SPACE} <= set(r)
        assert 0 <= r["active_units"] <= 8
    assert (cvae_run.output_dir / "latent_space.png").stat().st_size > 5000
    assert (cvae_run.output_dir / "loss.png").is_file()
    final = cvae_run.final_dir
    for part in ("decoder", "prior_encoder", "posterior_encoder"):
        assert (final / part / "model.safetensors").is_file() and (
            final / part / "config.json"
        ).is_file()
    assert json.loads((final / "cvae.json").read_text())["attributes"] == {
        "language_style": SPACE["language_style"],
        "attitude": SPACE["attitude"],
        "mental_characteristics": SPACE["mental_characteristics"],
    }


def test_every_parameter_moves_with_attribute_homogeneous_batches(tmp_path, small_data):
    from personadlg.models.base import BuildContext
    from personadlg.registry import METHODS
    from personadlg.training.data import iter_examples

    # free bits 0: the prior is trained only through the KL, and in 8 steps of a tiny model no
    # dimension reaches the 0.9-nat threshold that would let the KL's gradient through
    cfg = cvae_recipe(
        small_data, tmp_path / "run", "train.max_steps=8", "data.valid=null", "model.free_bits=0"
    )
    result = train(cfg)
    ctx = BuildContext(
        train_examples=lambda: iter_examples(small_data["train"], cfg.data),
        work_dir=tmp_path / "again",
    )
    fresh = METHODS.get("cvae").build(cfg, ctx)  # same seed → the same initial weights
    _, trained = load_checkpoint(result.final_dir)
    before = dict(fresh.net.named_parameters())
    after = dict(trained.net.named_parameters())
    assert before.keys() == after.keys()
    unchanged = [k for k, p in before.items() if torch.equal(p, after[k])]
    assert not unchanged, f"parameters that did not move: {unchanged}"
    # every attribute's batches were seen: the gap cache holds a centre for each
    assert bool(trained.net.gap_seen.all())


def test_features_and_batches(cvae_run, small_data):
    from personadlg.training.data import iter_examples

    cfg, model = load_checkpoint(cvae_run.final_dir)
    ex = next(iter(iter_examples(small_data["train"], cfg.data)))
    f = model.encode(ex)
    # decoder: BOS response EOS, trained on everything but BOS; the context reaches it only through z
    assert f["dec_ids"][0] == model.bos_id and f["labels"][0] == -100
    assert f["dec_ids"][1:] == f["labels"][1:] and f["dec_ids"][-1] == model.tokenizer.eos_token_id
    assert len(f["post_ids"]) > len(f["prior_ids"])  # the posterior also reads the response
    labelled = [a for a in SPACE if a in ex.attributes]
    names = list(model.attributes)
    assert [names[i] for i, v in enumerate(f["attr"]) if v >= 0] == labelled
    batch = model.collate([f, model.encode(ex)])
    assert batch["attr"].shape == (2, 3) and batch["labels"].shape == batch["dec_ids"].shape
    views = model.explain(ex)
    assert {v.part for v in views} == {"prior", "posterior", "decoder"}
    assert sum(v.trained for v in views) == len(f["labels"]) - 1


def test_decoder_can_see_the_context_with_its_loss_masked(tmp_path, small_data):
    from personadlg.models.base import BuildContext
    from personadlg.registry import METHODS
    from personadlg.training.data import iter_examples

    cfg = cvae_recipe(small_data, tmp_path / "run", "model.decoder_sees_context=true")
    ctx = BuildContext(
        train_examples=lambda: iter_examples(small_data["train"], cfg.data), work_dir=tmp_path
    )
    model = METHODS.get("cvae").build(cfg, ctx)
    ex = [e for e in iter_examples(small_data["train"], cfg.data) if e.context][3]
    ids, labels = model.decoder_sequence(ex)
    prompt = labels.index(next(x for x in labels if x != -100))
    assert prompt > 3 and all(x == -100 for x in labels[:prompt])
    text = model.tokenizer.decode(ids[1:prompt])
    assert ex.context[-1].content[:20] in text and text.rstrip().endswith("Assistant:")
    out = model.generate(
        [ex], decoding=cfg.generate, seeds=[1], targets=[{"attitude": "optimistic"}]
    ).texts
    assert len(out) == 1 and isinstance(out[0], str)


def test_save_then_load_gives_identical_outputs(cvae_run, small_data, tmp_path):
    from personadlg.training.data import iter_examples

    cfg, a = load_checkpoint(cvae_run.final_dir)
    exs = list(iter_examples(small_data["valid"], cfg.data))[:6]
    batch = a.collate([a.encode(e) for e in exs])
    a.save(tmp_path / "copy")
    (tmp_path / "copy" / "config.yaml").write_text((cvae_run.final_dir / "config.yaml").read_text())
    _, b = load_checkpoint(tmp_path / "copy")
    a.net.eval()
    b.net.eval()
    with torch.no_grad():
        out_a, out_b = a.net(**batch), b.net(**batch)
    for k in ("loss", "rec", "kl", "cls", "rec_prior", "_mu_prior", "_mu_post"):
        assert torch.equal(out_a[k], out_b[k]), k
    targets = [{"language_style": "lyrical"}, None, {"attitude": "pessimistic"}] * 2
    seeds = list(range(6))
    assert a.generate(exs, decoding=cfg.generate, seeds=seeds, targets=targets) == b.generate(
        exs, decoding=cfg.generate, seeds=seeds, targets=targets
    )


def test_resume_reproduces_the_uninterrupted_run(tmp_path, small_data):
    from safetensors.torch import load_file

    extra = ("train.max_steps=8", "train.grad_accum=2", "train.save_every=4", "data.valid=null")
    full = train(cvae_recipe(small_data, tmp_path / "full", *extra))

    class Killed(Exception):
        pass

    def kill(kind, payload):
        if kind == "save" and payload["step"] == 4:
            raise Killed

    with pytest.raises(Killed):
        train(cvae_recipe(small_data, tmp_path / "split", *extra), on_event=kill)
    resumed = train(cvae_recipe(small_data, tmp_path / "split", *extra), resume="auto")
    assert resumed.steps == 8
    for part in (
        "latent.safetensors",
        "decoder/model.safetensors",
        "prior_encoder/model.safetensors",
    ):
        a, b = load_file(full.final_dir / part), load_file(resumed.final_dir / part)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-6), (part, k)


def test_generate_targets_combinations_and_the_unguided_baseline(
    cvae_run, small_data, tmp_path, cli
):
    ck = cvae_run.final_dir
    test = small_data["test"]
    r = cli(
        "generate", ck, "-i", test, "-o", tmp_path / "all.jsonl", "--all-combinations", "--json"
    )
    assert r.code == 0, r.stderr
    recs = read_jsonl(tmp_path / "all.jsonl")
    n_examples = len({x["id"] for x in recs})
    assert len(recs) == 8 * n_examples
    assert {json.dumps(x["target_attributes"], sort_keys=True) for x in recs} == {
        json.dumps(dict(zip(sorted(SPACE), c)), sort_keys=True)
        for c in __import__("itertools").product(*(SPACE[a] for a in sorted(SPACE)))
    }
    lat = recs[0]["decoding"]["latent"]
    assert lat["nfe"] > 0 and lat["solver"] == "dopri5" and lat["start"] == "prior_mean"
    summary = json.loads(r.stdout)
    assert set(summary["stage_seconds"]) == {"encode", "ode", "decode"}

    # rerun: identical; resumed after losing lines: identical
    again = tmp_path / "again.jsonl"
    cli("generate", ck, "-i", test, "-o", again, "--all-combinations")
    assert read_jsonl(again) == recs
    lines = again.read_text().splitlines()
    again.write_text("\n".join(lines[:5]) + "\n" + lines[5][:20])  # killed mid-write
    cli("generate", ck, "-i", test, "-o", again, "--all-combinations")
    assert read_jsonl(again) == recs

    base = tmp_path / "base.jsonl"
    r = cli(
        "generate",
        ck,
        "-i",
        test,
        "-o",
        base,
        "--all-combinations",
        "--no-guidance",
        "do_sample=false",
    )
    assert r.code == 0, r.stderr
    unguided = read_jsonl(base)
    assert [x["target_attributes"] for x in unguided] == [x["target_attributes"] for x in recs]
    assert all(
        x["decoding"]["latent"] == {"start": "prior_mean", "guidance_scale": 0.0, "nfe": 0}
        for x in unguided
    )
    # without guidance every combination of an example decodes the same latent (greedy: same text)
    by_example: dict[str, set[str]] = {}
    for x in unguided:
        by_example.setdefault(x["id"], set()).add(x["generation"])
    assert all(len(v) == 1 for v in by_example.values())

    one = tmp_path / "one.jsonl"
    r = cli(
        "generate",
        ck,
        "-i",
        test,
        "-o",
        one,
        "--attributes",
        "language_style=lyrical,attitude=optimistic",
        "model.ode.guidance_scale=9",
        "model.ode.solver=rk4",
        "model.ode.step_size=0.1",
    )
    assert r.code == 0, r.stderr
    rec = read_jsonl(one)[0]
    assert rec["target_attributes"] == {"language_style": "lyrical", "attitude": "optimistic"}
    assert rec["decoding"]["latent"]["guidance_scale"] == 9.0
    assert rec["decoding"]["latent"]["nfe"] == 40  # rk4: 4 evaluations x 10 steps


def test_generate_errors_are_clear(cvae_run, small_data, tmp_path, cli):
    ck, test = cvae_run.final_dir, small_data["test"]
    r = cli(
        "generate", ck, "-i", test, "-o", tmp_path / "x.jsonl", "--attributes", "attitude=gloomy"
    )
    assert r.code == 2 and "unknown aspect 'gloomy'" in r.stderr
    r = cli("generate", ck, "-i", test, "-o", tmp_path / "x.jsonl", "model.latent_dim=4")
    assert r.code == 2 and "only model.ode.* can change" in r.stderr and "latent_dim" in r.stderr
    r = cli("generate", ck, "-i", test, "-o", tmp_path / "x.jsonl", "model.ode.solver=magic")
    assert r.code == 2 and "model.ode.solver" in r.stderr
    assert not (tmp_path / "x.jsonl").exists() or not (tmp_path / "x.jsonl").read_text()


def test_unknown_aspect_in_training_data_is_a_clear_error(tmp_path, small_data, cli):
    rows = read_jsonl(small_data["train"])
    rows[3]["attributes"] = {"attitude": "gloomy"}
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    r = cli(
        "train",
        "cvae/tiny",
        *TINY_CVAE,
        f"data.train={bad}",
        "data.valid=null",
        f"train.output_dir={tmp_path / 'run'}",
        "train.max_steps=2",
    )
    assert r.code == 2 and "attributes.attitude" in r.stderr and "gloomy" in r.stderr


def test_chat_sets_attribute_targets(cvae_run):
    from personadlg.generation.chat import ChatSession
    from personadlg.registry import METHODS

    cfg, model = load_checkpoint(cvae_run.final_dir)
    s = ChatSession(
        model=model,
        decoding=cfg.generate,
        method="cvae",
        supports=METHODS.get("cvae").supports,
        attribute_space=cfg.data.attributes,
    )
    assert "attributes: language_style=lyrical" in s.command("/attributes language_style=lyrical")
    assert isinstance(s.reply("how was your day?"), str)
    assert s.last_info["latent"]["nfe"] > 0
    with pytest.raises(Exception, match="unknown aspect"):
        s.command("/attributes language_style=loud")


def test_latent_space_png_on_demand(cvae_run, small_data, tmp_path):
    from personadlg.generation.generate import load_examples
    from personadlg.models.cvae.latent_plot import plot_examples

    _, model = load_checkpoint(cvae_run.final_dir)
    out = plot_examples(model, load_examples(small_data["valid"], "all"), tmp_path / "z.png")
    assert out.stat().st_size > 5000


def test_plot_latent_from_the_command_line(cvae_run, small_data, tmp_path, cli):
    r = cli("plot", cvae_run.output_dir, "--latent", small_data["test"], "-o", tmp_path / "t.png")
    assert r.code == 0, r.stderr
    assert (tmp_path / "t.png").stat().st_size > 5000
    r = cli("plot", cvae_run.final_dir, "--latent", tmp_path / "missing.jsonl")
    assert r.code == 2 and "missing.jsonl" in r.stderr and "Traceback" not in r.stderr
    assert not (cvae_run.final_dir / "latent_space.png").exists()
    r = cli("plot", cvae_run.output_dir, "--latnet", small_data["test"])
    assert r.code == 2 and "did you mean '--latent'" in r.stderr


def test_library_latent_utilities(cvae_run, small_data):
    from personadlg.generation.generate import load_examples

    cfg, model = load_checkpoint(cvae_run.final_dir)
    exs = load_examples(small_data["valid"], "all")[:4]
    mu, logvar = model.prior(exs)
    mu_q, _ = model.posterior(exs)
    assert mu.shape == logvar.shape == mu_q.shape == (4, 8)
    moved = model.guide(mu, [{"attitude": "optimistic"}] * 4)
    path = [mu + (moved.z - mu) * a for a in (0.0, 0.5, 1.0)]  # interpolation is plain arithmetic
    texts = [model.decode(z, exs, decoding=cfg.generate) for z in path]
    assert all(len(t) == 4 for t in texts)
    heads = model.net.heads
    i = list(model.attributes).index("attitude")
    with torch.no_grad():
        p_before = torch.softmax(heads[i](mu), -1)[:, 1]
        p_after = torch.softmax(heads[i](moved.z), -1)[:, 1]
    assert bool((p_after > p_before).all())


def test_collapse_warning_fires_on_collapse_only(cvae_run, caplog):
    _, model = load_checkpoint(cvae_run.final_dir)
    d, n = model.cfg.latent_dim, 10.0
    attrs = len(model.attributes)

    def stats(*, kl: float, mu_var: float, mi: float) -> dict[str, torch.Tensor]:
        f64 = torch.float64
        return {
            "n": torch.tensor([n], dtype=f64),
            "mu_sum": torch.zeros(d, dtype=f64),
            "mu_sq_sum": torch.full((d,), mu_var * n, dtype=f64),
            "mi": torch.tensor([mi * n, n], dtype=f64),
            "kl": torch.tensor([kl * n], dtype=f64),
            "labelled": torch.zeros(attrs, dtype=f64),
            "correct_post": torch.zeros(attrs, dtype=f64),
            "correct_prior": torch.zeros(attrs, dtype=f64),
            "nll": torch.tensor([1.0, 1.0, 1.0], dtype=f64),
        }

    with caplog.at_level("WARNING"):
        # early training: no unit active yet, but the KL is large and z already informative
        m = model.eval_metrics(stats(kl=20.0, mu_var=0.001, mi=0.5))
        assert m["active_units"] == 0 and "posterior collapse" not in caplog.text
        model.eval_metrics(stats(kl=20.0, mu_var=0.5, mi=0.0))  # units vary: no collapse
        assert "posterior collapse" not in caplog.text
        model.eval_metrics(stats(kl=0.001 * d, mu_var=0.5, mi=1.0))  # q = p: the KL collapsed
        assert caplog.text.count("posterior collapse") == 1
        model.eval_metrics(stats(kl=0.0, mu_var=0.0, mi=0.0))
        assert caplog.text.count("posterior collapse") == 1  # said once per run


def test_collapse_without_information_warns(cvae_run, caplog):
    _, model = load_checkpoint(cvae_run.final_dir)
    d, attrs = model.cfg.latent_dim, len(model.attributes)
    f64 = torch.float64
    s = {
        "n": torch.tensor([4.0], dtype=f64),
        "mu_sum": torch.zeros(d, dtype=f64),
        "mu_sq_sum": torch.zeros(d, dtype=f64),
        "mi": torch.tensor([0.0, 4.0], dtype=f64),
        "kl": torch.tensor([40.0], dtype=f64),
        "labelled": torch.zeros(attrs, dtype=f64),
        "correct_post": torch.zeros(attrs, dtype=f64),
        "correct_prior": torch.zeros(attrs, dtype=f64),
        "nll": torch.tensor([1.0, 1.0, 1.0], dtype=f64),
    }
    with caplog.at_level("WARNING"):
        model.eval_metrics(s)
    assert "posterior collapse" in caplog.text and "0 active units" in caplog.text


def test_a_reused_model_does_not_keep_an_earlier_calls_overrides(cvae_run, small_data, tmp_path):
    from personadlg.generation.generate import generate_file

    loaded = load_checkpoint(cvae_run.final_dir)
    default = loaded[0].model.ode.guidance_scale
    kw = {"loaded": loaded, "targets": {"attitude": "optimistic"}, "limit": 2}
    off = generate_file(
        cvae_run.final_dir,
        small_data["test"],
        tmp_path / "a.jsonl",
        overrides=["model.ode.guidance_scale=0"],
        **kw,
    )
    on = generate_file(cvae_run.final_dir, small_data["test"], tmp_path / "b.jsonl", **kw)
    assert off["decoding"]["latent"]["guidance_scale"] == 0.0
    assert on["decoding"]["latent"]["guidance_scale"] == default > 0
    assert on["decoding"]["latent"]["nfe"] > 0
    assert loaded[0].model.ode.guidance_scale == default  # the loaded config is left as it was


@pytest.mark.parametrize(
    "override,words",
    [
        (
            "model.ode.weights={atitude: 2}",
            ["model.ode.weights.atitude", "did you mean 'attitude'"],
        ),
        ("model.ode.guidance_scale=nan", ["model.ode.guidance_scale", "finite"]),
    ],
)
def test_bad_ode_overrides_are_refused_before_generating(
    cvae_run, small_data, tmp_path, cli, override, words
):
    out = tmp_path / "g.jsonl"
    r = cli(
        "generate",
        cvae_run.final_dir,
        "-i",
        small_data["test"],
        "-o",
        out,
        "--all-combinations",
        override,
    )
    assert r.code == 2, r.stderr
    assert all(w in r.stderr for w in words), r.stderr
    assert not out.exists()


def test_loss_curves_are_a_grid_grouped_by_kind(cvae_run):
    import matplotlib.image

    from personadlg.training.logging import curve_kind

    height, width = matplotlib.image.imread(cvae_run.output_dir / "loss.png").shape[:2]
    assert width >= 1000 and height <= 1.5 * width  # a grid, not one column of 20 plots
    assert curve_kind("rec") == curve_kind("kl_raw") == "losses"
    assert curve_kind("acc_attitude") == curve_kind("prior_acc_attitude") == "accuracies"
    assert curve_kind("active_units") == curve_kind("ppl_prior") == "diagnostics"
    assert curve_kind("lr") == curve_kind("grad_norm") == "optimization"


def test_worked_example_cvae_against_an_api_model_with_eval_compare(
    cvae_run, small_data, tmp_path, cli, monkeypatch
):
    """The README's worked example: cvae and api/attributes on the same test set, --all-combinations,
    paired by `eval --compare` (the api model is the local OpenAI-compatible server)."""
    from personadlg.generation.generate import generate_file
    from tests.fake_openai import FakeOpenAI, echo_reply

    server = FakeOpenAI().start()
    server.reply_for = echo_reply
    monkeypatch.setenv("PDLG_WORKED_KEY", "sk-test-worked")
    try:
        kw = {"combinations": True, "limit": 2}
        cvae = generate_file(cvae_run.final_dir, small_data["test"], tmp_path / "cvae.jsonl", **kw)
        api = generate_file(
            "api/attributes",
            small_data["test"],
            tmp_path / "gpt.jsonl",
            overrides=[f"client.base_url={server.base_url}", "client.api_key_env=PDLG_WORKED_KEY"],
            **kw,
        )
    finally:
        server.stop()
    assert cvae["total"] == api["total"] == 16 and api["output_records"] == 16
    r = cli(
        "eval",
        tmp_path / "cvae.jsonl",
        "--compare",
        tmp_path / "gpt.jsonl",
        "--metrics",
        "bleu-1,rouge-l,dist-1",
        "--by-target",
        "--json",
    )
    assert r.code == 0, r.stderr
    report = r.json()
    diff = report["comparisons"]["vs_base"][str(tmp_path / "gpt.jsonl")]
    assert set(diff) == {"bleu-1", "rouge-l", "dist-1"} and report["comparisons"]["n"] == 16
    for d in diff.values():
        assert d["ci95"][0] <= d["diff"] <= d["ci95"][1]
    assert len(report["systems"][str(tmp_path / "gpt.jsonl")]["by_target"]) == 8


def test_word_dropout_replaces_decoder_inputs_in_training_only(cvae_run, small_data):
    """`model.word_dropout`: in training, that share of the decoder's input tokens (never BOS, never
    padding) becomes the unknown token; validation and generation see the real tokens."""
    from personadlg.training.data import iter_examples

    cfg, model = load_checkpoint(cvae_run.final_dir)
    examples = [ex for _, ex in zip(range(8), iter_examples(small_data["train"], cfg.data))]
    batch = model.collate([f for f in map(model.encode, examples) if f is not None])
    seen: list[torch.Tensor] = []
    hook = model.net.decoder.get_input_embeddings().register_forward_hook(
        lambda m, i, o: seen.append(i[0].clone())
    )
    model.net.cfg.word_dropout = 0.5
    try:
        model.net.train()
        torch.manual_seed(0)
        model.net(**batch)
        model.net.eval()
        with torch.no_grad():
            model.net(**batch)
    finally:
        hook.remove()
        model.net.cfg.word_dropout = 0.0
    trained, validated = seen[0], seen[1]
    unk, ids, mask = model.net.word_dropout_id, batch["dec_ids"], batch["dec_mask"]
    dropped = (trained != ids) & (mask > 0)
    assert 0.3 < dropped.sum() / (mask[:, 1:] > 0).sum() < 0.7
    assert (trained[dropped] == unk).all() and torch.equal(trained[:, 0], ids[:, 0])
    assert torch.equal(trained[mask == 0], ids[mask == 0])
    assert torch.equal(validated, ids)
