"""Dynamic batching: requests to one model that arrive within a short window are generated together.

Each model has one `Batcher`: an asyncio queue and a loop that takes the first waiting request,
collects the ones arriving within `window_s` of it (or already queued) up to `max_batch`
examples, and hands them to `model.generate` in a worker thread — one call at a time per model,
so the model is never used from two threads at once. A request is a *job* of n examples (its
choices). Jobs whose decoding settings differ go into separate calls of the same round (one
`GenerateConfig` per call); a round takes whole requests only (one that would overflow it leads
the next round), and only a request with more than `max_batch` choices is split over calls.

Batching never changes a reply: every example has its own seed and samples from its own
generator (`models/decoding.py`), lora routes each row to its own adapter, and methods that
solve a stage jointly over their batch (cvae's adaptive ODE, `hook(model, "chunk_size")`) get one
request per call (`joint`). A failing call with several requests is retried one request at a
time, so only the bad request fails. Generation runs in a daemon thread, and `abandon` answers
every waiting request with an error at once (a server whose shutdown timeout passed), so a long
generation never holds the process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from personadlg.config import GenerateConfig
from personadlg.data.schema import Example
from personadlg.models.base import Generations
from personadlg.serving.protocol import APIError
from personadlg.serving.threads import in_daemon_thread

logger = logging.getLogger(__name__)

GenerateFn = Callable[
    [list[Example], GenerateConfig, list[int], list["dict[str, str] | None"]], Generations
]
"""`model.generate` as (examples, decoding, seeds, targets) → Generations."""


@dataclass
class JobResult:
    """A job's texts and records, what its call recorded, and the size of the call that served it."""

    texts: list[str]
    records: list[dict[str, Any]]
    shared: dict[str, Any]
    batch: dict[str, int]


@dataclass(eq=False)
class Job:
    """One request: its examples (one per choice), their seeds and targets, and its decoding."""

    examples: list[Example]
    seeds: list[int]
    targets: list[dict[str, str] | None]
    decoding: GenerateConfig
    key: Hashable
    future: asyncio.Future[JobResult]
    arrived: float = 0.0
    texts: list[str | None] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    shared: dict[str, Any] = field(default_factory=dict)
    batch: dict[str, int] = field(default_factory=lambda: {"requests": 0, "examples": 0})

    def __post_init__(self) -> None:
        self.texts = [None] * len(self.examples)
        self.records = [{} for _ in self.examples]

    @property
    def n(self) -> int:
        return len(self.examples)


@dataclass(eq=False)
class Part:
    """Examples START:STOP of a job, inside one call."""

    job: Job
    start: int
    stop: int


def plan_calls(jobs: Sequence[Job], *, max_batch: int, joint: bool = False) -> list[list[Part]]:
    """JOBS as generate calls: grouped by decoding key (in arrival order), packed into calls of at
    most MAX_BATCH examples (a job may be split); with JOINT, one job per call, never split."""
    groups: dict[Hashable, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.key, []).append(job)
    calls: list[list[Part]] = []
    for group in groups.values():
        if joint:
            calls += [[Part(job, 0, job.n)] for job in group]
            continue
        current: list[Part] = []
        size = 0
        for job in group:
            start = 0
            while start < job.n:
                take = min(job.n - start, max_batch - size)
                current.append(Part(job, start, start + take))
                size += take
                start += take
                if size >= max_batch:
                    calls.append(current)
                    current, size = [], 0
        if current:
            calls.append(current)
    return calls


@dataclass
class BatchStats:
    """What the batcher did: calls, requests and examples per call, retries and failures."""

    calls: int = 0
    requests: int = 0
    examples: int = 0
    max_requests_per_call: int = 0
    max_examples_per_call: int = 0
    requests_per_call: Counter[int] = field(default_factory=Counter)
    retries: int = 0
    failed_requests: int = 0
    busy_seconds: float = 0.0

    def record(self, requests: int, examples: int, seconds: float) -> None:
        self.calls += 1
        self.requests += requests
        self.examples += examples
        self.max_requests_per_call = max(self.max_requests_per_call, requests)
        self.max_examples_per_call = max(self.max_examples_per_call, examples)
        self.requests_per_call[requests] += 1
        self.busy_seconds += seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "requests": self.requests,
            "examples": self.examples,
            "mean_requests_per_call": round(self.requests / self.calls, 3) if self.calls else 0.0,
            "max_requests_per_call": self.max_requests_per_call,
            "max_examples_per_call": self.max_examples_per_call,
            "requests_per_call": {str(k): v for k, v in sorted(self.requests_per_call.items())},
            "retries": self.retries,
            "failed_requests": self.failed_requests,
            "busy_seconds": round(self.busy_seconds, 3),
        }


