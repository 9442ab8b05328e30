"""Recurring speakers on ConvAI2 (issue 14): a profile-aware base and one LoRA adapter per user.

Users: the personas of the ConvAI2 validation set (../shared/data/convai2) that occur in three or
more dialogues (the same persona sentence set, in any order); each user's last dialogue is their
test set, the others train their adapter. The base is trained on RCDG's 10,000 ConvAI2 training
pairs (../shared/data/rcdg, disjoint personas) with the profile = the persona text (the lora
template with `persona: true`); the decoder is `codebook/small`'s GPT-2 (4 layers, 256 dims, from
scratch). On the same test turns:
  - base without profile (the persona removed from the inputs), base with profile;
  - base + the user's adapter (stage users, early stopping on held-out turns of the user's
    training dialogues);
  - finetune: the base trained further on all users' training turns together (same template).
Per user: perplexity of the reference turns, emb-sim (all-MiniLM-L6-v2), BLEU-1, ROUGE-L, Dist;
macro-averages with user-resampling bootstrap intervals, paired differences against the base with
profile, and the share of users each system helps. Cost: seconds per adapter, adapter size, peak
RSS, and generation tokens/s with 1, 4, 16, 64 distinct users per batch against swapping adapters
between single-user batches.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks._profile import DECODINGS, PROFILES, SHARED, Profile, current

METRICS = ["bleu-1", "rouge-l", "dist-1", "dist-2", "emb-sim"]
EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


def _users_split(valid_jsonl: Path, d: Path, max_users: int | None = None) -> dict[str, Any]:
    """users-train.jsonl / users-test.jsonl: recurring personas as users, last dialogue = test."""
    from personadlg.data.formats import FormatOptions, read_dialogues
    from personadlg.data.jsonl import dumps
    from personadlg.data.persona import persona_identity

    by_persona: dict[Any, list[Any]] = defaultdict(list)
    for dlg in read_dialogues(valid_jsonl, "jsonl", FormatOptions()):
        by_persona[persona_identity(dlg.persona)].append(dlg)
    users = {k: v for k, v in by_persona.items() if len(v) >= 3}
    if max_users:
        users = dict(list(users.items())[:max_users])
    tr, te = [], []
    for key, dialogues in users.items():
        text = "\n".join(sorted(key))
        uid = "p-" + hashlib.blake2b(text.encode(), digest_size=4).hexdigest()
        for i, dlg in enumerate(dialogues):
            dlg.user_id = uid
            (te if i == len(dialogues) - 1 else tr).append(dlg.to_dict())
    (d / "users-train.jsonl").write_text("".join(dumps(r) + "\n" for r in tr), encoding="utf-8")
    (d / "users-test.jsonl").write_text("".join(dumps(r) + "\n" for r in te), encoding="utf-8")
    no_profile = [{k: v for k, v in r.items() if k != "persona"} for r in te]
    (d / "users-test-noprofile.jsonl").write_text(
        "".join(dumps(r) + "\n" for r in no_profile), encoding="utf-8"
    )
    return {"users": len(users), "train_dialogues": len(tr), "test_dialogues": len(te)}


def _reference_nll(model: Any, examples: list[Any], adapter: str | None) -> tuple[float, int]:
    """(summed token NLL, tokens) of EXAMPLES' references under MODEL (with ADAPTER or the base)."""
    import contextlib

    import torch

    lm = model.lm
    ctx: Any = contextlib.nullcontext()
    if adapter is not None:
        model._ensure_loaded({adapter})
        model.peft.set_adapter(adapter)
        lm = model.peft
    elif getattr(model, "peft", None) is not None:  # loaded adapters sit in the layers
        ctx = model.peft.disable_adapter()
    total, tokens = 0.0, 0
    with ctx, torch.no_grad():
        lm.eval()
        for ex in examples:
            feats = model.encode(ex)
            if feats is None:
                continue
            batch = model.collate([{k: torch.tensor(v) for k, v in feats.items()}])
            n = int((batch["labels"] != -100).sum())
            total += float(lm(**batch).loss) * n
            tokens += n
    return total, tokens


