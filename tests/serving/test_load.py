"""A bounded load test: 32 concurrent async clients × 20 requests against the tiny finetune model
with batching on. No request fails, every reply equals the same request served alone, and
batches of several requests really formed."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2 as httpx
import openai

from tests.serving.conftest import FORCE, echo

CLIENTS, PER_CLIENT = 32, 20
TOPICS = [
    "bees",
    "honey",
    "the market",
    "rain",
    "my dog",
    "jazz",
    "paris",
    "hiking",
    "cooking",
    "books",
]


def templates() -> list[dict[str, Any]]:
    """40 distinct requests: greedy and seeded sampling, two max_tokens (separate sub-batches),
    one- and three-message contexts, some with a persona, some with n=2."""
    out = []
    for i in range(40):
        topic = TOPICS[i % len(TOPICS)]
        messages = [{"role": "user", "content": f"tell me about {topic}"}]
        if i % 3 == 0:
            messages = [
                {"role": "user", "content": "hello!"},
                {"role": "assistant", "content": "hi, how are you?"},
                *messages,
            ]
        body: dict[str, Any] = {
            "model": "ft",
            "messages": messages,
            "max_tokens": 8 if i % 2 else 12,
            "extra_body": {**FORCE, **({"persona": [f"i love {topic} ."]} if i % 4 == 1 else {})},
        }
        if i % 5 in (0, 1):
            body["temperature"] = 0
        else:
            body.update(temperature=0.9, top_p=0.95, seed=1000 + i)
        if i % 7 == 0:
            body["n"] = 2
        out.append(body)
    return out


def texts(response: Any) -> list[str]:
    return [c.message.content for c in response.choices]


def test_concurrent_clients_get_the_replies_they_would_get_alone(start_server, trained_tiny):
    server = start_server([trained_tiny], names=["ft"], batch_window_ms=10, max_batch=32)
    bodies = templates()
    client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    alone = []
    for body in bodies:
        r = client.chat.completions.create(**body)
        assert echo(r)["batch"]["requests"] == 1
        alone.append(texts(r))
    assert len({tuple(t) for t in alone}) > 20  # the requests really differ
    before = httpx.get(server.url + "/health").json()["batching"]["ft"]

    async def one_client(c: int) -> list[tuple[int, Any]]:
        aclient = openai.AsyncOpenAI(
            base_url=server.base_url, api_key="x", max_retries=0, timeout=120
        )
        got = []
        try:
            for j in range(PER_CLIENT):
                k = (c * PER_CLIENT + j * 7) % len(bodies)
                try:
                    got.append((k, texts(await aclient.chat.completions.create(**bodies[k]))))
                except Exception as err:  # counted, not raised: the test reports every failure
                    got.append((k, err))
        finally:
            await aclient.close()
        return got

    async def everyone() -> list[list[tuple[int, Any]]]:
        return await asyncio.gather(*(one_client(c) for c in range(CLIENTS)))

    results = [item for per_client in asyncio.run(everyone()) for item in per_client]
    failures = [(k, r) for k, r in results if isinstance(r, Exception)]
    assert len(results) == CLIENTS * PER_CLIENT and not failures, failures[:3]
    mismatched = [k for k, r in results if r != alone[k]]
    assert not mismatched, f"{len(mismatched)} replies differ from the same request alone"

    after = httpx.get(server.url + "/health").json()["batching"]["ft"]
    calls = after["calls"] - before["calls"]
    requests = after["requests"] - before["requests"]
    assert requests == CLIENTS * PER_CLIENT
    assert after["max_requests_per_call"] > 8 and requests / calls > 3, after
    assert after["failed_requests"] == 0 and after["retries"] == 0
    print(f"load: {requests} requests in {calls} calls; {after}")
