"""FROC and CPM against hand-computed LUNA16 cases."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.evaluation.froc import FP_RATES, CaseDetections, compute_froc


def _case(case_id, lesions, diameters, preds, scores) -> CaseDetections:
    return CaseDetections(
        case_id=case_id,
        lesion_centers_lps_mm=np.array(lesions, dtype=float).reshape(-1, 3),
        lesion_diameters_mm=np.array(diameters, dtype=float),
        pred_centers_lps_mm=np.array(preds, dtype=float).reshape(-1, 3),
        pred_scores=np.array(scores, dtype=float),
    )


# Scan A: L1 (d 10) hit by 0.9 and, redundantly, 0.4 (ignored); L2 (d 6) hit by 0.3 exactly on
# its radius; FPs 0.8 and 0.2. Scan B: no lesion, one FP 0.7.
# Events by score: 0.9 hit, 0.8 FP, 0.7 FP, 0.3 hit, 0.2 FP -> curve over 2 scans, 2 lesions:
# (0, 0) (0, .5) (.5, .5) (1, .5) (1, 1) (1.5, 1).
CASES = [
    _case(
        "a",
        [(0, 0, 0), (50, 0, 0)],
        [10, 6],
        [(3, 0, 0), (1, 1, 1), (100, 0, 0), (50, 0, 3), (0, 50, 0)],
        [0.9, 0.4, 0.8, 0.3, 0.2],
    ),
    _case("b", [], [], [(0, 0, 0)], [0.7]),
]


def test_froc_hits_fps_and_cpm_match_hand_computation():
    result = compute_froc(CASES)

    assert result.n_lesions == 2
    assert result.n_scans == 2
    np.testing.assert_allclose(result.fps_per_scan, [0, 0, 0.5, 1, 1, 1.5])
    np.testing.assert_allclose(result.sensitivity_curve, [0, 0.5, 0.5, 0.5, 1, 1])
    assert result.sensitivities == pytest.approx(
        {0.125: 0.5, 0.25: 0.5, 0.5: 0.5, 1.0: 1.0, 2.0: 1.0, 4.0: 1.0, 8.0: 1.0}
    )
    assert result.cpm == pytest.approx((3 * 0.5 + 4 * 1.0) / 7)


def test_curve_steps_are_read_as_numpy_interp_reads_them():
    # 4 scans; events 0.9 FP, 0.5 hit, 0.2 FP, 0.1 FP -> (0,0) (.25,0) (.25,1) (.5,1) (.75,1).
    cases = [
        _case("a", [(0, 0, 0)], [4], [(9, 9, 9), (0, 0, 1)], [0.9, 0.5]),
        _case("b", [], [], [(0, 0, 0), (1, 1, 1)], [0.2, 0.1]),
        _case("c", [], [], [], []),
        _case("d", [], [], [], []),
    ]
    result = compute_froc(cases)
    np.testing.assert_allclose(result.fps_per_scan, [0, 0.25, 0.25, 0.5, 0.75])
    assert result.sensitivities[0.125] == pytest.approx(0.0)
    assert result.sensitivities[0.25] == pytest.approx(1.0)


def test_prediction_just_outside_radius_is_a_false_positive():
    result = compute_froc([_case("a", [(0, 0, 0)], [6], [(3.001, 0, 0)], [0.9])])
    assert result.sensitivities[8.0] == 0.0
    np.testing.assert_allclose(result.fps_per_scan, [0, 1])


def test_no_predictions_gives_zero_sensitivity():
    result = compute_froc([_case("a", [(0, 0, 0)], [6], [], [])])
    assert result.cpm == 0.0
    assert set(result.sensitivities) == set(FP_RATES)


def test_no_lesions_at_all_gives_nan_sensitivities_not_a_crash():
    result = compute_froc([_case("a", [], [], [(0, 0, 0)], [0.9]), _case("b", [], [], [], [])])
    assert result.n_lesions == 0
    assert np.isnan(result.cpm)
    np.testing.assert_allclose(result.fps_per_scan, [0, 0.5])


def test_no_cases_is_refused():
    with pytest.raises(ValueError, match="at least one case"):
        compute_froc([])
