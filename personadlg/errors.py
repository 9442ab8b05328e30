"""Exceptions with exit codes, so the CLI can turn them into one readable line.

Exit codes (README: Data format, errors): 0 success, 1 runtime failure, 2 bad usage, config or input data.
"""

from __future__ import annotations

from typing import Any


class PersonadlgError(Exception):
    """Base class for errors the CLI reports without a traceback."""

    exit_code = 1


class UsageError(PersonadlgError):
    """Bad command-line usage or options."""

    exit_code = 2


class ConfigError(PersonadlgError):
    """A recipe or config value is invalid. Collects several problems into one message."""

    exit_code = 2

    def __init__(self, problems: str | list[str], *, source: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        if len(self.problems) == 1:
            msg = head + self.problems[0]
        else:
            msg = (
                head
                + f"{len(self.problems)} problems:\n"
                + "\n".join(f"  - {p}" for p in self.problems)
            )
        super().__init__(msg)


class NotAvailableError(PersonadlgError):
    """A feature whose implementation has not landed (or an optional dependency is missing)."""

    exit_code = 1


def describe_value(value: Any, limit: int = 60) -> str:
    """Short, type-revealing rendering of a value for error messages: `'user'`, `42`, `a list`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value if len(value) <= limit else value[: limit - 3] + "..."
        return repr(text)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class DataError(PersonadlgError):
    """Bad input data: `FILE:LINE: field 'x': expected ..., got ...`."""

    exit_code = 2

    def __init__(
        self,
        message: str | None = None,
        *,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
        expected: str | None = None,
        got: Any = None,
        got_text: str | None = None,
    ) -> None:
        self.path, self.line, self.field = path, line, field
        self.expected = expected
        self.got = got_text if got_text is not None else (describe_value(got) if expected else None)
        detail = f"field '{field}': " if field else ""
        if expected:
            detail += f"expected {expected}, got {self.got}"
            if message:
                detail += f" ({message})"
        else:
            detail += message or "invalid value"
        self.detail = detail
        super().__init__(self.render())

    @property
    def location(self) -> str:
        if self.path is None:
            return ""
        return f"{self.path}:{self.line}" if self.line is not None else str(self.path)

    def render(self) -> str:
        loc = self.location
        return f"{loc}: {self.detail}" if loc else self.detail

    def at(self, *, path: str | None = None, line: int | None = None) -> DataError:
        """Return the same error located at PATH:LINE."""
        self.path = path if path is not None else self.path
        self.line = line if line is not None else self.line
        self.args = (self.render(),)
        return self
