"""LLM judge metrics for `personadlg eval --judge RECIPE`: judge-persona, judge-attributes, judge-coherence.

Requests go through the engine's runner and journal (`personadlg.llm`): concurrent, rate-limited,
retried, budgeted and cached, so judging the same generation again costs nothing.
"""

from __future__ import annotations

from personadlg.metrics.judge.config import JudgeConfig, is_judge_recipe, load_judge_recipe
from personadlg.metrics.judge.prompts import describe_judge_recipe

__all__ = ["JudgeConfig", "describe_judge_recipe", "is_judge_recipe", "load_judge_recipe"]
