"""The LLM-request engine: requests to any OpenAI-compatible chat API, concurrent, rate-limited,
retried, budgeted and journalled exactly once.

- `config`: the `client:` and `limits:` sections a recipe shares, and the request parameters;
- `client`: one chat request and its reply; the API key;
- `redact`: API keys and tokens out of every error text;
- `retries`: errors sorted into stop / retry / fail, and the back-off;
- `limits`: requests and tokens per sliding minute;
- `cost`: prices and estimates;
- `parse`: `ParseError` (a reply refused, so retried) and the JSON values of a reply;
- `template`: prompt templates, versioned by their hash;
- `job`: what a request is (`Job`) and where its result goes (`Sink`);
- `runner`: `run_jobs` and its `Stats`;
- `journal`: the append-only journal that makes every request exactly-once;
- `resume`: journal → pending → run, the sequence every user shares;
- `paths`: the cache directory and failures file beside an output.

Used by synth (`data/synth`), profile inference (`data/profile`), method `api` (`models/api`,
`generation/api.py`) and the LLM judge (`metrics/judge`); it imports none of them, nor anything of
`data` (the journal's lock is handed in, `data.lock.exclusive_lock`).
"""
