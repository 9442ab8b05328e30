"""`personadlg stats`: counts and distributions of a dialogue or example file, streaming."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from personadlg.data.formats import FormatOptions, check_table_options, detect_format, iter_items
from personadlg.data.formats.native import iter_examples
from personadlg.data.jsonl import Bad, iter_json_lines
from personadlg.data.persona import persona_identity
from personadlg.data.schema import record_kind
from personadlg.data.unique import IdTracker


def summary(counts: Counter[int]) -> dict[str, float]:
    """min / mean / median / p90 / max of a histogram {value: count} (exact, constant memory)."""
    n = sum(counts.values())
    if n == 0:
        return {"n": 0}
    values = sorted(counts)
    total = sum(v * c for v, c in counts.items())

    def quantile(q: float) -> float:
        rank = q * (n - 1)
        lo_rank, hi_rank = int(rank), min(int(rank) + 1, n - 1)
        seen, lo, hi = 0, None, None
        for v in values:
            seen += counts[v]
            if lo is None and seen > lo_rank:
                lo = v
            if seen > hi_rank:
                hi = v
                break
        assert lo is not None and hi is not None
        return lo + (hi - lo) * (rank - int(rank))

    return {
        "n": n,
        "min": values[0],
        "mean": round(total / n, 2),
        "median": round(quantile(0.5), 2),
        "p90": round(quantile(0.9), 2),
        "max": values[-1],
    }


def _words(text: str) -> int:
    return len(text.split())


def file_kind(path: str | Path, fmt: str) -> str:
    """'example' for personadlg example files, else 'dialogue'."""
    if fmt not in ("auto", "jsonl") or Path(path).is_dir():
        return "dialogue"
    name = detect_format(path) if fmt == "auto" else fmt
    if name != "jsonl":
        return "dialogue"
    for item in iter_json_lines(path):
        if isinstance(item, Bad):
            return "dialogue"
        return record_kind(item[2]) or "dialogue"
    return "dialogue"


def dialogue_stats(
    path: str | Path,
    *,
    fmt: str = "auto",
    format_options: FormatOptions | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Statistics of a dialogue file in any supported format. Stops on the first bad record."""
    n = 0
    msgs: Counter[int] = Counter()
    a_msgs: Counter[int] = Counter()
    words: dict[str, Counter[int]] = {"user": Counter(), "assistant": Counter()}
    attrs: dict[str, Counter[str]] = {}
    unlabelled = 0
    users: Counter[str] = Counter()
    personas: Counter[frozenset[str]] = Counter()  # by identity: the set of normalised sentences
    persona_len: Counter[int] = Counter()
    topics: set[str] = set()
    profile_keys: Counter[str] = Counter()
    first_role: Counter[str] = Counter()
    ids = IdTracker()  # repeated ids are an error here as in convert, split and train
    check_table_options([Path(path)], fmt, format_options)
    for item in iter_items(path, fmt, format_options):
        if isinstance(item, Bad):
            raise item.error
        d = item.dialogue
        ids.add(d.id, item.path, item.line)
        n += 1
        msgs[len(d.messages)] += 1
        a_msgs[sum(1 for m in d.messages if m.role == "assistant")] += 1
        first_role[d.messages[0].role] += 1
        for m in d.messages:
            words[m.role][_words(m.content)] += 1
        if d.attributes:
            for k, v in d.attributes.items():
                attrs.setdefault(k, Counter())[v] += 1
        else:
            unlabelled += 1
        if d.user_id is not None:
            users[d.user_id] += 1
        ident = persona_identity(d.persona)
        if ident:
            personas[ident] += 1
            persona_len[len(ident)] += 1
        if d.topic:
            topics.add(d.topic)
        profile_keys.update(d.profile.keys())
        if on_progress and n % 1000 == 0:
            on_progress(n)
    ids.check()
    return {
        "file": str(path),
        "kind": "dialogues",
        "dialogues": n,
        "messages": sum(k * v for k, v in msgs.items()),
        "user_messages": sum(words["user"].values()),
        "assistant_messages": sum(words["assistant"].values()),
        "messages_per_dialogue": summary(msgs),
        "assistant_messages_per_dialogue": summary(a_msgs),
        "words_per_message": {
            "user": summary(words["user"]),
            "assistant": summary(words["assistant"]),
        },
        "first_speaker": dict(first_role),
        "attributes": {k: dict(sorted(v.items())) for k, v in sorted(attrs.items())},
        "unlabelled_dialogues": unlabelled,
        "users": {
            "count": len(users),
            "dialogues_without_user": n - sum(users.values()),
            "dialogues_per_user": summary(Counter(users.values())),
        },
        "personas": {
            "unique": len(personas),
            "unique_sentences": len(set().union(*personas)) if personas else 0,
            "dialogues_with_persona": sum(personas.values()),
            "sentences_per_persona": summary(persona_len),
            "dialogues_per_persona": summary(Counter(personas.values())),
        },
        "topics": len(topics),
        "profile_keys": dict(profile_keys.most_common()),
    }


def example_stats(
    path: str | Path, on_progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Statistics of an example (generation) file. Stops on the first bad record."""
    n = 0
    ctx: Counter[int] = Counter()
    ref_w: Counter[int] = Counter()
    gen_w: Counter[int] = Counter()
    dialogues: set[str] = set()
    targets: Counter[str] = Counter()
    methods: Counter[str] = Counter()
    with_gen = 0
    for item in iter_examples(path):
        if isinstance(item, Bad):
            raise item.error
        _, ex = item
        n += 1
        dialogues.add(ex.dialogue_id)
        ctx[len(ex.context)] += 1
        if ex.reference is not None:
            ref_w[_words(ex.reference)] += 1
        if ex.generation is not None:
            with_gen += 1
            gen_w[_words(ex.generation)] += 1
        if ex.target_attributes:
            targets[",".join(f"{k}={v}" for k, v in sorted(ex.target_attributes.items()))] += 1
        if ex.method:
            methods[ex.method] += 1
        if on_progress and n % 1000 == 0:
            on_progress(n)
    return {
        "file": str(path),
        "kind": "examples",
        "examples": n,
        "dialogues": len(dialogues),
        "with_generation": with_gen,
        "context_messages": summary(ctx),
        "words_per_reference": summary(ref_w),
        "words_per_generation": summary(gen_w),
        "target_attributes": dict(targets.most_common()),
        "methods": dict(methods),
    }


def stats(
    path: str | Path,
    *,
    fmt: str = "auto",
    format_options: FormatOptions | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Dialogue or example statistics, whichever PATH holds."""
    if file_kind(path, fmt) == "example":
        return example_stats(path, on_progress)
    return dialogue_stats(path, fmt=fmt, format_options=format_options, on_progress=on_progress)
