"""`create_app(...)`: trained persona models behind the OpenAI chat-completions API (FastAPI).

    GET  /health                 200 {"status": "ok", ...} once loaded; 503 {"status": "loading"} before
    GET  /v1/models              the loaded checkpoints (OpenAI list format + a `personadlg` object each)
    GET  /v1/models/{name}       one of them
    POST /v1/chat/completions    non-streaming, or `stream: true` (server-sent events)
    GET  /                       the static page of STATIC_DIR when it has an index.html

The server listens at once and loads the checkpoints in the background (their configs are read
first, so a bad path fails before listening); until every model is loaded `/health`, `/v1/models`
and chat requests answer 503. Errors are OpenAI's error JSON with the right status (400 naming
the field, 401, 404 with a did-you-mean, 413, 415, 500, 503); an error nothing else answered is a
500 of that shape too (`_LastResort`, which logs its traceback). With `api_key`, every `/v1`
route wants `Authorization: Bearer <api_key>`, checked before the body is read; `/health` and
the page stay open.

A chat request's cost is bounded before it reaches the model: the body's size (MAX_BODY_BYTES),
its number of messages (`max_messages`) and the history's characters (`prompt.cut_history`). The
event loop only moves bytes: parsing, validation, tokenising and prompt rendering run in one
worker thread (`ServerState.prep`, which also keeps the counting tokenizers single-threaded),
smallest body first (`prep.py`), so `/health` answers and SIGTERM is heard while a request is
prepared, and ordinary requests do not queue behind a flood of large bodies.

Stopping (SIGTERM, SIGINT, `RunningServer.stop`): no new connections; the requests in flight get
`shutdown_timeout` seconds to finish and be answered, then each one still queued or generating
is answered 503 `shutting_down` (`ServerState.begin_shutdown`) and the server exits; generation
runs in daemon threads, so one still under way does not hold the process.

Streaming: the reply is generated whole (in a batch with its neighbours), then sent as chunks of
about one word each in OpenAI's `chat.completion.chunk` format, ending with `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from personadlg import __version__
from personadlg.config import GenerateConfig
from personadlg.data.schema import Example
from personadlg.errors import PersonadlgError, UsageError
from personadlg.models.base import Generations, as_generations
from personadlg.models.decoding import decoding_dict
from personadlg.serving import conditioning
from personadlg.serving.batcher import Batcher, JobResult
from personadlg.serving.prep import PrepWorker
from personadlg.serving.prompt import (
    check_fits,
    count_completion,
    count_prompt,
    cut_history,
    history_chars,
)
from personadlg.serving.protocol import (
    DEFAULT_MAX_MESSAGES,
    MAX_BODY_BYTES,
    SSE_DONE,
    APIError,
    ChatCompletionRequest,
    check_content_type,
    chunk_bodies,
    completion_body,
    error_body,
    read_request,
    sse,
    validation_error,
)
from personadlg.serving.registry import (
    NOT_SERVED,
    ModelRegistry,
    ServedModel,
    model_names,
)
from personadlg.serving.threads import in_daemon_thread

logger = logging.getLogger(__name__)

DEFAULT_STATIC = Path(__file__).parent / "static"
"""Where `create_app` looks for the web page by default (served at `/` when it has index.html)."""
FINGERPRINT = f"personadlg-{__version__}"
DEFAULT_SHUTDOWN_TIMEOUT = 30.0
"""Seconds a stopping server waits for its requests in flight (`--shutdown-timeout`)."""

Loader = Callable[[Path, Any], Any]
"""(checkpoint directory, its config) → the loaded model."""


def default_loader(*, trust_remote_code: bool = False, allow_pickle: bool = False) -> Loader:
    """`load_model` under the user's loading opt-ins (`models/loading.py`)."""

    def load(path: Path, cfg: Any) -> Any:
        from personadlg.models.loading import load_policy
        from personadlg.training.checkpoint import load_model

        with load_policy(trust_remote_code=trust_remote_code, allow_pickle=allow_pickle):
            return load_model(path, cfg)

    return load


