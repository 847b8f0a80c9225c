"""Study-level ROC AUC, sensitivity/specificity and operating points on hand-computed sets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipelines.errors import MissingClassError
from pipelines.evaluation.classification import (
    compute_roc_auc,
    compute_roc_curve,
    compute_sensitivity_specificity,
    operating_point_for_sensitivity,
)

# Positives 0.9 0.8 0.7 0.6 0.3; negatives 0.85 0.5 0.2 0.1.
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.85, 0.5, 0.2, 0.1])
LABELS = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0])


def test_auc_counts_ordered_pairs_and_half_ties():
    assert compute_roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert compute_roc_auc([0.5, 0.5], [1, 0]) == pytest.approx(0.5)
    # 20 pairs; 0.9 beats 4, 0.8 3, 0.7 3, 0.6 3, 0.3 2 -> 15/20.
    assert compute_roc_auc(SCORES, LABELS) == pytest.approx(15 / 20)


def test_auc_with_one_class_is_nan_not_an_error():
    assert math.isnan(compute_roc_auc([0.2, 0.9], [1, 1]))
    assert math.isnan(compute_roc_auc([0.2, 0.9], [0, 0]))


def test_roc_curve_points_per_distinct_threshold():
    fpr, tpr = compute_roc_curve([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])


def test_sensitivity_and_specificity_call_scores_at_threshold_positive():
    assert compute_sensitivity_specificity(SCORES, LABELS, 0.6) == pytest.approx((0.8, 0.75))
    sens, spec = compute_sensitivity_specificity([0.9], [1], 0.5)
    assert sens == 1.0
    assert math.isnan(spec)


@pytest.mark.parametrize(
    ("target", "threshold", "sensitivity", "specificity"),
    [(0.8, 0.6, 0.8, 0.75), (0.9, 0.3, 1.0, 0.5), (0.6, 0.7, 0.6, 0.75), (1.0, 0.3, 1.0, 0.5)],
)
def test_operating_point_is_highest_threshold_meeting_target(
    target, threshold, sensitivity, specificity
):
    # 0.6 * 5 is 3.0000000000000004 in floating point: still three positives, not four.
    point = operating_point_for_sensitivity(SCORES, LABELS, target)
    assert point.threshold == threshold
    assert point.sensitivity == pytest.approx(sensitivity)
    assert point.specificity == pytest.approx(specificity)
    assert point.to_dict()["target_sensitivity"] == target


def test_operating_point_without_positives_raises_missing_class():
    with pytest.raises(MissingClassError) as raised:
        operating_point_for_sensitivity([0.1, 0.2], [0, 0], 0.9)
    assert raised.value.code == "evaluation.missing_class"


def test_operating_point_refuses_target_outside_unit_interval():
    with pytest.raises(ValueError, match="target"):
        operating_point_for_sensitivity(SCORES, LABELS, 0.0)
