"""The pieces without a model: planning calls, the window, max_batch, decoding groups, joint
methods, retries one by one, draining on close; model names, stop strings, seeds."""

from __future__ import annotations

import asyncio
import time

import pytest

from personadlg.config import GenerateConfig
from personadlg.data.schema import Example, Message
from personadlg.models.base import Generations
from personadlg.serving.batcher import Batcher, Job, plan_calls
from personadlg.serving.conditioning import cut_at_stop, decoding_key


def ex(text: str) -> Example:
    return Example(id=text, dialogue_id=text, context=[Message("user", text)])


def job(n: int, key: str = "a") -> Job:
    loop = asyncio.new_event_loop()
    try:
        return Job([ex("x")] * n, [0] * n, [None] * n, GenerateConfig(), key, loop.create_future())
    finally:
        loop.close()


def test_plan_groups_by_decoding_packs_and_splits():
    a1, a2, b1, a3 = job(3), job(2), job(1, "b"), job(4)
    calls = plan_calls([a1, a2, b1, a3], max_batch=4)
    shape = [[(p.job, p.start, p.stop) for p in c] for c in calls]
    assert shape == [
        [(a1, 0, 3), (a2, 0, 1)],
        [(a2, 1, 2), (a3, 0, 3)],
        [(a3, 3, 4)],
        [(b1, 0, 1)],
    ]
    assert all(sum(p.stop - p.start for p in c) <= 4 for c in calls)
    joint = plan_calls([a1, a2, b1], max_batch=1, joint=True)
    assert [[(p.job, p.start, p.stop) for p in c] for c in joint] == [
        [(a1, 0, 3)],
        [(a2, 0, 2)],
        [(b1, 0, 1)],
    ]


def test_decoding_key_ignores_seed_and_batch_size():
    assert decoding_key(GenerateConfig(seed=1, batch_size=2)) == decoding_key(
        GenerateConfig(seed=9)
    )
    assert decoding_key(GenerateConfig(max_new_tokens=5)) != decoding_key(GenerateConfig())
    assert decoding_key(GenerateConfig(do_sample=True)) != decoding_key(GenerateConfig())


def test_model_names_are_run_names_and_unique(tmp_path):
    from personadlg.errors import UsageError
    from personadlg.serving.conditioning import choice_seed, persona_sentences
    from personadlg.serving.registry import model_names, run_name

    assert run_name(tmp_path / "runs" / "finetune-tiny" / "final") == "finetune-tiny"
    assert run_name(tmp_path / "runs" / "x" / "step-000200") == "x/step-000200"
    assert model_names(["a/final", "b/final"]) == ["a", "b"]
    assert model_names(["a/final", "b/final"], ["one", "two"]) == ["one", "two"]
    with pytest.raises(UsageError, match="both be served as 'a'"):
        model_names(["a/final", "x/a"])
    with pytest.raises(UsageError, match="one per checkpoint"):
        model_names(["a/final", "b/final"], ["one"])
    assert choice_seed(5, 0) != choice_seed(5, 1) and choice_seed(5, 0) == choice_seed(5, 0)
    assert persona_sentences("I keep bees. I sell honey!\nno dogs") == [
        "I keep bees.",
        "I sell honey!",
        "no dogs",
    ]


def test_cut_at_stop():
    assert cut_at_stop("hello world. bye", [".", "wor"]) == ("hello ", True)
    assert cut_at_stop("hello", ["x"]) == ("hello", False)


