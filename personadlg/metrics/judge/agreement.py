"""Does the LLM judge agree with the attribute classifiers? Cohen's κ on the pairs both scored.

For every targeted (example, attribute) pair that both judge-attributes (yes / no) and
personalization-acc (classifier argmax == target aspect) scored: raw agreement, each rater's yes
rate and Cohen's κ = (p_o − p_e) / (1 − p_e), where p_o is the observed agreement and
p_e = p_judge · p_classifier + (1 − p_judge)(1 − p_classifier) the agreement expected by chance.
Per attribute and pooled over attributes. κ is undefined (None, with the reason) when p_e = 1:
both raters gave the same single answer to every pair.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from personadlg.metrics.base import Computed

JUDGE = "judge-attributes"
CLASSIFIER = "personalization-acc"


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Agreement of two binary raters A and B (arrays of 0/1 of the same length)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = len(a)
    out: dict[str, Any] = {"n": n}
    if n == 0:
        return {**out, "agreement": None, "kappa": None, "kappa_note": "no pair scored by both"}
    p_o = float((a == b).mean())
    p_a, p_b = float(a.mean()), float(b.mean())
    p_e = p_a * p_b + (1 - p_a) * (1 - p_b)
    out.update(agreement=100 * p_o, rate_a=100 * p_a, rate_b=100 * p_b)
    if p_e >= 1 - 1e-12:
        answer = "yes" if p_a == 1 else "no"
        out.update(
            kappa=None,
            kappa_note=f"undefined: both raters answered {answer} to every pair (chance agreement is 1)",
        )
        return out
    out["kappa"] = (p_o - p_e) / (1 - p_e)
    if p_a in (0.0, 1.0) or p_b in (0.0, 1.0):
        out["kappa_note"] = "one rater gave the same answer to every pair: κ is 0 by construction"
    return out


def _entry(judge: np.ndarray, classifier: np.ndarray) -> dict[str, Any]:
    k = cohen_kappa(judge, classifier)
    out: dict[str, Any] = {
        "n": k["n"],
        "agreement": k.get("agreement"),
        "judge_yes": k.get("rate_a"),
        "classifier_yes": k.get("rate_b"),
        "kappa": k["kappa"],
    }
    if "kappa_note" in k:
        out["kappa_note"] = k["kappa_note"]
    return {key: (round(v, 6) if isinstance(v, float) else v) for key, v in out.items()}


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0)


def agreement(judge: Computed, classifier: Computed) -> dict[str, Any] | None:
    """The agreement section of the report (None when either side has no binary cells)."""
    if not judge.cells or not classifier.cells:
        return None
    by_attribute: dict[str, Any] = {}
    pooled_j: list[np.ndarray] = []
    pooled_c: list[np.ndarray] = []
    for attr in sorted(set(judge.cells) & set(classifier.cells)):
        j, c = judge.cells[attr], classifier.cells[attr]
        both = ~np.isnan(j) & ~np.isnan(c)
        by_attribute[attr] = _entry(j[both], c[both])
        pooled_j.append(j[both])
        pooled_c.append(c[both])
    return {
        "between": [JUDGE, CLASSIFIER],
        "statistic": "cohen-kappa|judge:yes|classifier:argmax==target|pairs:scored-by-both",
        "pooled": _entry(_cat(pooled_j), _cat(pooled_c)),
        "by_attribute": by_attribute,
    }


def add_agreement(report: dict[str, Any], prepared: dict[str, Computed]) -> None:
    """`report["agreement"]` when the report has both judge-attributes and personalization-acc."""
    if JUDGE in prepared and CLASSIFIER in prepared:
        section = agreement(prepared[JUDGE], prepared[CLASSIFIER])
        if section is not None:
            report["agreement"] = section
