"""Method `codebook`: MORPHEUS — persona information compressed into a codebook of N vectors; at
generation a predictor chooses M codes from the dialogue history alone, and their vectors condition
the decoder as a key/value prefix, so no persona text is needed (arXiv 2407.02345)."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from personadlg.models.codebook.config import CodebookConfig
from personadlg.models.codebook.demo import DEMO
from personadlg.models.spec import (
    Block,
    ChatCommand,
    ChatView,
    Command,
    CommandKit,
    Flag,
    Implementation,
    MethodSpec,
    Option,
)


def _implementation() -> Implementation:
    from personadlg.models.codebook.model import CodebookModel, build, load

    return Implementation(build=build, load=load, model_cls=CodebookModel)


def inspect(model: Any, options: Mapping[str, Any], kit: CommandKit) -> dict[str, Any]:
    """`personadlg codebook inspect`: what the codes of a trained codebook stand for."""
    from personadlg.models.codebook.inspect import inspect_codebook

    return inspect_codebook(
        model,
        kit.examples(options["data"]),
        top=options["top"],
        code=options["code"],
        contexts=options["contexts"],
        predict_limit=options["limit"],
        decoding=kit.decoding(options["overrides"]),
    )


def render_inspect(report: dict[str, Any], options: Mapping[str, Any]) -> list[Block]:
    from personadlg.models.codebook.inspect import render_inspection

    return render_inspection(report, options)


def show_codes(view: ChatView, arg: str) -> str:
    """`/codes` in `personadlg chat`: the persona codes chosen for the last reply."""
    if "codes" in view.last_record:
        mode = (view.last_info.get("codebook") or {}).get("persona_mode", "")
        codes = " ".join(str(c) for c in view.last_record["codes"])
        return f"codes of the last reply: {codes}" + (f" ({mode})" if mode else "")
    return "(no reply yet: the codes are predicted from the history when you write)"


SPEC = MethodSpec(
    name="codebook",
    description="MORPHEUS: persona codebook, EM init, VQ + contrastive + code prediction "
    "(arXiv 2407.02345)",
    config_cls=CodebookConfig,
    implementation=_implementation,
    supports=("history",),
    stages=("role", "init", "joint"),
    flags={
        "generate": {
            "--persona-mode": Flag(
                value="MODE",
                override="model.persona_mode={}",
                help="predicted (codes from the history, no persona text; default) or oracle (the "
                "record's persona snapped to its nearest codes: the upper bound)",
            ),
            "--codes": Flag(
                value="IDS",
                override="model.codes=[{}]",
                help="force these M codes for every example, e.g. --codes 3,17,17,40",
            ),
        },
    },
    chat_commands={
        "codes": ChatCommand(help="the persona codes chosen for the last reply", run=show_codes),
    },
    commands={
        "inspect": Command(
            help="For each code: its usage (share of the data's persona segments nearest to it, "
            "and of the codes the predictor chooses from the histories) and the persona sentences "
            "nearest to it; with --code K, that code alone and sample generations with K in every "
            "slot.",
            run=inspect,
            render=render_inspect,
            options={
                "data": Option(
                    ("--data", "-d"), Path, "Dialogues (or examples) with personas.", required=True
                ),
                "code": Option(
                    ("--code",), int, "Show one code, with sample generations conditioned on it."
                ),
                "top": Option(("--top",), int, "Nearest persona sentences per code.", default=3),
                "contexts": Option(
                    ("--contexts",), int, "With --code: contexts to generate for.", default=3
                ),
                "limit": Option(
                    ("--limit",),
                    int,
                    "Examples whose histories predict codes (usage).",
                    default=500,
                ),
            },
            examples=(
                "personadlg codebook inspect runs/codebook-tiny/final --data data/train.jsonl",
                "personadlg codebook inspect runs/codebook-tiny/final --data data/train.jsonl --code 3 --contexts 5",
            ),
        )
    },
    demo=DEMO,
)

__all__ = ["SPEC", "CodebookConfig"]
