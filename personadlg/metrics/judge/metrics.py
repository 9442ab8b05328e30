"""LLM judge metrics: judge-persona (1-5), judge-attributes (% yes), judge-coherence (1-5).

Each rubric is a versioned template (its hash is in the signature); each request is one user
message, judged once and cached (`requests.py`). A request whose replies stay invalid, or that
fails, leaves its row NaN in `per_example`, out of the value, and counted and listed in the
details (`judged`, `failed`, `failed_ids`, `failed_by`): never silently dropped.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from string import Template
from typing import Any
from urllib.parse import urlparse

import numpy as np

from personadlg.llm.config import request_params
from personadlg.metrics.base import Computed, EvalData, mean_of, pairs_computed, signature
from personadlg.metrics.judge.config import JudgeConfig
from personadlg.metrics.judge.prompts import (
    JudgeRequest,
    attributes_prompt,
    coherence_prompt,
    has_context,
    has_speaker,
    load_rubric,
    persona_prompt,
    request,
    rubric_tag,
)
from personadlg.metrics.judge.requests import Judged, judge
from personadlg.metrics.judge.validate import parse_answer, parse_score

logger = logging.getLogger(__name__)

FAILED_IDS = 20
Cell = tuple[int, str | None, JudgeRequest]
"""(row, attribute or None, its request)."""


def host(base_url: str | None) -> str:
    """The endpoint in a signature: `host[:port]` of the base URL, or `openai` for the default one."""
    if not base_url:
        return "openai"
    parsed = urlparse(base_url)
    return parsed.netloc or base_url


def params_text(cfg: JudgeConfig) -> str:
    """The request parameters in a signature: `temperature=0,max_tokens=150,response_format=json_object`."""
    parts = []
    for k, v in request_params(cfg).items():
        if k == "response_format" and isinstance(v, dict):
            v = v.get("type", v)
        parts.append(f"{k}={v}")
    return ",".join(parts) or "none"


@dataclass
class _Judge:
    """What the three judge metrics share: the recipe, the cache, the rubric, the request run."""

    cfg: JudgeConfig
    cache_dir: str | None = None

    kind = ""

    @property
    def name(self) -> str:
        return f"judge-{self.kind}"

    @cached_property
    def rubric(self) -> tuple[Template, str]:
        return load_rubric(self.cfg, self.kind)

    def _common(self) -> dict[str, Any]:
        return {
            "model": self.cfg.client.model,
            "base_url": host(self.cfg.client.base_url),
            "template": self.rubric[1],
        }

    def _scale_signature(self) -> str:
        """The signature of a 1-5 rating shown the last `context_turns` turns (persona, coherence)."""
        turns = self.cfg.judge.context_turns
        return signature(
            self.name,
            **self._common(),
            scale="1-5",
            context=f"last{turns or 'all'}",
            cut=self.cfg.judge.max_chars,
            params=params_text(self.cfg),
            agg="mean",
        )

    def cells(self, data: EvalData) -> list[Cell]:
        raise NotImplementedError

    def requests(self, data: EvalData) -> list[JudgeRequest]:
        """Every request the metric makes on DATA (repeats included), for --dry-run."""
        return [req for _, _, req in self.cells(data)]

    def _run(
        self, data: EvalData, cells: list[Cell], parse: Callable[[str | None], dict[str, Any]]
    ) -> tuple[Judged, dict[str, Any]]:
        """Judge every cell; (the results, the details every judge metric reports)."""
        judged = judge(
            self.cfg,
            [req for _, _, req in cells],
            parse,
            cache_dir=self.cfg.cache_path(self.cache_dir),
            label=self.name,
        )
        failed: list[str] = []
        why: Counter[str] = Counter()
        for row, attr, req in cells:
            if judged.judgement(req.key) is None:
                failed.append(data.ids[row] + (f" ({attr})" if attr else ""))
                entry = judged.entries.get(req.key)
                why[str(entry.get("class")) if entry is not None else "not_sent"] += 1
        stats = judged.stats
        details: dict[str, Any] = {
            "judged": len(cells) - len(failed),
            "failed": len(failed),
            "failed_ids": failed[:FAILED_IDS],
            "cached": judged.cached,
            "requests": stats.requests,
            "cost": round(stats.cost, 6),
            "judge": self._common(),
        }
        if why:
            details["failed_by"] = dict(why)
        if stats.retries:
            details["retries"] = dict(stats.retries)
        if stats.stopped:
            details["stopped"] = stats.stopped
        if failed and len(failed) == len(cells):
            details["note"] = (
                f"every judge request failed ({', '.join(f'{k} {v}' for k, v in why.items())}): "
                "no value; rerun to retry them"
            )
        if failed:
            logger.warning(
                "%s: %d of %d judgements failed (%s), left out of the value: %s%s",
                self.name,
                len(failed),
                len(cells),
                ", ".join(f"{k} {v}" for k, v in why.items()),
                ", ".join(failed[:5]),
                " ..." if len(failed) > 5 else "",
            )
        return judged, details

    def _scores(self, data: EvalData, cells: list[Cell]) -> Computed:
        """A 1-5 score per row: mean over the judged rows."""
        judged, details = self._run(data, cells, parse_score)
        values = np.full(len(data), np.nan)
        for row, _, req in cells:
            j = judged.judgement(req.key)
            if j is not None:
                values[row] = float(j["score"])
        return Computed(
            aggregate=mean_of(values, 1.0),
            per_example=values,
            n=int((~np.isnan(values)).sum()),
            details=details,
        )


@dataclass
class JudgePersona(_Judge):
    """judge-persona: the judge's 1-5 rating of how the response fits the speaker's persona and profile; mean."""

    requires: tuple[str, ...] = ("personas",)
    kind = "persona"

    def signature(self) -> str:
        return self._scale_signature()

    def cells(self, data: EvalData) -> list[Cell]:
        template = self.rubric[0]
        out: list[Cell] = []
        for i in range(len(data)):
            persona, profile = data.personas[i], data.profiles[i]
            if not has_speaker(persona, profile):
                continue
            prompt = persona_prompt(
                self.cfg,
                template,
                persona=persona,
                profile=profile,
                context=data.contexts[i],
                response=data.generations[i],
            )
            out.append((i, None, request(self.cfg, f"persona|{data.ids[i]}", prompt)))
        return out

    def compute(self, data: EvalData) -> Computed:
        cells = self.cells(data)
        if not cells:
            raise ValueError("judge-persona needs a persona or a profile; no record has one")
        return self._scores(data, cells)


@dataclass
class JudgeCoherence(_Judge):
    """judge-coherence: the judge's 1-5 rating of how the response fits the context; mean."""

    requires: tuple[str, ...] = ("contexts",)
    kind = "coherence"

    def signature(self) -> str:
        return self._scale_signature()

    def cells(self, data: EvalData) -> list[Cell]:
        template = self.rubric[0]
        out: list[Cell] = []
        for i in range(len(data)):
            if not has_context(data.contexts[i]):
                continue
            prompt = coherence_prompt(
                self.cfg, template, context=data.contexts[i], response=data.generations[i]
            )
            out.append((i, None, request(self.cfg, f"coherence|{data.ids[i]}", prompt)))
        return out

    def compute(self, data: EvalData) -> Computed:
        cells = self.cells(data)
        if not cells:
            raise ValueError("judge-coherence needs a context; no record has one")
        return self._scores(data, cells)