class Batcher:
    """The batching queue of one model (see the module docstring)."""

    def __init__(
        self,
        name: str,
        generate: GenerateFn,
        *,
        window_s: float = 0.01,
        max_batch: int = 32,
        joint: bool = False,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.name, self.generate = name, generate
        self.window_s, self.max_batch, self.joint = max(window_s, 0.0), max_batch, joint
        self.stats = BatchStats()
        self._queue: asyncio.Queue[Job | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._waiting: set[Job] = set()
        """Jobs submitted and not answered yet (queued or generating)."""

    def start(self) -> None:
        """Start the loop on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"batcher-{self.name}"
        )

    async def submit(
        self,
        examples: list[Example],
        *,
        seeds: list[int],
        targets: list[dict[str, str] | None],
        decoding: GenerateConfig,
        key: Hashable,
    ) -> JobResult:
        """Queue one request and wait for its generations."""
        if self._closing:
            raise APIError(
                503, "the server is shutting down", type="server_error", code="shutting_down"
            )
        loop = asyncio.get_running_loop()
        job = Job(examples, seeds, targets, decoding, key, loop.create_future(), loop.time())
        self._waiting.add(job)
        job.future.add_done_callback(lambda _: self._waiting.discard(job))
        self._queue.put_nowait(job)
        return await job.future

    @property
    def waiting(self) -> int:
        """Requests submitted and not answered yet."""
        return len(self._waiting)

    def abandon(self, err: BaseException) -> int:
        """Stop now: every waiting request fails with ERR (queued or generating; a generation
        under way runs on in its thread, unheard), the loop ends. Returns how many were failed."""
        self._closing = True
        failed = list(self._waiting)
        for job in failed:
            _fail(job, err)
        if self._task is not None:
            self._task.cancel()
        return len(failed)

    async def close(self) -> None:
        """Refuse new requests, finish the queued ones, stop the loop."""
        if self._closing:
            return
        self._closing = True
        self._queue.put_nowait(None)
        if self._task is not None:
            await asyncio.wait({self._task})  # returns also when `abandon` cancelled it

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        carry: Job | None = None  # a job that did not fit the last round: the next round's first
        while True:
            first = carry if carry is not None else await self._queue.get()
            carry = None
            if first is None:
                return
            jobs, size, last = [first], first.n, False
            deadline = first.arrived + self.window_s
            while size < self.max_batch:
                try:
                    job = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                if job is None:
                    last = True
                    break
                if size + job.n > self.max_batch:  # whole requests only: it leads the next round
                    carry = job
                    break
                jobs.append(job)
                size += job.n
            try:
                await self._round(jobs)
            except Exception as err:  # a bug here must not hang the waiting requests
                logger.exception("%s: batching round failed", self.name)
                for job in jobs:
                    _fail(job, err)
            if last:
                if carry is not None:
                    await self._round([carry])
                return

    async def _round(self, jobs: list[Job]) -> None:
        live = [j for j in jobs if not j.future.done()]  # a client that went away is skipped
        for parts in plan_calls(live, max_batch=self.max_batch, joint=self.joint):
            await self._call(parts, retry=True)

    async def _call(self, parts: list[Part], *, retry: bool) -> None:
        parts = [p for p in parts if not p.job.future.done()]
        if not parts:
            return
        examples = [ex for p in parts for ex in p.job.examples[p.start : p.stop]]
        seeds = [s for p in parts for s in p.job.seeds[p.start : p.stop]]
        targets = [t for p in parts for t in p.job.targets[p.start : p.stop]]
        jobs = list(dict.fromkeys(p.job for p in parts))
        started = time.perf_counter()
        try:
            gens = await in_daemon_thread(
                self.generate,
                examples,
                parts[0].job.decoding,
                seeds,
                targets,
                name=f"personadlg-generate-{self.name}",
            )
            if len(gens.texts) != len(examples):
                raise RuntimeError(
                    f"generate returned {len(gens.texts)} texts for {len(examples)} examples"
                )
        except Exception as err:
            if retry and len(jobs) > 1:
                self.stats.retries += 1
                logger.warning(
                    "%s: a batch of %d requests failed (%s: %s); retrying them one by one",
                    self.name,
                    len(jobs),
                    type(err).__name__,
                    err,
                )
                for p in parts:
                    await self._call([p], retry=False)
                return
            for job in jobs:
                _fail(job, err)
            self.stats.failed_requests += len(jobs)
            return
        # a request split over calls (n > max_batch) counts once, in the call with its last part
        finished = sum(1 for p in parts if p.stop == p.job.n)
        self.stats.record(finished, len(examples), time.perf_counter() - started)
        records = gens.records or [{} for _ in examples]
        at = 0
        for p in parts:
            job = p.job
            for i in range(p.start, p.stop):
                job.texts[i] = gens.texts[at]
                job.records[i] = dict(records[at] or {})
                at += 1
            job.shared = job.shared or dict(gens.shared)
            if len(examples) >= job.batch["examples"]:
                job.batch = {"requests": len(jobs), "examples": len(examples)}
            if all(t is not None for t in job.texts) and not job.future.done():
                job.future.set_result(
                    JobResult([str(t) for t in job.texts], job.records, job.shared, job.batch)
                )


def _fail(job: Job, err: BaseException) -> None:
    if not job.future.done():
        job.future.set_exception(err)
