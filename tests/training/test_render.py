"""One renderer for training and generation: plain template, chat templates, budgets, loss masks."""

from __future__ import annotations

import pytest

from personadlg.data.schema import Example, Message
from personadlg.models.render import RenderOptions, header_lines, plain_prompt, render

EX = Example(
    id="d#3",
    dialogue_id="d",
    context=[
        Message("user", "how was the market?"),
        Message("assistant", "busy, we sold out."),
        Message("user", "and the bees?"),
    ],
    reference="they are calm today.",
    persona=["i keep bees .", "i sell honey ."],
    attributes={"attitude": "optimistic"},
    profile={"age": "60s", "occupation": "beekeeper"},
)


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    from personadlg.models.backbone import load_tokenizer

    return load_tokenizer(tiny_tokenizer_dir)


def test_plain_template_is_documented_text():
    opts = RenderOptions(persona=True, profile=True, attributes=True)
    assert plain_prompt(header_lines(EX, opts), EX.context) == (
        "Persona: i keep bees . i sell honey .\n"
        "Profile: age: 60s; occupation: beekeeper\n"
        "Attributes: attitude=optimistic\n"
        "User: how was the market?\n"
        "Assistant: busy, we sold out.\n"
        "User: and the bees?\n"
        "Assistant:"
    )
    assert header_lines(EX, RenderOptions()) == []
    assert (
        header_lines(EX, opts, {"attitude": "pessimistic"})[-1]
        == "Attributes: attitude=pessimistic"
    )


def test_target_is_the_reply_and_eos(tok):
    r = render(EX, tok, RenderOptions(persona=True), max_prompt_tokens=200, max_target_tokens=64)
    assert (
        tok.decode(r.target_ids[:-1]) == " they are calm today."
        and r.target_ids[-1] == tok.eos_token_id
    )
    assert tok.decode(r.prompt_ids).endswith("User: and the bees?\nAssistant:")


def test_oldest_turns_are_dropped_to_fit(tok):
    full = render(EX, tok, RenderOptions(persona=True), max_prompt_tokens=500, with_target=False)
    short = render(
        EX,
        tok,
        RenderOptions(persona=True),
        max_prompt_tokens=len(full.prompt_ids) - 3,
        with_target=False,
    )
    assert "how was the market?" not in short.prompt_text and "and the bees?" in short.prompt_text
    assert short.prompt_text.startswith("Persona:")
    tiny = render(EX, tok, RenderOptions(persona=True), max_prompt_tokens=5, with_target=False)
    assert len(tiny.prompt_ids) == 5  # even the header is cut, from the left


class CountingTokenizer:
    """TOK, counting its calls."""

    def __init__(self, tok: object) -> None:
        self.tok, self.calls = tok, 0

    def __call__(self, *args: object, **kwargs: object) -> object:
        self.calls += 1
        return self.tok(*args, **kwargs)

    def __getattr__(self, name: str) -> object:
        return getattr(self.tok, name)


def linear_render(example: Example, tok: object, budget: int) -> list[int]:
    """The reference: drop the oldest turn until the prompt fits (or no turn is left)."""
    context = list(example.context)
    while True:
        text = plain_prompt(header_lines(example, RenderOptions(persona=True)), context)
        ids = tok(text)["input_ids"]  # type: ignore[operator]
        if len(ids) <= budget or not context:
            return list(ids[len(ids) - budget :] if len(ids) > budget else ids)
        context = context[1:]


def test_the_turns_to_drop_are_found_in_few_tokenisations(tok):
    turns = [
        Message("user" if i % 2 == 0 else "assistant", f"turn {i}: " + "bees and honey " * (i % 5))
        for i in range(64)
    ]
    long = Example(id="l#64", dialogue_id="l", context=turns, persona=["i keep bees ."])
    counting = CountingTokenizer(tok)
    full = len(render(long, tok, RenderOptions(persona=True), max_prompt_tokens=10**6).prompt_ids)
    for budget in [*range(1, 40, 3), *range(40, full + 5, 17)]:
        counting.calls = 0
        got = render(
            long, counting, RenderOptions(persona=True), max_prompt_tokens=budget, with_target=False
        )
        assert got.prompt_ids == linear_render(long, tok, budget), budget
        assert counting.calls <= 1 + 7  # the whole prompt, then a bisection over 64 turns


def test_chat_template_is_used_when_the_tokenizer_has_one(tok):
    tok = type(tok).from_pretrained(tok.name_or_path)
    tok.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    r = render(EX, tok, RenderOptions(persona=True), max_prompt_tokens=500, max_target_tokens=64)
    assert r.prompt_text.startswith(
        "<|system|>Persona: i keep bees . i sell honey .<|end|><|user|>how was the market?"
    )
    assert r.prompt_text.endswith("<|user|>and the bees?<|end|><|assistant|>")
    assert (
        tok.decode(r.target_ids) == "they are calm today.<|end|>"
    )  # the template's own end of turn is trained
    plain = render(
        EX, tok, RenderOptions(persona=True, chat_template="plain"), max_prompt_tokens=500
    )
    assert plain.prompt_text.startswith("Persona:")


def test_loss_only_on_assistant_tokens(tiny_gpt2_dir, small_data):
    from personadlg.config import load_recipe
    from personadlg.models.finetune.model import load

    cfg = load_recipe(
        "finetune/tiny",
        [
            f"model.backbone={tiny_gpt2_dir}",
            "model.from_config={}",
            "model.tokenizer.train=false",
            "model.max_length=128",
        ],
    )
    model = load(tiny_gpt2_dir, cfg)
    feats = model.encode(EX)
    trained = [t for t, lab in zip(feats["input_ids"], feats["labels"]) if lab != -100]
    assert model.tokenizer.decode(trained) == " they are calm today." + model.tokenizer.eos_token
    views = model.explain(EX)
    assert sum(v.trained for v in views) == len(trained) and not any(
        v.trained for v in views[: len(views) - len(trained)]
    )
    batch = model.collate(
        [feats, model.encode(Example(id="x#1", dialogue_id="x", context=[], reference="hi"))]
    )
    assert (
        batch["input_ids"].shape == batch["labels"].shape
        and int(batch["attention_mask"][1].sum()) < batch["input_ids"].shape[1]
    )
    pads = batch["attention_mask"] == 0
    assert pads.any() and (batch["labels"][pads] == -100).all()  # padding is never a target
    # every reply starts in the same column, and positions count each row's real tokens
    firsts = {int((row != -100).nonzero()[0]) for row in batch["labels"]}
    assert len(firsts) == 1
    assert batch["position_ids"][1][batch["attention_mask"][1].bool()].tolist() == list(
        range(int(batch["attention_mask"][1].sum()))
    )


def test_tensorboard_needs_its_package(tmp_path, small_data):
    pytest.importorskip("torch")
    try:
        import tensorboard  # noqa: F401

        pytest.skip("tensorboard is installed")
    except ImportError:
        pass
    from personadlg.errors import UsageError
    from personadlg.training.trainer import train
    from tests.conftest import tiny_recipe

    with pytest.raises(UsageError, match="needs the tensorboard package"):
        train(
            tiny_recipe(small_data, tmp_path / "run", "train.max_steps=1", "train.tensorboard=true")
        )
