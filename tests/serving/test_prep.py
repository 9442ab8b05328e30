"""The prep worker: one thread, jobs in order of cost (then arrival), results and errors back on
the event loop, a cancelled request's job skipped."""

from __future__ import annotations

import asyncio
import threading

import pytest

from personadlg.serving.prep import PrepWorker


def test_cheaper_jobs_run_first_and_results_come_back():
    async def main() -> tuple[list[str], list[object]]:
        worker = PrepWorker()
        gate = threading.Event()
        ran: list[str] = []

        def job(name: str) -> str:
            ran.append(name)
            return name.upper()

        blocker = asyncio.ensure_future(worker.run(0, gate.wait, 10))
        await asyncio.sleep(0.05)  # the worker is inside gate.wait: the rest queue up
        jobs = [
            asyncio.ensure_future(worker.run(cost, job, name))
            for cost, name in [
                (4_000_000, "big"),
                (300, "small"),
                (4_000_000, "big2"),
                (10, "tiny"),
            ]
        ]
        await asyncio.sleep(0.05)
        gate.set()
        out = await asyncio.gather(blocker, *jobs)
        worker.stop()
        return ran, out

    ran, out = asyncio.run(main())
    assert ran == ["tiny", "small", "big", "big2"]  # by cost; equal costs in arrival order
    assert out == [True, "BIG", "SMALL", "BIG2", "TINY"]


def test_errors_come_back_and_a_cancelled_job_is_skipped():
    async def main() -> list[str]:
        worker = PrepWorker()
        gate = threading.Event()
        ran: list[str] = []

        def boom() -> None:
            raise ValueError("bad body")

        blocker = asyncio.ensure_future(worker.run(0, gate.wait, 10))
        await asyncio.sleep(0.05)
        gone = asyncio.ensure_future(worker.run(1, ran.append, "gone"))
        kept = asyncio.ensure_future(worker.run(2, ran.append, "kept"))
        await asyncio.sleep(0.05)
        gone.cancel()  # its client went away before the worker reached it
        gate.set()
        await blocker
        await kept
        with pytest.raises(ValueError, match="bad body"):
            await worker.run(1, boom)
        worker.stop()
        return ran

    assert asyncio.run(main()) == ["kept"]
