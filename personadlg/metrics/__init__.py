"""Evaluation metrics, each declared once (`personadlg.registry.METRICS`) and reported with a signature.

Importing this package is light; metric implementations load when used.
"""

from __future__ import annotations

from typing import Any


def evaluate_texts(*args: Any, **kwargs: Any) -> Any:
    """Score plain lists of strings: see `personadlg.metrics.evaluate.evaluate_texts`."""
    from personadlg.metrics.evaluate import evaluate_texts as run

    return run(*args, **kwargs)


__all__ = ["evaluate_texts"]
