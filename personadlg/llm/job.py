"""What the engine sends and where it records the results: `Job` and `Sink`."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar


class Job(Protocol):
    """One request: its journal key, a readable name and the chat messages to send.

    A job may also carry `params` (a dict merged over the recipe's request parameters for its
    request alone, e.g. a per-example `seed`)."""

    @property
    def key(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def messages(self) -> tuple[dict[str, str], ...]: ...


J = TypeVar("J", bound=Job)


class Sink(Protocol):
    """Where `run_jobs` records each result: a `Journal`, or any object with `append` (chat keeps
    its replies in memory)."""

    def append(self, entry: dict[str, Any]) -> None: ...
