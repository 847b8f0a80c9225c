"""Calibration: how far scores are from probabilities, and two ways to fix them.

Metrics (probabilities ``[n]`` in [0, 1], labels ``[n]`` in {0, 1}):

- **ECE**: ``n_bins`` equal-width bins over [0, 1] (default 10; a probability of exactly 1 falls
  in the last bin); ECE = Σ_b (n_b / n) · |mean probability_b − fraction positive_b|.
- **Brier score**: mean of (probability − label)².
- **Reliability diagram**: per bin, its edges, count, mean probability and fraction positive.

Calibrators share one tiny interface: ``apply(probabilities) -> probabilities`` and
``to_dict()``; :func:`calibrator_from_dict` reads either back from the model bundle's JSON.

- **Temperature scaling**: ``sigmoid(logit(p) / T)``, with ``T > 0`` fit by minimising the
  negative log-likelihood. One parameter, monotone, so rankings (AUC, FROC) are unchanged.
- **Isotonic**: the pool-adjacent-violators fit of :class:`sklearn.isotonic.IsotonicRegression`,
  stored as its breakpoints and applied by linear interpolation between them (clipped at the
  ends), so serving needs no scikit-learn. Monotone but not strictly: it can create ties.

The ``weighted_*`` functions take ``[r, n]`` sample weights and return ``[r]`` values, for the
bootstrap; the ``compute_*`` functions are their unweighted case.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pipelines.calibration import (
    CalibrationMethod,
    Calibrator,
    IsotonicCalibrator,
    TemperatureCalibrator,
)
from pipelines.errors import MissingClassError

DEFAULT_ECE_BINS = 10
_EPS = 1e-7  # as in pipelines.calibration: probabilities clipped before a logit


def _check(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"probabilities {p.shape} and labels {y.shape} differ in length")
    return p, y


def bin_index(probs: np.ndarray, n_bins: int = DEFAULT_ECE_BINS) -> np.ndarray:
    """Equal-width bin of each probability ``[n]`` → ``[n]`` ints in ``0..n_bins-1``."""
    return np.clip((np.asarray(probs) * n_bins).astype(np.int64), 0, n_bins - 1)


def weighted_ece(
    probs: np.ndarray, labels: np.ndarray, weights: np.ndarray, n_bins: int = DEFAULT_ECE_BINS
) -> np.ndarray:
    """ECE under ``[r, n]`` sample weights → ``[r]`` (NaN where the weights sum to 0)."""
    p, y = _check(probs, labels)
    one_hot = np.eye(n_bins)[bin_index(p, n_bins)]  # [n, bins]
    w = np.atleast_2d(weights)
    gap = np.abs(w @ (one_hot * p[:, None]) - w @ (one_hot * y[:, None])).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return gap / w.sum(axis=1)


def compute_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_ECE_BINS) -> float:
    """Expected calibration error with ``n_bins`` equal-width bins; NaN for no samples."""
    p, y = _check(probs, labels)
    return float(weighted_ece(p, y, np.ones((1, p.size)), n_bins)[0])


def weighted_brier(probs: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Brier score under ``[r, n]`` sample weights → ``[r]``."""
    p, y = _check(probs, labels)
    w = np.atleast_2d(weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ (p - y) ** 2) / w.sum(axis=1)


def compute_brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared difference between probability and outcome; NaN for no samples."""
    p, y = _check(probs, labels)
    return float(weighted_brier(p, y, np.ones((1, p.size)))[0])


def compute_reliability(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_ECE_BINS
) -> list[dict[str, Any]]:
    """Reliability-diagram data: per equal-width bin ``bin_low``, ``bin_high``, ``count``,
    ``mean_probability`` and ``fraction_positive`` (the last two None for an empty bin)."""
    p, y = _check(probs, labels)
    index = bin_index(p, n_bins)
    count = np.bincount(index, minlength=n_bins)
    sum_p = np.bincount(index, weights=p, minlength=n_bins)
    sum_y = np.bincount(index, weights=y, minlength=n_bins)
    return [
        {
            "bin_low": b / n_bins,
            "bin_high": (b + 1) / n_bins,
            "count": int(count[b]),
            "mean_probability": float(sum_p[b] / count[b]) if count[b] else None,
            "fraction_positive": float(sum_y[b] / count[b]) if count[b] else None,
        }
        for b in range(n_bins)
    ]


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> TemperatureCalibrator:
    """Temperature minimising the negative log-likelihood of ``labels`` ``[n]`` given
    ``sigmoid(logit(probs) / T)`` (bounded search over log T in [-6, 6])."""
    from scipy import optimize, special

    p, y = _check_two_classes(probs, labels)
    logits = special.logit(np.clip(p, _EPS, 1 - _EPS))

    def nll(log_t: float) -> float:
        z = logits / np.exp(log_t)
        return float(np.mean(np.logaddexp(0.0, z) - y * z))

    best = optimize.minimize_scalar(nll, bounds=(-6.0, 6.0), method="bounded")
    return TemperatureCalibrator(temperature=float(np.exp(best.x)))


def fit_isotonic(probs: np.ndarray, labels: np.ndarray) -> IsotonicCalibrator:
    """Pool-adjacent-violators fit of ``labels`` ``[n]`` on ``probs`` ``[n]``."""
    from sklearn.isotonic import IsotonicRegression

    p, y = _check_two_classes(probs, labels)
    fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
    return IsotonicCalibrator(
        x=[float(v) for v in fitted.X_thresholds_], y=[float(v) for v in fitted.y_thresholds_]
    )


_FITTERS: dict[CalibrationMethod, Callable[[np.ndarray, np.ndarray], Calibrator]] = {
    CalibrationMethod.TEMPERATURE: fit_temperature,
    CalibrationMethod.ISOTONIC: fit_isotonic,
}


def fit_calibrator(
    method: CalibrationMethod | str, probs: np.ndarray, labels: np.ndarray
) -> Calibrator:
    """Fit the calibrator named ``method`` on validation ``probs`` ``[n]`` and ``labels`` ``[n]``.

    Raises:
        MissingClassError: the labels hold only one class.
    """
    return _FITTERS[CalibrationMethod(method)](probs, labels)


def _check_two_classes(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, y = _check(probs, labels)
    if not (np.any(y == 1) and np.any(y == 0)):
        raise MissingClassError(
            "Calibration needs both positive and negative examples.",
            n_positive=int(np.sum(y == 1)),
            n_negative=int(np.sum(y == 0)),
        )
    return p, y
