"""Percentile bootstrap confidence intervals, resampling whole cases (studies).

The unit is the case, never the lesion or the finding: the lesions and findings of one scan are
not independent, so they are drawn together. One resample is a vector of *case weights* (how
many times each case was drawn); every metric in :mod:`pipelines.evaluation` has a weighted form
that takes all ``r`` resamples as an ``[r, n_cases]`` matrix at once (mapped to findings or
lesions through their case index), so 1,000 resamples cost a few matrix products. The interval is
the ``(1 ± level) / 2`` percentiles of the resampled values, ignoring resamples where the metric
is undefined (e.g. a resample without negatives for AUC).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ConfidenceInterval:
    """A point estimate and its bootstrap interval; all None when the metric is undefined."""

    value: float | None
    ci_low: float | None
    ci_high: float | None

    def to_dict(self) -> dict[str, float | None]:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high}


def bootstrap_case_weights(n_cases: int, n_resamples: int, seed: int) -> np.ndarray:
    """``[n_resamples, n_cases]`` draw counts of ``n_resamples`` resamples with replacement.

    Deterministic for a seed (:func:`numpy.random.default_rng`).
    """
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_cases, size=(n_resamples, n_cases))
    flat = (draws + n_cases * np.arange(n_resamples)[:, None]).ravel()
    counts = np.bincount(flat, minlength=n_resamples * n_cases)
    return counts.reshape(n_resamples, n_cases).astype(np.float64)


def bootstrap_cis(
    statistic: Callable[[np.ndarray], np.ndarray],
    case_weights: np.ndarray,
    level: float = 0.95,
) -> list[ConfidenceInterval]:
    """Point estimates and percentile intervals of ``q`` weighted statistics computed together.

    Args:
        statistic: maps ``[r, n_cases]`` case weights to ``[r, q]`` values (or ``[r]``: q = 1).
        case_weights: ``[r, n_cases]`` from :func:`bootstrap_case_weights` (r may be 0).
        level: coverage of the interval.
    """
    n_cases = case_weights.shape[1]
    values = np.asarray(statistic(np.ones((1, n_cases))), dtype=np.float64).reshape(1, -1)[0]
    replicates = np.asarray(statistic(case_weights), dtype=np.float64).reshape(-1, values.size)
    tail = 100 * (1 - level) / 2
    intervals = []
    for value, column in zip(values, replicates.T, strict=True):
        finite = column[np.isfinite(column)]
        if not np.isfinite(value):
            intervals.append(ConfidenceInterval(None, None, None))
        elif finite.size == 0:
            intervals.append(ConfidenceInterval(float(value), None, None))
        else:
            low, high = np.percentile(finite, [tail, 100 - tail])
            intervals.append(ConfidenceInterval(float(value), float(low), float(high)))
    return intervals


def bootstrap_ci(
    statistic: Callable[[np.ndarray], np.ndarray],
    case_weights: np.ndarray,
    level: float = 0.95,
) -> ConfidenceInterval:
    """:func:`bootstrap_cis` for one statistic mapping ``[r, n_cases]`` weights to ``[r]``."""
    (interval,) = bootstrap_cis(statistic, case_weights, level)
    return interval
