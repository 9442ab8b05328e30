"""Reading a generation file into the columns `eval` scores."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from personadlg.data.attributes import target_key
from personadlg.data.formats import FormatOptions, check_table_options, iter_any_examples
from personadlg.data.jsonl import Bad, check_nonempty
from personadlg.errors import DataError
from personadlg.metrics.base import EvalData


def read_generations(
    path: str | Path, *, fmt: str = "auto", opts: FormatOptions | None = None
) -> tuple[EvalData, str]:
    """EvalData and the input's sha256 from a generation file: example records with `generation`
    (as `generate` writes), or any readable format with a generation per record (a table's
    `--column generation=COL`)."""
    p = Path(path)
    check_nonempty(p)
    check_table_options([p], fmt, opts)
    gens, refs, personas, contexts, targets, ids = [], [], [], [], [], []
    users: list[str | None] = []
    profiles: list[dict[str, Any]] = []
    for item in iter_any_examples(p, fmt=fmt, opts=opts):
        if isinstance(item, Bad):
            raise item.error
        line, ex = item
        if ex.generation is None:
            raise DataError(
                field="generation",
                expected="a string (a generation record, as written by personadlg generate)",
                got_text="nothing (missing)",
            ).at(path=str(p), line=line)
        gens.append(ex.generation)
        refs.append(ex.reference if ex.reference and ex.reference.strip() else None)
        personas.append(ex.persona)
        contexts.append([m.to_dict() for m in ex.context])
        targets.append(ex.target_attributes if ex.target_attributes is not None else ex.attributes)
        ids.append(ex.id + ("|" + target_key(ex.target_attributes) if ex.target_attributes else ""))
        users.append(ex.user_id)
        profiles.append(dict(ex.profile))
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    return EvalData(
        generations=gens,
        references=refs,
        personas=personas,
        contexts=contexts,
        targets=targets,
        ids=ids,
        users=users,
        profiles=profiles,
    ), digest
