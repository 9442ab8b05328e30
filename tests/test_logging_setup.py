"""CLI logging writes to the current stderr, so a command run under a captured (later closed)
stream leaves no handler behind that fails on the next log record."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from personadlg.cli._console import setup_logging


def test_log_lines_follow_the_current_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    log = logging.getLogger("personadlg.test")
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    setup_logging(0)
    log.info("into the first stream")
    assert "into the first stream" in first.getvalue()
    first.close()  # what a test runner does with its capture when the command returns
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    errors: list[str] = []
    monkeypatch.setattr(logging, "raiseExceptions", True)
    monkeypatch.setattr(
        logging.Handler, "handleError", lambda self, record: errors.append(record.getMessage())
    )
    log.warning("into the second stream")
    assert errors == []
    assert "WARNING personadlg.test: into the second stream" in second.getvalue()