@dataclass
class JudgeAttributes(_Judge):
    """judge-attributes: for every targeted (example, attribute), does the response show the target
    aspect (yes/no); % yes over the judged pairs (comparable with personalization-acc)."""

    requires: tuple[str, ...] = ("targets",)
    kind = "attributes"

    def signature(self) -> str:
        return signature(
            "judge-attributes",
            **self._common(),
            answer="yes-no",
            aspects=rubric_tag(self.cfg),
            cut=self.cfg.judge.max_chars,
            params=params_text(self.cfg),
            target="target_attributes|attributes",
            agg="pct-yes-over-pairs",
        )

    def cells(self, data: EvalData) -> list[Cell]:
        template = self.rubric[0]
        out: list[Cell] = []
        for i, target in enumerate(data.targets):
            for attr in sorted(target):
                prompt = attributes_prompt(
                    self.cfg,
                    template,
                    attribute=attr,
                    aspect=target[attr],
                    response=data.generations[i],
                )
                out.append((i, attr, request(self.cfg, f"attributes|{data.ids[i]}|{attr}", prompt)))
        return out

    def compute(self, data: EvalData) -> Computed:
        cells = self.cells(data)
        if not cells:
            raise ValueError(
                "judge-attributes needs targets; no record has target_attributes or attributes"
            )
        attrs = sorted({a for _, a, _ in cells if a is not None})
        col = {a: j for j, a in enumerate(attrs)}
        judged, details = self._run(data, cells, parse_answer)
        values = np.full((len(data), len(attrs)), np.nan)
        for row, attr, req in cells:
            j = judged.judgement(req.key)
            if j is not None and attr is not None:
                values[row, col[attr]] = 1.0 if j["answer"] == "yes" else 0.0

        return pairs_computed(values, attrs, details=details)


JUDGES: dict[str, type[_Judge]] = {
    "persona": JudgePersona,
    "attributes": JudgeAttributes,
    "coherence": JudgeCoherence,
}
