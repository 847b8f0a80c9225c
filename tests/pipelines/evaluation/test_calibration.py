"""ECE, Brier, reliability data and the two calibrators, on hand-computed and synthetic data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import special

from pipelines.calibration import IsotonicCalibrator, TemperatureCalibrator, calibrator_from_dict
from pipelines.datasets.manifest import Lesion
from pipelines.errors import ConfigError, MissingClassError
from pipelines.evaluation.calibrate import choose_findings_threshold
from pipelines.evaluation.calibration import (
    compute_brier,
    compute_ece,
    compute_reliability,
    fit_calibrator,
)
from pipelines.evaluation.report import CaseRecord
from pipelines.findings import Finding, calibrate_findings

PROBS = np.array([0.05, 0.15, 0.15, 0.95])
LABELS = np.array([0, 1, 0, 1])


def test_ece_weights_each_bin_gap_by_its_share():
    # bin 0: |0.05 - 0| * 1/4; bin 1: |0.15 - 0.5| * 2/4; bin 9: |0.95 - 1| * 1/4.
    assert compute_ece(PROBS, LABELS) == pytest.approx(0.0125 + 0.175 + 0.0125)
    # With 2 bins the first three share a bin: |0.35/3 - 1/3| * 3/4 + 0.05 * 1/4.
    expected = abs(0.35 / 3 - 1 / 3) * 0.75 + 0.0125
    assert compute_ece(PROBS, LABELS, n_bins=2) == pytest.approx(expected)


def test_probability_one_falls_in_last_bin_and_perfect_calibration_is_zero():
    assert compute_ece([1.0, 0.0], [1, 0]) == 0.0
    assert compute_reliability([1.0], [1])[-1]["count"] == 1


def test_brier_is_mean_squared_error():
    assert compute_brier(PROBS, LABELS) == pytest.approx((0.0025 + 0.7225 + 0.0225 + 0.0025) / 4)


def test_empty_input_gives_nan_metrics():
    assert math.isnan(compute_ece([], []))
    assert math.isnan(compute_brier([], []))


def test_reliability_bins_report_counts_means_and_empty_bins_as_none():
    bins = compute_reliability(PROBS, LABELS, n_bins=10)
    assert len(bins) == 10
    assert bins[1] == {
        "bin_low": 0.1,
        "bin_high": 0.2,
        "count": 2,
        "mean_probability": pytest.approx(0.15),
        "fraction_positive": 0.5,
    }
    assert bins[5]["count"] == 0
    assert bins[5]["mean_probability"] is None


def test_temperature_fit_recovers_known_temperature():
    rng = np.random.default_rng(0)
    true_probs = rng.uniform(0.02, 0.98, 20000)
    labels = rng.random(20000) < true_probs
    overconfident = special.expit(special.logit(true_probs) * 2.5)

    calibrator = fit_calibrator("temperature", overconfident, labels)

    assert isinstance(calibrator, TemperatureCalibrator)
    assert calibrator.temperature == pytest.approx(2.5, rel=0.06)
    assert compute_ece(calibrator.apply(overconfident), labels) < 0.02
    assert compute_ece(overconfident, labels) > 0.1


def test_isotonic_fit_is_monotone_and_improves_calibration():
    rng = np.random.default_rng(1)
    scores = rng.random(5000)
    labels = rng.random(5000) < scores**3  # scores overstate the probability

    calibrator = fit_calibrator("isotonic", scores, labels)
    grid = np.linspace(-0.5, 1.5, 401)
    calibrated = calibrator.apply(grid)

    assert isinstance(calibrator, IsotonicCalibrator)
    assert np.all(np.diff(calibrated) >= 0)
    assert calibrated.min() >= 0 and calibrated.max() <= 1
    assert compute_ece(calibrator.apply(scores), labels) < compute_ece(scores, labels) / 5


@pytest.mark.parametrize("method", ["temperature", "isotonic"])
def test_calibrators_round_trip_through_json(method):
    rng = np.random.default_rng(2)
    scores = rng.random(300)
    labels = rng.random(300) < scores
    calibrator = fit_calibrator(method, scores, labels)

    restored = calibrator_from_dict(json.loads(json.dumps(calibrator.to_dict())))

    assert restored == calibrator
    np.testing.assert_allclose(restored.apply(scores), calibrator.apply(scores))


@pytest.mark.parametrize(
    "data",
    [
        {"method": "platt", "a": 1.0},
        {"method": "temperature", "temperature": -1.0},
        {"method": "isotonic", "x": [0.0, 1.0], "y": [0.9, 0.1]},
        {"method": "isotonic", "x": [0.0, 1.0], "y": [0.5]},
    ],
)
def test_invalid_stored_calibration_raises_config_error(data):
    with pytest.raises(ConfigError):
        calibrator_from_dict(data)


@pytest.mark.parametrize("method", ["temperature", "isotonic"])
def test_fitting_on_one_class_raises_missing_class(method):
    with pytest.raises(MissingClassError):
        fit_calibrator(method, [0.2, 0.8], [1, 1])


def test_calibrate_findings_sets_confidence_and_keeps_score():
    findings = [Finding(1, (0, 0, 0), (0, 0, 0), 5.0, 0.1, 0.9)]
    (calibrated,) = calibrate_findings(findings, TemperatureCalibrator(temperature=2.0))
    assert calibrated.score == 0.9
    assert calibrated.confidence == pytest.approx(special.expit(special.logit(0.9) / 2))
    assert calibrate_findings([], TemperatureCalibrator(temperature=2.0)) == []


def _record(case_id: str, lesion: bool, hit: float | None, false: list[float]) -> CaseRecord:
    """A case with one 10 mm lesion at the origin (or none), a finding on it scored ``hit``
    (None: missed) and false findings far away scored ``false``."""
    lesions = [Lesion(id=1, center_lps_mm=(0.0, 0.0, 0.0), diameter_mm=10.0)] if lesion else []
    placed = ([((0.0, 0.0, 0.0), hit)] if hit is not None else []) + [
        ((100.0 + n, 0.0, 0.0), score) for n, score in enumerate(false)
    ]
    findings = [
        Finding(n + 1, (0.0, 0.0, 0.0), centre, diameter_mm=5.0, volume_ml=0.1, score=score)
        for n, (centre, score) in enumerate(placed)
    ]
    return CaseRecord(case_id=case_id, lesions=lesions, findings=findings, study_probability=0.0)


def test_findings_threshold_ties_on_cpm_go_to_the_better_study_auc() -> None:
    """Both thresholds find the same two lesions, ranked above every false finding (equal CPM).
    At 0.7 the study whose lesion was missed and the two lesion-free studies all score 0 and
    tie; at 0.3 their weak false findings keep them in order (0.45 above 0.4 and 0.35)."""
    at_low = [
        _record("a", True, 0.9, []),
        _record("b", True, 0.95, []),
        _record("c", True, None, [0.45]),
        _record("d", False, None, [0.4]),
        _record("e", False, None, [0.35]),
    ]
    at_high = [
        _record("a", True, 0.9, []),
        _record("b", True, 0.95, []),
        _record("c", True, None, []),
        _record("d", False, None, []),
        _record("e", False, None, []),
    ]
    choice = choose_findings_threshold({0.3: at_low, 0.7: at_high})
    assert choice.cpm_by_threshold["0.3"] == pytest.approx(choice.cpm_by_threshold["0.7"])
    assert choice.auc_by_threshold == {"0.3": 1.0, "0.7": pytest.approx(5 / 6)}
    assert choice.threshold == 0.3
    assert choose_findings_threshold({0.3: at_high, 0.7: at_high}).threshold == 0.7


def test_the_study_score_that_ranks_studies_better_is_kept() -> None:
    """Lesion studies hold several moderate findings, lesion-free ones one strong false finding:
    the best finding ranks them wrongly, a noisy-OR of all ranks them right."""
    from pipelines.evaluation.calibrate import choose_study_score

    records = [
        _record("a", True, 0.6, [0.6, 0.6]),
        _record("b", True, 0.6, [0.6, 0.6, 0.6]),
        _record("c", False, None, [0.7]),
        _record("d", False, None, [0.65]),
    ]
    identity = TemperatureCalibrator(temperature=1.0)
    chosen, auc = choose_study_score(records, identity)
    assert auc == {"max": 0.0, "noisy_or": 1.0}
    assert chosen == "noisy_or"
    tie = [_record("a", True, 0.9, []), _record("c", False, None, [0.2])]
    assert choose_study_score(tie, identity)[0] == "max"
