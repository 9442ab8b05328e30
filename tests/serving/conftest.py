"""Serving fixtures: tiny lora and cvae runs (trained once per session, few steps), real servers on
127.0.0.1 in background threads, and the real `openai` client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

FORCE = {"min_tokens": 6, "no_repeat_ngram_size": 1}
"""Tiny undertrained models often end at once or repeat a special token: at least 6 distinct tokens."""


@pytest.fixture(scope="session")
def lora_checkpoint(tmp_path_factory: pytest.TempPathFactory, small_data: dict[str, Path]) -> Path:
    """A tiny lora run (10 base steps, 4 steps per user for u-006 and u-007): its final/."""
    from personadlg.training.trainer import train
    from tests.models.test_lora import lora_recipe

    out = tmp_path_factory.mktemp("serve-lora") / "lora-tiny"
    train(
        lora_recipe(
            small_data,
            out,
            "model.stage_train={base: {max_steps: 10, eval_every: 100}, "
            "users: {max_steps: 4, lr: 0.01, early_stopping_patience: 0}}",
        )
    )
    return out / "final"


@pytest.fixture(scope="session")
def cvae_checkpoint(tmp_path_factory: pytest.TempPathFactory, small_data: dict[str, Path]) -> Path:
    """A tiny cvae run (12 steps): its final/."""
    from personadlg.training.trainer import train
    from tests.models.test_cvae import cvae_recipe

    out = tmp_path_factory.mktemp("serve-cvae") / "cvae-tiny"
    return train(cvae_recipe(small_data, out, "train.max_steps=12", "train.eval_every=6")).final_dir


def wait_ready(url: str, timeout: float = 120.0) -> dict[str, Any]:
    """Poll GET /health until 200; its body."""
    import httpx2 as httpx

    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(url + "/health", timeout=10)
        if r.status_code == 200:
            return r.json()
        if r.status_code == 500 or time.monotonic() > deadline:
            raise AssertionError(f"server not ready: {r.status_code} {r.text}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def start_server() -> Iterator[Callable[..., Any]]:
    """`start_server(checkpoints, ready=True, **create_app_kwargs)` → a RunningServer, stopped at
    the end of the module."""
    from personadlg.serving.app import create_app
    from personadlg.serving.server import serve_in_thread

    running: list[Any] = []

    def start(checkpoints: list[Path], *, ready: bool = True, **kwargs: Any) -> Any:
        server = serve_in_thread(create_app(checkpoints, **kwargs))
        running.append(server)
        if ready:
            wait_ready(server.url)
        return server

    yield start
    for server in running:
        server.stop()


@pytest.fixture(scope="session")
def server(trained_tiny, lora_checkpoint, cvae_checkpoint):
    """One server with the three tiny models, named ft, lora and cvae (shared by the modules)."""
    from personadlg.serving.app import create_app
    from personadlg.serving.server import serve_in_thread

    app = create_app(
        [trained_tiny, lora_checkpoint, cvae_checkpoint],
        names=["ft", "lora", "cvae"],
        batch_window_ms=20,
    )
    with serve_in_thread(app) as running:
        wait_ready(running.url)
        yield running


@pytest.fixture(scope="session")
def client(server):
    import openai

    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def loaded_models(trained_tiny, lora_checkpoint, cvae_checkpoint) -> dict[str, tuple[Any, Any]]:
    """The same checkpoints loaded in-process (config, model), for replies computed without HTTP."""
    from personadlg.training.checkpoint import load_checkpoint

    return {
        "ft": load_checkpoint(trained_tiny),
        "lora": load_checkpoint(lora_checkpoint),
        "cvae": load_checkpoint(cvae_checkpoint),
    }


def echo(response: Any) -> dict[str, Any]:
    """The `personadlg` object of an openai client response or chunk."""
    return dict((response.model_extra or {})["personadlg"])