class Recorder:
    """A fake generate: echoes each example's text with its seed; fails on 'bad'; logs calls."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[list[str]] = []
        self.delay = delay

    def __call__(self, examples, decoding, seeds, targets):
        texts = [e.context[-1].content for e in examples]
        self.calls.append(texts)
        time.sleep(self.delay)
        if "bad" in texts:
            raise ValueError("bad input")
        return Generations([f"{t}:{s}:{decoding.max_new_tokens}" for t, s in zip(texts, seeds)])


async def _submit(b: Batcher, text: str, n: int = 1, max_new_tokens: int = 8):
    d = GenerateConfig(max_new_tokens=max_new_tokens)
    return await b.submit(
        [ex(text)] * n, seeds=list(range(n)), targets=[None] * n, decoding=d, key=decoding_key(d)
    )


def test_requests_in_one_window_share_calls_and_results_are_their_own():
    async def main():
        rec = Recorder()
        b = Batcher("m", rec, window_s=0.05, max_batch=4)
        b.start()
        results = await asyncio.gather(
            _submit(b, "a"),
            _submit(b, "b", n=2),
            _submit(b, "c", max_new_tokens=3),
            _submit(b, "d"),
            _submit(b, "e"),
        )
        await b.close()
        return rec, b, results

    rec, b, results = asyncio.run(main())
    assert [r.texts for r in results] == [
        ["a:0:8"],
        ["b:0:8", "b:1:8"],
        ["c:0:3"],
        ["d:0:8"],
        ["e:0:8"],
    ]
    # a round takes up to max_batch examples; the max_new_tokens=3 request gets its own call
    assert rec.calls == [["a", "b", "b"], ["c"], ["d", "e"]]
    assert results[0].batch == {"requests": 2, "examples": 3}
    assert b.stats.calls == 3 and b.stats.max_requests_per_call == 2 and b.stats.requests == 5


def test_a_round_takes_whole_requests_and_counts_each_once():
    async def main():
        rec = Recorder()
        b = Batcher("m", rec, window_s=0.05, max_batch=4)
        b.start()
        results = await asyncio.gather(
            _submit(b, "a", n=3), _submit(b, "b", n=2), _submit(b, "c", n=2)
        )
        await b.close()
        return rec, b, results

    rec, b, results = asyncio.run(main())
    # b would overflow a's round (3 + 2 > 4): it is not split but leads the next round, with c
    assert rec.calls == [["a", "a", "a"], ["b", "b", "c", "c"]]
    assert [r.texts for r in results] == [
        ["a:0:8", "a:1:8", "a:2:8"],
        ["b:0:8", "b:1:8"],
        ["c:0:8", "c:1:8"],
    ]
    assert b.stats.requests == 3 and b.stats.calls == 2


def test_a_request_larger_than_max_batch_is_split_and_reassembled():
    async def main():
        rec = Recorder()
        b = Batcher("m", rec, window_s=0.0, max_batch=2)
        b.start()
        out = await _submit(b, "a", n=5)
        await b.close()
        return rec, out, b.stats

    rec, out, stats = asyncio.run(main())
    assert rec.calls == [["a", "a"], ["a", "a"], ["a"]]
    assert out.texts == [f"a:{i}:8" for i in range(5)]
    assert stats.requests == 1 and stats.calls == 3  # one request, counted once


def test_a_failing_batch_is_retried_one_request_at_a_time():
    async def main():
        rec = Recorder()
        b = Batcher("m", rec, window_s=0.05, max_batch=8)
        b.start()
        out = await asyncio.gather(
            _submit(b, "a"), _submit(b, "bad"), _submit(b, "c"), return_exceptions=True
        )
        await b.close()
        return rec, b, out

    rec, b, (a, bad, c) = asyncio.run(main())
    assert a.texts == ["a:0:8"] and c.texts == ["c:0:8"]
    assert isinstance(bad, ValueError)
    assert rec.calls == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]
    assert b.stats.retries == 1 and b.stats.failed_requests == 1


def test_close_finishes_queued_requests_then_refuses():
    from personadlg.serving.protocol import APIError

    async def main():
        b = Batcher("m", Recorder(delay=0.05), window_s=0.0, max_batch=1)
        b.start()
        pending = [asyncio.ensure_future(_submit(b, t)) for t in "abc"]
        await asyncio.sleep(0.01)
        await b.close()
        assert all(p.done() for p in pending)
        with pytest.raises(APIError):
            await _submit(b, "late")
        return [p.result().texts[0] for p in pending]

    assert asyncio.run(main()) == ["a:0:8", "b:0:8", "c:0:8"]
