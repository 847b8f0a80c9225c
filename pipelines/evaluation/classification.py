"""Study-level diagnosis metrics: ROC AUC, sensitivity and specificity at an operating point.

A study is called positive when its probability is **at or above** the operating threshold.
Scores ``[n]`` are study probabilities; labels ``[n]`` are 1 for studies holding a lesion.
Metrics that need both classes (AUC; specificity without negatives, sensitivity without
positives) are NaN rather than an error, so a report can say "undefined".

The ``weighted_*`` functions take ``[r, n]`` sample weights and return ``[r]`` values, for the
bootstrap; the ``compute_*`` functions are their unweighted case.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pipelines.errors import MissingClassError


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} differ in length")
    return s, y


def weighted_roc_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC (ties count one half) under ``[r, n]`` sample weights → ``[r]``.

    NaN where the weighted positives or negatives are empty.
    """
    s, y = _check(scores, labels)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    neg_order = np.argsort(s[~y], kind="stable")
    neg_scores = s[~y][neg_order]
    neg_weights = w[:, ~y][:, neg_order]
    cum_neg = np.hstack([np.zeros((w.shape[0], 1)), np.cumsum(neg_weights, axis=1)])
    below = np.searchsorted(neg_scores, s[y], side="left")
    up_to = np.searchsorted(neg_scores, s[y], side="right")
    credit = cum_neg[:, below] + 0.5 * (cum_neg[:, up_to] - cum_neg[:, below])
    pos_weights = w[:, y]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos_weights * credit).sum(axis=1) / (pos_weights.sum(1) * neg_weights.sum(1))


def compute_roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    s, y = _check(scores, labels)
    return float(weighted_roc_auc(s, y, np.ones((1, s.size)))[0])


def compute_roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, tpr)``, each ``[p]``: one point per distinct threshold (decreasing) plus the
    origin. A rate is NaN throughout when its class is absent."""
    s, y = _check(scores, labels)
    order = np.argsort(-s, kind="stable")
    last_of_run = np.r_[s[order][1:] != s[order][:-1], True][: s.size]
    tp = np.r_[0, np.cumsum(y[order])[last_of_run]]
    fp = np.r_[0, np.cumsum(~y[order])[last_of_run]]
    with np.errstate(invalid="ignore", divide="ignore"):
        return fp / fp[-1], tp / tp[-1]


def weighted_sensitivity_specificity(
    scores: np.ndarray, labels: np.ndarray, threshold: float, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivity and specificity at ``score >= threshold`` under ``[r, n]`` weights → ``[r]``."""
    s, y = _check(scores, labels)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    called = s >= threshold
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = (w @ (called & y)) / (w @ y)
        specificity = (w @ (~called & ~y)) / (w @ ~y)
    return sensitivity, specificity


def compute_sensitivity_specificity(
    scores: np.ndarray, labels: np.ndarray, threshold: float
) -> tuple[float, float]:
    """Sensitivity and specificity when studies scoring ``>= threshold`` are called positive."""
    s, y = _check(scores, labels)
    sens, spec = weighted_sensitivity_specificity(s, y, threshold, np.ones((1, s.size)))
    return float(sens[0]), float(spec[0])


@dataclass(frozen=True)
class OperatingPoint:
    """A decision threshold on study probability and what it achieves on the data it came from."""

    threshold: float
    target_sensitivity: float
    sensitivity: float
    specificity: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def operating_point_for_sensitivity(
    scores: np.ndarray, labels: np.ndarray, target: float
) -> OperatingPoint:
    """The highest threshold whose sensitivity is at least ``target`` (so the best specificity
    that meets it): the ``ceil(target · n_positive)``-th highest positive score.

    Raises:
        MissingClassError: there is no positive study to reach a sensitivity on.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target}")
    s, y = _check(scores, labels)
    positives = np.sort(s[y])[::-1]
    if positives.size == 0:
        raise MissingClassError(
            "An operating point for a target sensitivity needs lesion-positive studies.",
            n_studies=int(s.size),
        )
    needed = max(1, math.ceil(target * positives.size - 1e-9))
    threshold = float(positives[needed - 1])
    sensitivity, specificity = compute_sensitivity_specificity(s, y, threshold)
    return OperatingPoint(threshold, target, sensitivity, specificity)