def _per_user_ppl(checkpoint: Path, inputs: Path, *, adapters: bool) -> dict[str, float]:
    """Perplexity of each user's reference turns in INPUTS under CHECKPOINT."""
    from personadlg.generation.generate import load_examples
    from personadlg.training.checkpoint import load_checkpoint

    _, model = load_checkpoint(checkpoint)
    by_user: dict[str, list[Any]] = defaultdict(list)
    for ex in load_examples(inputs, "all"):
        by_user[ex.user_id].append(ex)
    out = {}
    for user, exs in sorted(by_user.items()):
        adapter = model.adapter_for(user) if adapters else None
        if adapters and adapter is None:
            raise RuntimeError(f"user {user} has no adapter")
        nll, n = _reference_nll(model, exs, adapter)
        out[user] = math.exp(nll / max(n, 1))
    return out


def _throughput(checkpoint: Path, inputs: Path, levels: tuple[int, ...]) -> dict[str, Any]:
    """Generation tokens/s with K distinct users in one mixed batch of 64, against the same rows
    generated one user at a time (a batch per user, the adapter switched between batches)."""
    from personadlg.config import GenerateConfig
    from personadlg.generation.generate import load_examples
    from personadlg.models.base import as_generations
    from personadlg.training.checkpoint import load_checkpoint

    _, model = load_checkpoint(checkpoint)
    by_user: dict[str, list[Any]] = defaultdict(list)
    for ex in load_examples(inputs, "all"):
        by_user[ex.user_id].append(ex)
    users = sorted(u for u in by_user if model.adapter_for(u))
    cfg = GenerateConfig(max_new_tokens=32, min_new_tokens=32, max_loaded_adapters=128)
    out: dict[str, Any] = {}
    model._ensure_loaded({model.adapter_for(u) for u in users[: max(levels)]})  # not timed
    warm = [by_user[users[0]][0]] * 8
    model.generate(warm, decoding=cfg, seeds=[0] * 8, targets=[None] * 8)  # warm-up, not timed
    for k in levels:
        chosen = users[:k]
        rows = [by_user[chosen[i % k]][i // k % len(by_user[chosen[i % k]])] for i in range(64)]
        t = time.perf_counter()
        as_generations(model.generate(rows, decoding=cfg, seeds=[0] * 64, targets=[None] * 64))
        mixed = time.perf_counter() - t
        t = time.perf_counter()
        for u in chosen:  # the classic way: activate one adapter, generate that user's batch
            part = [r for r in rows if r.user_id == u]
            model.peft.set_adapter(model.adapter_for(u))
            model.generate_with(
                model.peft,
                part,
                decoding=cfg,
                seeds=[0] * len(part),
                targets=[None] * len(part),
            )
        swapped = time.perf_counter() - t
        out[str(k)] = {
            "mixed_tokens_per_s": 64 * 32 / mixed,
            "per_user_batches_tokens_per_s": 64 * 32 / swapped,
        }
    return out


def _arm_overrides(arm: str, tr: Path, prof: Profile) -> dict[str, Any]:
    """The lora and finetune recipes of ARM with their shared shape overrides."""
    from personadlg.config import load_recipe

    if arm == "scratch":
        small = load_recipe("codebook/small", [f"data.train={tr}"])
        conf = small.model.decoder_from_config
        decoder = "{" + ", ".join(f"{k}: {v}" for k, v in conf.items()) + "}"
        return {
            "lora": "lora/tiny",
            "finetune": "finetune/tiny",
            "steps": prof.scratch_steps,
            "shape": [
                f"model.from_config={decoder}",
                f"model.tokenizer.vocab_size={small.model.tokenizer.vocab_size}",
                f"model.max_length={small.model.max_length}",
                f"model.max_response_tokens={small.model.max_response_tokens}",
            ],
            "train": [
                f"train.batch_size={small.train.batch_size}",
                f"train.lr={small.train.lr}",
                f"train.warmup_ratio={small.train.warmup_ratio}",
            ],
            "finetune_lr": "5.0e-4",
        }
    # minilm: all-MiniLM-L6-v2 warm-started (cpu: half the steps at twice the batch, the same examples)
    return {
        "lora": "lora/minilm",
        "finetune": "finetune/minilm",
        "steps": prof.minilm_steps,
        "shape": [
            "model.tokenizer.truecase=false",  # ConvAI2 is lowercase
            "model.max_length=128",
            "model.max_response_tokens=48",
        ],
        "train": [
            f"train.batch_size={prof.minilm_batch}",
            "train.lr=3.0e-4",
            "train.warmup_ratio=0.05",
            *prof.train,
        ],
        "finetune_lr": "1.0e-4",
    }


def _score(
    files: dict[str, Path],
    ppl: dict[str, dict[str, float]],
    ref: str,
    metrics: list[str],
    embedder: str | None,
) -> dict[str, Any]:
    """Macro metrics per system, paired differences against REF (user-bootstrap), per-user ppl
    differences and the share of users each system helps."""
    import random

    from personadlg.metrics.compare import compare_files
    from personadlg.metrics.evaluate import evaluate_file
    from personadlg.metrics.options import EvalOptions

    opts = EvalOptions(bootstrap=1000, embedder=embedder)
    rows: dict[str, Any] = {}
    per_user: dict[str, dict[str, dict[str, float]]] = {}
    for name, path in files.items():
        rep = evaluate_file(path, metrics=metrics, opts=opts, by="user")
        per_user[name] = rep["by_user"]
        gens = [json.loads(x)["generation"] for x in path.read_text().splitlines() if x]
        rows[name] = {
            "overall": {m: v["value"] for m, v in rep["metrics"].items()},
            "macro": rep["macro"],
            "ppl_macro": sum(ppl[name].values()) / len(ppl[name]),
            "distinct": len(set(gens)) / max(1, len(gens)),
        }
    comp = compare_files(
        [files[ref], *[p for n, p in files.items() if n != ref]],
        metrics=metrics,
        opts=opts,
        by="user",
    )
    macro_vs = comp["comparisons"].get("macro_vs_base", {})
    users = sorted(ppl[ref])
    helped: dict[str, Any] = {}
    for name in files:
        if name == ref:
            continue
        diffs = [ppl[name][u] - ppl[ref][u] for u in users]
        rng = random.Random(0)
        boots = sorted(
            sum(diffs[rng.randrange(len(diffs))] for _ in diffs) / len(diffs) for _ in range(1000)
        )
        emb = [
            per_user[name][u].get("emb-sim", math.nan) - per_user[ref][u].get("emb-sim", math.nan)
            for u in users
            if u in per_user[name] and u in per_user[ref]
        ]
        helped[name] = {
            "ppl_diff": sum(diffs) / len(diffs),
            "ppl_diff_ci95": [boots[24], boots[974]],
            "share_lower_ppl": sum(x < 0 for x in diffs) / len(diffs),
            "share_higher_emb_sim": (sum(x > 0 for x in emb) / len(emb)) if embedder else None,
        }
    return {
        "rows": rows,
        "macro_vs_base_profile": {
            name: macro_vs.get(str(p)) for name, p in files.items() if name != ref
        },
        "per_user_vs_base_profile": helped,
    }


def _run_arm(
    arm: str,
    d: Path,
    tr: Path,
    *,
    prof: Profile,
    embedder: str | None,
    metrics: list[str],
) -> dict[str, Any]:
    from personadlg.config import load_recipe
    from personadlg.generation.generate import generate_file
    from personadlg.training.trainer import train

    spec = _arm_overrides(arm, tr, prof)
    d.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"steps": spec["steps"]}
    shape = [
        *spec["shape"],
        "model.profile_template={persona: true}",
        *spec["train"],
        "train.eval_every=0",
    ]
    users_train = d.parent / "users-train.jsonl"
    run_dir = d / "lora"
    t0 = time.perf_counter()
    res = train(
        load_recipe(
            spec["lora"],
            [
                *shape,
                f"data.train={tr}",
                "data.valid=null",
                "data.valid_fraction=0.02",
                f"model.users_data={users_train}",
                "model.min_examples=8",
                f"model.stage_train={{base: {{max_steps: {spec['steps']}}}, users: {{epochs: {prof.adapter_epochs}, lr: 2.0e-3, warmup_ratio: 0.0, early_stopping_patience: 2, log_every: 5}}}}",
                f"train.output_dir={run_dir}",
            ],
        )
    )
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    base_res, users_res = res.stages
    index = json.loads((run_dir / "adapters" / "index.json").read_text())["users"]
    results["train"] = {
        "base_seconds": base_res.seconds,
        "base_valid": base_res.last_valid,
        "users_seconds": users_res.seconds,
        "users_summary": users_res.last_valid,
        "total_seconds": time.perf_counter() - t0,
    }
    secs = [e["seconds"] for e in index.values()]
    sizes = [e["size_bytes"] for e in index.values()]
    results["cost"] = {
        "adapters": len(index),
        "seconds_per_adapter_mean": sum(secs) / len(secs),
        "seconds_per_adapter_max": max(secs),
        "adapter_kib": sizes[0] / 1024,
        "steps_per_adapter_mean": sum(e["steps"] for e in index.values()) / len(index),
        "peak_rss_mb_whole_run": rss_mb,
    }
    base_ckpt = run_dir / "stages" / "1-base" / "final"
    # finetune: the base trained further on all users' training turns together
    start = (
        [
            f"model.init_from={run_dir / 'stages' / '1-base'}",
            "model.tokenizer.train=false",
            f"model.tokenizer.path={base_ckpt}",
        ]
        if arm == "scratch"
        else [f"model.backbone={base_ckpt}"]
    )
    ft = train(
        load_recipe(
            spec["finetune"],
            [
                *spec["shape"],
                "model.persona_in_prompt=false",
                "model.profile_in_prompt=true",
                "model.profile_template={persona: true}",
                *start,
                f"data.train={users_train}",
                "data.valid=null",
                "data.valid_fraction=0",
                "train.epochs=3",
                *spec["train"],
                f"train.lr={spec['finetune_lr']}",
                f"train.max_steps={prof.finetune_users_steps}",
                "train.eval_every=0",
                f"train.output_dir={d / 'finetune-users'}",
            ],
        )
    )
    results["train"]["finetune_users_seconds"] = ft.seconds
    test, test_np = d.parent / "users-test.jsonl", d.parent / "users-test-noprofile.jsonl"
    systems = {
        "base (no profile)": (base_ckpt, test_np, False),
        "base + profile": (base_ckpt, test, False),
        "base + profile + adapter": (run_dir / "final", test, True),
        "finetune on all users": (ft.final_dir, test, False),
    }
    ppl = {
        name: _per_user_ppl(ckpt, inputs, adapters=adapters)
        for name, (ckpt, inputs, adapters) in systems.items()
    }
    results["decodings"] = {}
    ref = "base + profile"
    for dec_name, decoding in DECODINGS.items():
        files: dict[str, Path] = {}
        for i, (name, (ckpt, inputs, _)) in enumerate(systems.items()):
            out = d / f"gen-{dec_name}-{i}.jsonl"
            generate_file(ckpt, inputs, out, overrides=[*decoding, f"batch_size={prof.gen_batch}"])
            files[name] = out
        results["decodings"][dec_name] = _score(files, ppl, ref, metrics, embedder)
        results["test_turns"] = sum(1 for x in files[ref].read_text().splitlines() if x)
    results["users"] = len(ppl[ref])
    results["throughput"] = _throughput(
        run_dir / "final", test, (1, 4) if prof.name == "tiny" else (1, 4, 16, 64)
    )
    return results


ARMS = ("scratch", "minilm")


def run(quick: bool = False) -> dict[str, Any]:
    """Both arms (`PDLG_BENCH_ARMS=scratch|minilm` picks one): a base from scratch (`codebook/small`'s
    GPT-2, 1,200 steps of batch 8) and all-MiniLM-L6-v2 warm-started (600 steps of batch 16)."""
    from personadlg.data.convert import convert
    from personadlg.data.formats import FormatOptions
    from personadlg.models.loading import bundled_dir

    valid_txt = SHARED / "convai2" / "valid_self_original_no_cands.txt"
    train_txt = SHARED / "rcdg" / "per-train.txt"
    if not valid_txt.is_file() or not train_txt.is_file():
        return {"skipped": f"{valid_txt} or {train_txt} is not present"}
    embedder = EMBEDDER if bundled_dir(EMBEDDER) else None
    metrics = [m for m in METRICS if m != "emb-sim" or embedder]
    arms = [a for a in os.environ.get("PDLG_BENCH_ARMS", ",".join(ARMS)).split(",") if a]
    if not embedder and "minilm" in arms:
        arms.remove("minilm")
    prof = PROFILES["tiny"] if quick else current()
    results: dict[str, Any] = {
        "profile": prof.name,
        "embedder": embedder or "not installed",
        "arms": {},
    }
    keep = os.environ.get("PDLG_BENCH_KEEP_DIR")  # keep the runs there (else a temporary dir)
    with tempfile.TemporaryDirectory(prefix="pdlg-bench-users-") as tmp:
        d = Path(keep or tmp)
        d.mkdir(parents=True, exist_ok=True)
        tr, va = d / "train.jsonl", d / "valid.jsonl"
        convert(train_txt, tr, fmt="rcdg", options=FormatOptions())
        convert(valid_txt, va, fmt="parlai")
        if prof.max_train_examples:
            kept = tr.read_text(encoding="utf-8").splitlines()[: prof.max_train_examples]
            tr.write_text("\n".join(kept) + "\n", encoding="utf-8")
        results["data"] = _users_split(va, d, max_users=8 if prof.name == "tiny" else None)
        for arm in arms:
            results["arms"][arm] = _run_arm(
                arm, d / arm, tr, prof=prof, embedder=embedder, metrics=metrics
            )
    return results


def _fmt(v: Any, spec: str = ".2f") -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def render(results: dict) -> list[tuple[str, list[str], list[list[object]]]]:
    if "skipped" in results:
        return [("users (skipped)", ["reason"], [[results["skipped"]]])]
    arms = results["arms"]
    metrics = [
        m
        for m in METRICS
        if any(
            m in r["macro"]
            for a in arms.values()
            for dd in a["decodings"].values()
            for r in dd["rows"].values()
        )
    ]
    out = []
    some: dict[str, Any] = next(iter(arms.values()), {})
    for dec in DECODINGS:
        rows = []
        diff_rows = []
        for arm, a in arms.items():
            dd = a["decodings"][dec]
            for name, r in dd["rows"].items():
                cells = [f"{arm}: {name}", _fmt(r["ppl_macro"])]
                for m in metrics:
                    mac = r["macro"].get(m) or {}
                    cells.append(
                        f"{_fmt(mac.get('value'))} [{_fmt(mac.get('low'))}, {_fmt(mac.get('high'))}]"
                    )
                cells.append(f"{100 * r.get('distinct', float('nan')):.0f}%")
                rows.append(cells)
            for name, h in dd["per_user_vs_base_profile"].items():
                mv = (dd["macro_vs_base_profile"] or {}).get(name) or {}
                cells = [
                    f"{arm}: {name}",
                    f"{_fmt(h['ppl_diff'])} [{_fmt(h['ppl_diff_ci95'][0])}, {_fmt(h['ppl_diff_ci95'][1])}]",
                    f"{100 * h['share_lower_ppl']:.0f}%",
                    f"{100 * h['share_higher_emb_sim']:.0f}%"
                    if h["share_higher_emb_sim"] is not None
                    else "-",
                ]
                for m in metrics:
                    x = mv.get(m) or {}
                    ci = x.get("ci95") or [None, None]
                    cells.append(
                        f"{_fmt(x.get('diff'), '+.2f')} [{_fmt(ci[0], '+.2f')}, {_fmt(ci[1], '+.2f')}]"
                        if x
                        else "-"
                    )
                diff_rows.append(cells)
        out.append(
            (
                f"ConvAI2 recurring personas, {dec}: {some.get('users')} users, "
                f"{some.get('test_turns')} test turns (macro over users, 95% user-bootstrap); base "
                "steps: " + ", ".join(f"{arm} {a['steps']}" for arm, a in arms.items()),
                ["system", "ppl (macro)", *metrics, "distinct gens"],
                rows,
            )
        )
        out.append(
            (
                f"{dec}: paired differences against base + profile of the same arm (macro over "
                "users, 95% paired user-bootstrap)",
                [
                    "system",
                    "Δ ppl",
                    "users lower ppl",
                    "users higher emb-sim",
                    *[f"Δ {m}" for m in metrics],
                ],
                diff_rows,
            )
        )
    out.append(
        (
            "training and adapter cost (CPU)",
            [
                "arm",
                "base s",
                "adapters",
                "s / adapter (mean, max)",
                "steps / adapter",
                "adapter size",
                "peak RSS (whole run)",
            ],
            [
                [
                    arm,
                    f"{a['train']['base_seconds']:.0f}",
                    (c := a["cost"])["adapters"],
                    f"{c['seconds_per_adapter_mean']:.2f}, {c['seconds_per_adapter_max']:.2f}",
                    f"{c['steps_per_adapter_mean']:.1f}",
                    f"{c['adapter_kib']:.0f} KiB",
                    f"{c['peak_rss_mb_whole_run']:.0f} MB",
                ]
                for arm, a in arms.items()
            ],
        )
    )
    out.append(
        (
            "generation tokens/s, 64 rows × 32 tokens: one mixed batch vs one batch per user",
            ["arm", "distinct users", "mixed batch", "per-user batches", "ratio"],
            [
                [
                    arm,
                    k,
                    f"{v['mixed_tokens_per_s']:.0f}",
                    f"{v['per_user_batches_tokens_per_s']:.0f}",
                    f"{v['mixed_tokens_per_s'] / v['per_user_batches_tokens_per_s']:.2f}",
                ]
                for arm, a in arms.items()
                for k, v in a["throughput"].items()
            ],
        )
    )
    return out