@dataclass
class ServerState:
    """Everything the routes share (`app.state.personadlg`)."""

    registry: ModelRegistry
    checkpoints: list[tuple[str, Path, Any]]
    batch_window_ms: float
    max_batch: int
    max_messages: int = DEFAULT_MAX_MESSAGES
    batchers: dict[str, Batcher] = field(default_factory=dict)
    prep: PrepWorker | None = None
    """The worker thread that parses and prepares requests, cheapest first (started with the app)."""
    started: float = field(default_factory=time.time)
    in_flight: int = 0
    served_requests: int = 0
    on_load_failed: list[Callable[[str], None]] = field(default_factory=list)
    """Called with the error when a checkpoint fails to load (`run_server` stops the server)."""
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    """Seconds the requests in flight get to finish once the server is told to stop."""
    stopping: asyncio.TimerHandle | None = None

    def begin_shutdown(self) -> None:
        """The server is stopping (on the event loop; `server.py` calls it): the requests in
        flight get SHUTDOWN_TIMEOUT seconds, then each one still waiting is answered 503."""
        if self.stopping is None:
            loop = asyncio.get_running_loop()
            when = (
                f"its shutdown timeout passed ({self.shutdown_timeout:g} s, "
                "`personadlg serve --shutdown-timeout`)"
            )
            self.stopping = loop.call_later(self.shutdown_timeout, self.abandon_requests, when)

    def abandon_requests(self, when: str = "it was told twice to stop") -> None:
        """Answer every request still queued or generating with 503 (`shutting_down`), saying
        WHEN the server gave up on it."""
        err = APIError(
            503,
            f"the server is stopping, and this request was still waiting when {when}",
            type="server_error",
            code="shutting_down",
        )
        failed = sum(b.abandon(err) for b in self.batchers.values())
        if failed:
            logger.warning("stopping: %d waiting request(s) answered 503 when %s", failed, when)


