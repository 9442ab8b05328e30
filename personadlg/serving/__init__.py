"""`personadlg serve`: trained persona models behind the OpenAI chat-completions API.

    protocol.py      the wire format: reading a body, request models, response / chunk bodies, errors
    registry.py      the loaded checkpoints by name, and what `/v1/models` says about each
    conditioning.py  a request → the example, attribute targets, decoding settings and seeds
    prompt.py        the history cut, prompt / completion token counts, the too-long check (413)
    batcher.py       per-model queue: requests of a short window generated together
    app.py           `create_app(...)`: the FastAPI application
    server.py        `run_server(...)` (uvicorn, signals) and `serve_in_thread(...)`

Needs the `serve` extra (`pip install 'personadlg[serve]'`: fastapi and uvicorn); nothing here is
imported by the rest of the package.
"""
