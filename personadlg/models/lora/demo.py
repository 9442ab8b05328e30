"""The lora's step of `personadlg demo`: the profile-aware base, trained from the baseline's
decoder, and one adapter for each of the users with the most held-out test turns; those users' test
dialogues generated with the base and with their adapters, and compared per user."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

from personadlg.models.spec import DemoBlock, DemoRun, DemoStep, Table

USERS = 4
"""Users that get an adapter."""
EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
"""emb-sim's embedder, when installed."""


def run(demo: DemoRun) -> dict[str, Any]:
    """Train the base and the adapters of the USERS users with the most test turns; generate for
    their test dialogues with the base (`NAME-base`) and with their adapters (`NAME`); per-user
    metrics, written to eval/NAME-by-user.json."""
    from personadlg.data.jsonl import dumps
    from personadlg.models.lora.adapters import read_index

    kit, name = demo.kit, demo.name
    users = _users(demo)
    demo.cfg.model.users = sorted(users)
    result = kit.train(demo.cfg)
    held = _held_out(demo, users)
    base_name = f"{name}-base"
    gens = {}
    for gname, ckpt in (
        (base_name, demo.out_dir / name / "stages" / "1-base" / "final"),
        (name, result.final_dir),
    ):
        gens[gname] = demo.generations(gname)
        kit.generate(ckpt, held, gens[gname])
    metrics = _metrics()
    comp = kit.compare(
        [gens[base_name], gens[name]],
        metrics=metrics,
        embedder=EMBEDDER if "emb-sim" in metrics else None,
        by="user",
    )
    (demo.out_dir / "eval").mkdir(parents=True, exist_ok=True)
    (demo.out_dir / "eval" / f"{name}-by-user.json").write_text(dumps(comp), encoding="utf-8")
    systems = {Path(k).stem: v for k, v in comp["systems"].items()}
    return {
        "train": {
            "final": str(result.final_dir),
            "seconds": result.seconds,
            "stage_seconds": [s.seconds for s in result.stages],
            "summary": result.last_valid,
        },
        "users": users,
        "adapters": read_index(demo.out_dir / name / "adapters")["users"],
        "metrics": metrics,
        "names": {"base": base_name, "adapters": name},
        "by_user": {g: systems[g].get("by_user", {}) for g in gens},
        "macro": {g: systems[g].get("macro", {}) for g in gens},
        "macro_diff": (comp["comparisons"].get("macro_vs_base") or {}).get(str(gens[name])),
        "samples": kit.records(gens[name])[:2],
        "samples_base": kit.records(gens[base_name])[:2],
    }


def _users(demo: DemoRun) -> list[str]:
    """The USERS users of the train split with the most test turns (ties: by id)."""
    test_turns = Counter(ex.user_id for ex in demo.kit.examples(demo.data("test")) if ex.user_id)
    train_users = {ex.user_id for ex in demo.kit.examples(demo.data("train"))}
    ranked = sorted((u for u in test_turns if u in train_users), key=lambda u: (-test_turns[u], u))
    return ranked[:USERS]


def _held_out(demo: DemoRun, users: list[str]) -> Path:
    """data/test-lora-users.jsonl: the test dialogues of USERS."""
    held = demo.data_dir / "test-lora-users.jsonl"
    lines = [
        ln
        for ln in demo.data("test").read_text(encoding="utf-8").splitlines()
        if ln.strip() and json.loads(ln).get("user_id") in set(users)
    ]
    held.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
    return held


def _metrics() -> list[str]:
    from personadlg.models.loading import bundled_dir

    return [
        "bleu-1",
        "rouge-l",
        "dist-1",
        *(["emb-sim"] if bundled_dir(EMBEDDER) is not None else []),
    ]


def render(c: dict[str, Any], *, name: str, baseline: str) -> list[DemoBlock]:
    """Per-user adapters and their held-out losses; base vs adapter per user."""
    base_s, users_s = ([*c["train"]["stage_seconds"], 0.0, 0.0])[:2]
    adapters = Table(
        f"{name}: one LoRA adapter per user on the profile-aware base",
        ["user", "turns", "steps", "valid ppl base → adapter", "s", "KiB"],
        [
            [
                u,
                e["examples"],
                e["steps"],
                f"{math.exp(e['valid_loss_before']):.1f} → {math.exp(e['valid_loss_after']):.1f}",
                f"{e['seconds']:.1f}",
                f"{e['size_bytes'] / 1024:.0f}",
            ]
            for u, e in c["adapters"].items()
        ],
    )
    metrics = c["metrics"]
    pair = (c["names"]["base"], c["names"]["adapters"])
    rows = [
        [user, *(_pair((c["by_user"][k].get(user) or {}).get(m) for k in pair) for m in metrics)]
        for user in c["users"]
    ]
    rows.append(
        [
            "macro",
            *(_pair((c["macro"][k].get(m) or {}).get("value") for k in pair) for m in metrics),
        ]
    )
    diff = c.get("macro_diff") or {}
    rows.append(["Δ [95% CI]", *(_diff(diff.get(m)) for m in metrics)])
    return [
        adapters,
        f"{name} training: base stage {base_s:.1f} s, users stage {users_s:.1f} s",
        Table(
            "held-out test dialogues of those users: base (with profile) → base + the user's adapter",
            ["user", *metrics],
            rows,
        ),
    ]


def _pair(values: Any) -> str:
    return " → ".join("-" if v is None else f"{v:.2f}" for v in values)


def _diff(d: dict[str, Any] | None) -> str:
    if not d or d.get("diff") is None:
        return "-"
    ci = d.get("ci95")
    return f"{d['diff']:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


DEMO = DemoStep(
    order=30,
    steps=25,
    chain=("model.backbone={baseline}",),
    run=run,
    render=render,
    outputs=(("lora adapters", "adapters/"),),
)
