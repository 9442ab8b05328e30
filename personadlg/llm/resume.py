"""Resumable runs: the journal in a cache directory, the jobs it has not answered, one `run_jobs`
over them. The sequence every user of the engine shares (synth, profile infer, method api, the
judge):

    with resume(jobs, cache, what="profile infer", lock=exclusive_lock, retry_failed=False) as run:
        run.send(cfg, accept=accept)       # nothing is sent when every job is answered
        results = run.journal.final(j.key for j in jobs)

Jobs already `ok` are never requested again; `failed` ones only with RETRY_FAILED.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic

from personadlg.llm.client import Reply
from personadlg.llm.config import ApiRecipe
from personadlg.llm.job import J
from personadlg.llm.journal import JOURNAL, Journal, Locker
from personadlg.llm.runner import Progress, Stats, run_jobs


def pending(jobs: Sequence[J], journal: Journal, *, retry_failed: bool) -> list[J]:
    """The jobs still to request: never requested, or failed when RETRY_FAILED."""
    wanted = {"failed"} if retry_failed else set()
    return [
        j for j in jobs if journal.state.get(j.key) is None or journal.state.get(j.key) in wanted
    ]


def still_to_send(
    jobs: Sequence[J], cache_dir: Path, *, retry_failed: bool, what: str, lock: Locker
) -> list[J]:
    """The jobs of JOBS the journal in CACHE_DIR has not answered (`pending`), for dry runs:
    creates nothing when there is no journal yet."""
    if not (cache_dir / JOURNAL).exists():
        return list(jobs)
    with Journal(cache_dir, what=what, lock=lock) as journal:
        return pending(jobs, journal, retry_failed=retry_failed)


@dataclass
class Resumed(Generic[J]):
    """An open journal, the jobs it has not answered (TODO) and the counters of this run."""

    journal: Journal
    todo: list[J]
    stats: Stats
    what: str

    def send(
        self,
        cfg: ApiRecipe,
        *,
        accept: Callable[[J, Reply, int], dict[str, Any]],
        failed_fields: Callable[[J], dict[str, Any]] | None = None,
        max_invalid: int | None = None,
        on_progress: Progress | None = None,
    ) -> None:
        """Request every job of TODO once through `run_jobs` (see there), journalling each result."""
        if not self.todo:
            return
        asyncio.run(
            run_jobs(
                cfg,
                iter(self.todo),
                self.journal,
                self.stats,
                accept=accept,
                what=self.what,
                failed_fields=failed_fields,
                max_invalid=max_invalid,
                on_progress=on_progress,
            )
        )


@contextmanager
def resume(
    jobs: Sequence[J],
    cache_dir: Path,
    *,
    what: str,
    lock: Locker,
    retry_failed: bool = False,
    skip: Callable[[J], bool] | None = None,
) -> Iterator[Resumed[J]]:
    """Open the journal in CACHE_DIR (held exclusively until the block ends) and find the jobs of
    JOBS still to request (`pending`, less those SKIP says are done elsewhere)."""
    with Journal(cache_dir, what=what, lock=lock) as journal:
        todo = [
            j
            for j in pending(jobs, journal, retry_failed=retry_failed)
            if skip is None or not skip(j)
        ]
        stats = Stats(total=len(jobs), already_done=len(jobs) - len(todo))
        yield Resumed(journal, todo, stats, what)