def create_app(
    checkpoints: Sequence[str | Path],
    *,
    names: Sequence[str] | None = None,
    batch_window_ms: float = 10.0,
    max_batch: int = 32,
    max_messages: int = DEFAULT_MAX_MESSAGES,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    api_key: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    loader: Loader | None = None,
    static_dir: str | Path | None = DEFAULT_STATIC,
) -> FastAPI:
    """The FastAPI app serving CHECKPOINTS (see the module docstring).

    NAMES: one model name per checkpoint (default: the run names). MAX_MESSAGES: the most
    messages a request may hold (400 above it). SHUTDOWN_TIMEOUT: seconds the requests in flight
    get to finish once the server is told to stop (then they are answered 503). API_KEY: the bearer token
    every `/v1` request must carry (None: no auth). LOADER: how a checkpoint's model is loaded
    (default `default_loader(...)` with the two opt-ins), called in a worker thread after the
    server starts listening. STATIC_DIR: a directory whose index.html and files are served at `/`
    (None: no page)."""
    from personadlg.training.checkpoint import checkpoint_dir, load_config

    if not checkpoints:
        raise UsageError("personadlg serve: give at least one checkpoint directory")
    if max_batch < 1:
        raise UsageError(f"--max-batch: expected at least 1, got {max_batch}")
    if batch_window_ms < 0:
        raise UsageError(f"--batch-window-ms: expected >= 0, got {batch_window_ms}")
    if max_messages < 1:
        raise UsageError(f"--max-messages: expected at least 1, got {max_messages}")
    if not 0 <= shutdown_timeout < float("inf"):
        raise UsageError(f"--shutdown-timeout: expected seconds >= 0, got {shutdown_timeout}")
    paths = [checkpoint_dir(c).resolve() for c in checkpoints]
    cfgs = [load_config(p) for p in paths]
    for p, cfg in zip(paths, cfgs):
        if cfg.method in NOT_SERVED:
            raise UsageError(f"{p}: {NOT_SERVED[cfg.method]}")
    served_names = model_names(paths, names)
    state = ServerState(
        registry=ModelRegistry(list(served_names)),
        checkpoints=list(zip(served_names, paths, cfgs)),
        batch_window_ms=batch_window_ms,
        max_batch=max_batch,
        max_messages=max_messages,
        shutdown_timeout=shutdown_timeout,
    )
    load = loader or default_loader(trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.prep = PrepWorker()
        task = asyncio.create_task(_load_all(state, load), name="personadlg-load")
        try:
            yield
        finally:
            if not task.done():
                task.cancel()
            for b in list(state.batchers.values()):
                await b.close()  # finish whatever is queued
            state.prep.stop()

    app = FastAPI(
        title="personadlg serve",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.personadlg = state
    _install_error_handlers(app)
    app.add_middleware(_LastResort)
    auth = _auth(api_key)

    @app.get("/health")
    async def health() -> JSONResponse:
        reg = state.registry
        if reg.status == "failed":
            return JSONResponse({"status": "failed", "error": reg.error}, status_code=500)
        if reg.status != "ok":
            return JSONResponse(
                {"status": "loading", "models": list(reg.models), "loading": reg.pending},
                status_code=503,
                headers={"Retry-After": "1"},
            )
        return JSONResponse(
            {
                "status": "ok",
                "version": __version__,
                "models": list(reg.names),
                "uptime_seconds": round(time.time() - state.started, 1),
                "in_flight": state.in_flight,
                "requests": state.served_requests,
                "settings": {
                    "batch_window_ms": state.batch_window_ms,
                    "max_batch": state.max_batch,
                    "max_messages": state.max_messages,
                    "shutdown_timeout": state.shutdown_timeout,
                },
                "batching": {n: b.stats.as_dict() for n, b in state.batchers.items()},
            }
        )

    @app.get("/v1/models", dependencies=[Depends(auth)])
    async def list_models() -> dict[str, Any]:
        reg = state.registry
        reg.check_ready()
        return {"object": "list", "data": [reg.models[n].metadata() for n in reg.names]}

    @app.get("/v1/models/{name:path}", dependencies=[Depends(auth)])
    async def get_model(name: str) -> dict[str, Any]:
        return state.registry.get(name).metadata()

    @app.post("/v1/chat/completions", dependencies=[Depends(auth)])
    async def chat_completions(request: Request) -> Response:
        # the body is read here, after `auth`: a request without the key never gets it parsed
        state.in_flight += 1
        try:
            check_content_type(request.headers.get("content-type"))
            raw = await _read_body(request, limit=MAX_BODY_BYTES)
            cost = len(raw)
            body = await _off_loop(state, cost, read_request, raw, max_messages=state.max_messages)
            return await _complete(state, body, cost=cost)
        finally:
            state.in_flight -= 1

    static = Path(static_dir) if static_dir is not None else None
    if static is not None and (static / "index.html").is_file():
        from fastapi.staticfiles import StaticFiles

        app.mount("/", StaticFiles(directory=static, html=True), name="static")
    else:

        @app.get("/")
        async def index() -> dict[str, Any]:
            return {
                "name": "personadlg serve",
                "version": __version__,
                "endpoints": [
                    "GET /health",
                    "GET /v1/models",
                    "POST /v1/chat/completions",
                ],
            }

    return app


async def _load_all(state: ServerState, load: Loader) -> None:
    """Load every checkpoint in a worker thread, start its batcher; then the server is ready."""
    reg = state.registry
    name = ""
    path: Path | None = None
    try:
        for name, path, cfg in state.checkpoints:
            t = time.perf_counter()
            model = await in_daemon_thread(load, path, cfg, name="personadlg-load")
            served = await in_daemon_thread(
                ServedModel.create, name, path, cfg, model, name="personadlg-load"
            )
            batcher = Batcher(
                name,
                _generate_fn(served.model),
                window_s=state.batch_window_ms / 1000,
                max_batch=state.max_batch,
                joint=served.joint,
            )
            batcher.start()
            state.batchers[name] = batcher
            reg.models[name] = served
            logger.info(
                "loaded %s (%s, %s) in %.1fs", name, served.method, path, time.perf_counter() - t
            )
        reg.status = "ok"
        logger.info("ready: %s", ", ".join(reg.names))
    except asyncio.CancelledError:
        raise
    except Exception as err:
        reg.status = "failed"
        reg.error = f"{path}: {err}" if path is not None else str(err)
        logger.error("cannot load %s: %s", name or "the models", reg.error)
        for callback in state.on_load_failed:
            callback(reg.error)


def _generate_fn(model: Any) -> Callable[..., Generations]:
    def generate(
        examples: list[Example],
        decoding: GenerateConfig,
        seeds: list[int],
        targets: list[dict[str, str] | None],
    ) -> Generations:
        return as_generations(
            model.generate(examples, decoding=decoding, seeds=seeds, targets=targets)
        )

    return generate


async def _off_loop(
    state: ServerState, cost: int, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
) -> Any:
    """FN(*ARGS, **KWARGS) in the prep thread, so the event loop stays free for other requests;
    COST (the request body's bytes) orders the queue, cheapest first."""
    assert state.prep is not None, "the app's lifespan starts the prep worker"
    return await state.prep.run(cost, fn, *args, **kwargs)


async def _read_body(request: Request, *, limit: int) -> bytes:
    """The request's body; 413 when it is larger than LIMIT bytes (read no further)."""
    too_large = APIError(
        413,
        f"the request body is larger than the server accepts ({limit} bytes)",
        code="request_too_large",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class _Prepared:
    """A validated request, ready for its batch."""

    cond: conditioning.Conditioning
    stops: list[str]
    base_seed: int
    seed_source: str
    seeds: list[int]
    decoding: GenerateConfig
    request_id: str
    example: Example
    target: dict[str, str] | None
    prompt_tokens: int


def _prepare(req: ChatCompletionRequest, served: ServedModel, *, max_batch: int) -> _Prepared:
    """Everything about REQ that is checked or counted before it joins a batch (prep thread): the
    conditioning and decoding (400s), the history cut by characters, then the 413 check and the
    prompt's tokens."""
    req.unsupported()
    stops = req.stops()
    cond = conditioning.read_conditioning(req, served)
    base_seed, seed_source, seeds = conditioning.request_seeds(req.seed, req.n)
    decoding = conditioning.decoding_for(req, served, base_seed=base_seed, batch_size=max_batch)
    request_id = f"chatcmpl-{secrets.token_hex(12)}"
    example = conditioning.make_example(cond, request_id)
    budget = history_chars(served, decoding.max_new_tokens)
    example = replace(example, context=cut_history(example.context, max_chars=budget))
    target = cond.attributes or None
    check_fits(served, example, target, decoding.max_new_tokens)
    return _Prepared(
        cond=cond,
        stops=stops,
        base_seed=base_seed,
        seed_source=seed_source,
        seeds=seeds,
        decoding=decoding,
        request_id=request_id,
        example=example,
        target=target,
        prompt_tokens=count_prompt(served, example, target, decoding.max_new_tokens),
    )


async def _complete(state: ServerState, req: ChatCompletionRequest, *, cost: int) -> Response:
    """One chat completion: validate everything, wait for the batch, shape the reply."""
    served = state.registry.get(req.model)
    p: _Prepared = await _off_loop(state, cost, _prepare, req, served, max_batch=state.max_batch)
    try:
        result: JobResult = await state.batchers[served.name].submit(
            [p.example] * req.n,
            seeds=p.seeds,
            targets=[p.target] * req.n,
            decoding=p.decoding,
            key=conditioning.decoding_key(p.decoding),
        )
    except APIError:
        raise
    except PersonadlgError as err:
        if err.exit_code == 2:  # the request asked for something the model cannot do
            raise APIError(400, str(err), code="unsupported_request") from None
        logger.error("%s: generation failed: %s", served.name, err)
        raise APIError(500, f"generation failed: {err}", type="server_error") from None
    except Exception as err:
        logger.error("%s: generation failed: %s: %s", served.name, type(err).__name__, err)
        raise APIError(
            500,
            f"generation failed: {type(err).__name__}: {err}",
            type="server_error",
            code="generation_failed",
        ) from None
    state.served_requests += 1
    bodies: list[dict[str, Any]] = await _off_loop(
        state, cost, _reply_bodies, req, served, p, result
    )
    if not req.stream:
        return JSONResponse(bodies[0])

    async def events() -> AsyncIterator[str]:
        for chunk in bodies:
            yield sse(chunk)
        yield SSE_DONE

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _reply_bodies(
    req: ChatCompletionRequest, served: ServedModel, p: _Prepared, result: JobResult
) -> list[dict[str, Any]]:
    """The reply to REQ (prep thread: counting tokens): one `chat.completion` body, or the
    stream's chunk bodies."""
    texts, reasons, completion = [], [], 0
    for text in result.texts:
        cut, stopped = conditioning.cut_at_stop(text, p.stops)
        tokens = count_completion(served, cut)
        completion += tokens
        texts.append(cut)
        full = (
            p.decoding.min_new_tokens >= p.decoding.max_new_tokens
            or tokens >= p.decoding.max_new_tokens
        )
        reasons.append("length" if full and not stopped else "stop")
    usage = {
        "prompt_tokens": p.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": p.prompt_tokens + completion,
    }
    echo = conditioning.echo(
        served,
        p.cond,
        base_seed=p.base_seed,
        seed_source=p.seed_source,
        seeds=p.seeds,
        decoding={**decoding_dict(p.decoding), **result.shared},
        records=result.records,
        batch=result.batch,
    )
    common: dict[str, Any] = {
        "id": p.request_id,
        "created": int(time.time()),
        "model": served.name,
        "texts": texts,
        "finish_reasons": reasons,
        "echo": echo,
        "fingerprint": FINGERPRINT,
    }
    if not req.stream:
        return [completion_body(usage=usage, **common)]
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return list(chunk_bodies(usage=usage if include_usage else None, **common))


class _LastResort:
    """ASGI middleware: an exception no handler answered becomes OpenAI's error JSON (500,
    `server_error`) instead of a plain-text page, and its traceback is logged once (here; it is
    not re-raised to uvicorn). A response already under way can only be cut short."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as err:
            logger.exception("%s %s failed", scope.get("method", ""), scope.get("path", ""))
            if started:
                return
            body = error_body(
                f"the server failed on this request ({type(err).__name__}); its log has the "
                "details",
                type="server_error",
                code="internal_error",
            )
            await JSONResponse(body, status_code=500)(scope, receive, send)


def _auth(api_key: str | None) -> Callable[[Request], Awaitable[None]]:
    """A dependency: 401 unless the request carries `Authorization: Bearer API_KEY`."""
    expected = api_key.encode() if api_key else None

    async def check(request: Request) -> None:
        if expected is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
            raise APIError(
                401,
                "invalid or missing API key: send `Authorization: Bearer KEY` with the key the "
                "server was started with (--api-key-env)",
                code="invalid_api_key",
            )

    return check


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, err: APIError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        e = validation_error(list(err.errors()))
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        message = (
            f"no such endpoint: {request.method} {request.url.path}"
            if err.status_code == 404
            else str(err.detail)
        )
        kind = "invalid_request_error" if err.status_code < 500 else "server_error"
        return JSONResponse(
            error_body(message, type=kind), status_code=err.status_code, headers=err.headers
        )
