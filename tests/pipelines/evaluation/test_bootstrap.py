"""Case bootstrap: deterministic draws, weights that mean "this case drawn k times", sane CIs."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.evaluation.bootstrap import bootstrap_case_weights, bootstrap_ci
from pipelines.evaluation.classification import compute_roc_auc, weighted_roc_auc
from pipelines.evaluation.froc import (
    CaseDetections,
    collect_froc_entries,
    compute_froc,
    compute_froc_curves,
)


def test_case_weights_are_draw_counts_and_deterministic_for_a_seed():
    weights = bootstrap_case_weights(7, 50, seed=3)
    assert weights.shape == (50, 7)
    assert np.all(weights.sum(axis=1) == 7)
    np.testing.assert_array_equal(weights, bootstrap_case_weights(7, 50, seed=3))
    assert not np.array_equal(weights, bootstrap_case_weights(7, 50, seed=4))


def test_weight_two_equals_drawing_the_case_twice():
    scores = np.array([0.9, 0.3, 0.6, 0.2])
    labels = np.array([1, 1, 0, 0])
    weighted = weighted_roc_auc(scores, labels, np.array([[1.0, 2.0, 1.0, 1.0]]))[0]
    duplicated = compute_roc_auc(np.r_[scores, 0.3], np.r_[labels, 1])
    assert weighted == pytest.approx(duplicated)


def test_weighted_froc_equals_froc_of_duplicated_scans():
    a = CaseDetections(
        "a",
        np.zeros((1, 3)),
        np.array([6.0]),
        np.array([[1, 0, 0], [9, 9, 9]]),
        np.array([0.4, 0.8]),
    )
    b = CaseDetections("b", np.zeros((0, 3)), np.zeros(0), np.array([[0, 0, 0]]), np.array([0.5]))
    fps, sens = compute_froc_curves(collect_froc_entries([a, b]), np.array([[2.0, 1.0]]))
    plain = compute_froc([a, a, b])
    np.testing.assert_allclose(fps[0], plain.fps_per_scan)
    np.testing.assert_allclose(sens[0], plain.sensitivity_curve)


def test_ci_contains_point_estimate_and_is_reproducible():
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 2
    scores = labels * 0.3 + rng.random(60)

    def auc(w: np.ndarray) -> np.ndarray:
        return weighted_roc_auc(scores, labels, w)

    first = bootstrap_ci(auc, bootstrap_case_weights(60, 500, seed=1))
    again = bootstrap_ci(auc, bootstrap_case_weights(60, 500, seed=1))
    assert first == again
    assert first.value == pytest.approx(compute_roc_auc(scores, labels))
    assert first.ci_low < first.value < first.ci_high


def test_undefined_metric_and_zero_resamples_give_none():
    undefined = bootstrap_ci(
        lambda w: np.full(w.shape[0], np.nan), bootstrap_case_weights(3, 10, 0)
    )
    assert undefined.to_dict() == {"value": None, "ci_low": None, "ci_high": None}
    no_resamples = bootstrap_ci(lambda w: w.sum(axis=1), bootstrap_case_weights(3, 0, 0))
    assert no_resamples.to_dict() == {"value": 3.0, "ci_low": None, "ci_high": None}
