"""evaluate_cases / write_metrics on three hand-computed cases, and the degenerate sets."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from pydantic import ValidationError

from pipelines.datasets.manifest import Lesion
from pipelines.evaluation.calibration import compute_brier, fit_calibrator
from pipelines.evaluation.report import (
    CaseRecord,
    EvaluationConfig,
    evaluate_cases,
    finding_outcomes,
    write_metrics,
)
from pipelines.evaluation.segmentation import DiceCounts
from pipelines.findings import Finding, calibrate_findings

FAST = EvaluationConfig(n_bootstrap=200, seed=7)


def _finding(rank: int, center: tuple[float, float, float], score: float) -> Finding:
    return Finding(rank, (0.0, 0.0, 0.0), center, 5.0, 0.05, score)


def _lesion(n: int, center: tuple[float, float, float], diameter: float, kind: str) -> Lesion:
    return Lesion(id=n, center_lps_mm=center, diameter_mm=diameter, type=kind)


# a: L1 (d 10, solid) hit by 0.9 and 0.4; L2 (d 6, ground glass) hit by 0.3; FPs 0.8, 0.2.
# b: no lesion, FP 0.7. c: L3 (d 25, solid) missed, no findings.
CASES = [
    CaseRecord(
        "a",
        [_lesion(1, (0, 0, 0), 10, "solid"), _lesion(2, (50, 0, 0), 6, "ground_glass")],
        [
            _finding(1, (3, 0, 0), 0.9),
            _finding(2, (100, 0, 0), 0.8),
            _finding(3, (1, 1, 1), 0.4),
            _finding(4, (50, 0, 3), 0.3),
            _finding(5, (0, 50, 0), 0.2),
        ],
        study_probability=0.9,
        slice_thickness_mm=1.0,
        dice_counts=DiceCounts(5, 10, 10),
    ),
    CaseRecord("b", [], [_finding(1, (0, 0, 0), 0.7)], 0.7, 5.0, DiceCounts(0, 4, 0)),
    CaseRecord("c", [_lesion(3, (0, 0, 0), 25, "solid")], [], 0.2),
]


@pytest.fixture(scope="module")
def metrics():
    return evaluate_cases(CASES, FAST)


def test_counts_and_detection_match_hand_computation(metrics):
    assert (metrics["n_cases"], metrics["n_positive_cases"], metrics["n_lesions"]) == (3, 2, 3)
    assert metrics["n_findings"] == 6
    detection = metrics["detection"]
    # Events 0.9 H, 0.8 F, 0.7 F, 0.3 H, 0.2 F over 3 scans and 3 lesions.
    assert detection["froc_curve"]["fps_per_scan"] == pytest.approx([0, 0, 1 / 3, 2 / 3, 2 / 3, 1])
    assert detection["froc_curve"]["sensitivity"] == pytest.approx(
        [0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3]
    )
    assert detection["lesion_sensitivity"]["value"] == pytest.approx(2 / 3)
    assert detection["sensitivity_at_fp_rate"]["8"]["value"] == pytest.approx(2 / 3)


def test_study_metrics_match_hand_computation(metrics):
    study = metrics["study"]
    assert study["auc"]["value"] == pytest.approx(0.5)  # 0.9 > 0.7, 0.2 < 0.7
    assert study["sensitivity"]["value"] == pytest.approx(0.5)
    assert study["specificity"]["value"] == pytest.approx(0.0)


def test_calibration_and_dice_match_hand_computation(metrics):
    calibration = metrics["calibration"]
    assert calibration["study"]["brier"]["value"] == pytest.approx((0.01 + 0.49 + 0.64) / 3)
    findings = calibration["findings"]
    assert findings["n_samples"] == 6
    # Outcomes: 0.9 hit, 0.8 FP, 0.4 hit (redundant, still a hit), 0.3 hit, 0.2 FP, 0.7 FP.
    assert findings["brier"]["value"] == pytest.approx(
        (0.01 + 0.64 + 0.36 + 0.49 + 0.04 + 0.49) / 6
    )
    segmentation = metrics["segmentation"]
    assert segmentation["n_cases"] == 2
    assert segmentation["dice_mean"]["value"] == pytest.approx(0.5)
    assert segmentation["dice_global"]["value"] == pytest.approx(10 / 24)


def test_subgroups_ignore_other_lesions_but_keep_all_false_positives(metrics):
    size = metrics["subgroups"]["lesion_size"]
    assert list(size) == ["<6 mm", "6-10 mm", "10-20 mm", ">=20 mm"]
    assert size["<6 mm"]["n_lesions"] == 0
    assert size["<6 mm"]["cpm"]["value"] is None
    # 6-10 mm holds L2 only: events 0.8 F, 0.7 F, 0.3 H, 0.2 F -> sensitivity 1 from 2/3 FP/scan.
    assert size["6-10 mm"]["cpm"]["value"] == pytest.approx(4 / 7)
    assert size[">=20 mm"]["lesion_sensitivity"]["value"] == 0.0
    kinds = metrics["subgroups"]["lesion_type"]
    assert kinds["solid"]["lesion_sensitivity"]["value"] == pytest.approx(0.5)
    assert kinds["ground_glass"]["n_lesions"] == 1
    thickness = metrics["subgroups"]["slice_thickness"]
    assert {k: v["n_cases"] for k, v in thickness.items()} == {
        "<2 mm": 1,
        ">=4 mm": 1,
        "unknown": 1,
    }


def test_every_interval_is_value_ci_low_ci_high_around_the_value(metrics):
    for interval in [metrics["detection"]["cpm"], metrics["calibration"]["findings"]["brier"]]:
        assert set(interval) == {"value", "ci_low", "ci_high"}
        assert interval["ci_low"] <= interval["value"] <= interval["ci_high"]
    assert evaluate_cases(CASES, FAST) == metrics  # same seed, same intervals


def test_all_positive_studies_report_auc_and_specificity_as_null():
    metrics = evaluate_cases([CASES[0], CASES[2]], FAST)
    assert metrics["study"]["auc"] == {"value": None, "ci_low": None, "ci_high": None}
    assert metrics["study"]["specificity"]["value"] is None
    json.dumps(metrics, allow_nan=False)


def test_no_lesions_at_all_reports_null_sensitivities():
    metrics = evaluate_cases([CASES[1]], FAST)
    assert metrics["n_lesions"] == 0
    assert metrics["detection"]["cpm"]["value"] is None
    assert metrics["detection"]["lesion_sensitivity"]["value"] is None
    assert metrics["study"]["auc"]["value"] is None


def test_no_predictions_gives_zero_detection_and_empty_finding_calibration():
    cases = [CaseRecord("c", CASES[2].lesions, [], 0.1), CaseRecord("d", [], [], 0.0)]
    metrics = evaluate_cases(cases, FAST)
    assert metrics["detection"]["cpm"]["value"] == 0.0
    assert metrics["calibration"]["findings"]["n_samples"] == 0
    assert metrics["calibration"]["findings"]["ece"]["value"] is None
    assert metrics["segmentation"] is None


def test_no_cases_and_bad_config_are_refused():
    with pytest.raises(ValueError, match="at least one case"):
        evaluate_cases([])
    with pytest.raises(ValidationError):
        EvaluationConfig(size_bins_mm=(10.0, 6.0))


def test_write_metrics_writes_plain_json_and_pngs(tmp_path, metrics):
    paths = write_metrics(metrics, tmp_path / "eval")
    assert sorted(p.name for p in paths) == [
        "froc.png",
        "metrics.json",
        "reliability.png",
        "roc.png",
    ]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == metrics
    for png in paths[1:]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_finding_outcomes_feed_a_calibrator_whose_confidences_are_evaluated():
    scores, hits, case_index = finding_outcomes(CASES)
    assert scores.tolist() == [0.9, 0.8, 0.4, 0.3, 0.2, 0.7]
    assert hits.tolist() == [1, 0, 1, 1, 0, 0]
    assert case_index.tolist() == [0, 0, 0, 0, 0, 1]

    calibrator = fit_calibrator("isotonic", scores, hits)
    calibrated = [
        replace(case, findings=calibrate_findings(case.findings, calibrator)) for case in CASES
    ]
    metrics = evaluate_cases(calibrated, FAST)
    expected = compute_brier(calibrator.apply(scores), hits)
    assert metrics["calibration"]["findings"]["brier"]["value"] == pytest.approx(expected)


def test_lesion_free_studies_report_what_a_radiologist_would_see(metrics) -> None:
    # b is the only lesion-free case, and it shows one finding
    assert metrics["lesion_free"] == {
        "n_cases": 1,
        "findings_median": 1.0,
        "findings_mean": 1.0,
        "share_with_a_finding": 1.0,
    }


def test_sizing_compares_the_best_hitting_finding_with_the_truth(metrics) -> None:
    # L1 (10 mm) is hit best by the 0.9 finding, L2 (6 mm) by the 0.3 one; both say 5 mm.
    # Without a volume the truth is the nominal diameter.
    sizing = metrics["sizing"]
    assert sizing["n_lesions"] == 2
    assert sizing["median_abs_error_mm"] == pytest.approx(3.0)  # |5-10| and |5-6|
    assert sizing["mean_error_mm"] == pytest.approx(-3.0)
    assert sizing["by_size"]["6-10 mm"]["n"] == 1
    assert sizing["by_size"]["10-20 mm"]["median_abs_error_mm"] == pytest.approx(5.0)
    assert sizing["by_size"][">=20 mm"] == {
        "n": 0,
        "median_abs_error_mm": None,
        "mean_error_mm": None,
    }


def test_sizing_uses_the_mask_volume_when_the_truth_has_one() -> None:
    lesion = Lesion(id=1, center_lps_mm=(0, 0, 0), diameter_mm=8.0, volume_ml=0.0654498)
    case = CaseRecord("v", [lesion], [_finding(1, (0, 0, 0), 0.9)], 0.9)
    sizing = evaluate_cases([case], FAST)["sizing"]
    assert sizing["mean_error_mm"] == pytest.approx(0.0, abs=1e-3)  # 5 mm sphere: 0.06545 ml


def test_location_and_target_size_subgroups(metrics) -> None:
    subgroups = metrics["subgroups"]
    assert set(subgroups["lesion_location"]) == {"interior", "juxta-vascular", "juxta-pleural"}
    assert subgroups["lesion_location"]["interior"]["n_lesions"] == 3
    assert subgroups["lesion_location"]["juxta-pleural"]["n_lesions"] == 0
    assert subgroups["lesion_size_target"][">=6 mm"]["n_lesions"] == 3
    assert subgroups["lesion_size_target"]["<6 mm"]["n_lesions"] == 0


@pytest.mark.parametrize(
    ("attached", "location"),
    [([], "interior"), (["vessel"], "juxta-vascular"), (["pleura", "vessel"], "juxta-pleural")],
)
def test_a_lesion_location_is_read_from_what_it_touches(attached: list[str], location: str) -> None:
    from pipelines.evaluation.report import lesion_location

    lesion = Lesion(id=1, center_lps_mm=(0, 0, 0), diameter_mm=8.0, attached_to=attached)
    assert lesion_location(lesion) == location
