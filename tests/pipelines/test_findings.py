"""Findings from probability maps: hand-placed components with centres, sizes and scores known."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from pydantic import ValidationError

from pipelines.findings import (
    Finding,
    FindingsConfig,
    extract_findings,
    extract_findings_with_mask,
    study_score,
)

# i: 0.5 mm toward patient right (flipped), j: 0.8 mm posterior, k: 2 mm superior, shifted origin.
AFFINE = np.array(
    [
        [-0.5, 0.0, 0.0, 10.0],
        [0.0, 0.8, 0.0, -20.0],
        [0.0, 0.0, 2.0, 30.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
VOXEL_MM3 = 0.5 * 0.8 * 2.0


def _empty_map() -> np.ndarray:
    return np.zeros((10, 20, 30), dtype=np.float32)


def test_box_component_has_known_centre_size_and_score():
    prob = _empty_map()
    prob[2:4, 5:10, 10:14] = 0.9  # k 2..3, j 5..9, i 10..13: 40 voxels

    (finding,) = extract_findings(prob, AFFINE, FindingsConfig())

    volume_mm3 = 40 * VOXEL_MM3
    assert finding.id == 1
    assert finding.center_ijk == pytest.approx((11.5, 7.0, 2.5))
    assert finding.center_lps_mm == pytest.approx((-0.5 * 11.5 + 10, 0.8 * 7 - 20, 2 * 2.5 + 30))
    assert finding.volume_ml == pytest.approx(volume_mm3 / 1000)
    assert finding.diameter_mm == pytest.approx((6 * volume_mm3 / math.pi) ** (1 / 3))
    assert finding.score == pytest.approx(0.9)
    assert finding.confidence is None


def test_centre_is_probability_weighted_and_score_is_max_or_mean():
    prob = _empty_map()
    prob[5, 5, 20] = 0.6
    prob[5, 5, 21] = 0.9
    config = FindingsConfig(min_diameter_mm=0.0)

    (by_max,) = extract_findings(prob, AFFINE, config)
    (by_mean,) = extract_findings(prob, AFFINE, config.model_copy(update={"score": "mean"}))

    assert by_max.center_ijk[0] == pytest.approx((20 * 0.6 + 21 * 0.9) / 1.5)
    assert by_max.score == pytest.approx(0.9)
    assert by_mean.score == pytest.approx(0.75)


def test_diagonal_neighbours_form_one_component():
    prob = _empty_map()
    prob[1, 1, 1] = prob[2, 2, 2] = 0.8
    assert len(extract_findings(prob, AFFINE, FindingsConfig(min_diameter_mm=0.0))) == 1


def test_findings_are_ranked_by_score_capped_and_small_ones_dropped():
    prob = _empty_map()
    for n, score in enumerate([0.55, 0.95, 0.75, 0.65, 0.85]):
        prob[1:4, 1:4, 1 + 5 * n : 4 + 5 * n] = score  # 27 voxels, diameter ~3.4 mm
    prob[8, 18, 28] = 1.0  # one voxel: diameter ~1.2 mm, below min_diameter_mm

    findings = extract_findings(prob, AFFINE, FindingsConfig(max_findings=3))

    assert [f.id for f in findings] == [1, 2, 3]
    assert [f.score for f in findings] == pytest.approx([0.95, 0.85, 0.75])
    assert findings[0].center_ijk[0] == pytest.approx(7.0)


def test_finding_mask_labels_each_kept_component_with_its_finding_id():
    prob = _empty_map()
    for n, score in enumerate([0.55, 0.95, 0.75, 0.65, 0.85]):
        prob[1:4, 1:4, 1 + 5 * n : 4 + 5 * n] = score
    prob[8, 18, 28] = 1.0  # dropped: too small

    findings, mask = extract_findings_with_mask(prob, AFFINE, FindingsConfig(max_findings=3))

    assert mask.shape == prob.shape and mask.dtype == np.uint8
    for finding in findings:
        i, j, k = (round(v) for v in finding.center_ijk)
        assert mask[k, j, i] == finding.id
        assert np.count_nonzero(mask == finding.id) == 27
    assert set(np.unique(mask)) == {0, 1, 2, 3}  # the 0.55, 0.65 and 1-voxel ones are dropped
    assert mask[8, 18, 28] == 0
    assert not extract_findings_with_mask(_empty_map(), AFFINE, FindingsConfig())[1].any()


def test_threshold_is_inclusive_and_empty_map_has_no_findings():
    prob = _empty_map()
    assert extract_findings(prob, AFFINE, FindingsConfig()) == []
    prob[2:5, 2:5, 2:5] = 0.5
    assert len(extract_findings(prob, AFFINE, FindingsConfig(threshold=0.5))) == 1


def test_bad_shapes_and_config_are_refused():
    with pytest.raises(ValueError, match="3-D"):
        extract_findings(np.zeros((4, 4)), AFFINE, FindingsConfig())
    with pytest.raises(ValueError, match="4x4"):
        extract_findings(_empty_map(), np.eye(3), FindingsConfig())
    with pytest.raises(ValidationError):
        FindingsConfig(treshold=0.4)  # type: ignore[call-arg]


def test_large_map_is_fast():
    rng = np.random.default_rng(0)
    prob = (rng.random((250, 300, 300), dtype=np.float32) * 0.3).astype(np.float32)
    for n in range(30):
        prob[10 + 7 * n : 14 + 7 * n, 100:106, 50 + 5 * n : 54 + 5 * n] = 0.6 + n / 100
    start = time.perf_counter()
    findings = extract_findings(prob, np.eye(4), FindingsConfig())
    elapsed = time.perf_counter() - start
    assert len(findings) == 20
    assert findings[0].score == pytest.approx(0.89, abs=1e-6)
    assert elapsed < 2.0  # a few hundred ms alone; generous for a shared 2-core machine


def test_study_score_is_best_finding_score_and_zero_without_findings():
    findings = [
        Finding(1, (0, 0, 0), (0, 0, 0), 5.0, 0.1, 0.7),
        Finding(2, (1, 1, 1), (1, 1, 1), 4.0, 0.05, 0.4),
    ]
    assert study_score(findings) == 0.7
    assert study_score([]) == 0.0


def test_finding_to_dict_is_plain_json_data():
    finding = Finding(1, (1.0, 2.0, 3.0), (4.0, 5.0, 6.0), 5.0, 0.1, 0.7)
    assert finding.to_dict() == {
        "id": 1,
        "center_ijk": [1.0, 2.0, 3.0],
        "center_lps_mm": [4.0, 5.0, 6.0],
        "diameter_mm": 5.0,
        "volume_ml": 0.1,
        "score": 0.7,
        "confidence": None,
    }


def test_noisy_or_study_score_combines_every_calibrated_finding():
    findings = [
        Finding(1, (0, 0, 0), (0, 0, 0), 5.0, 0.1, 0.9, confidence=0.5),
        Finding(2, (1, 1, 1), (1, 1, 1), 4.0, 0.05, 0.8, confidence=0.5),
    ]
    # calibrated confidences, not raw scores: 1 - 0.5 * 0.5
    assert study_score(findings, "noisy_or") == pytest.approx(0.75)
    assert study_score(findings, "max") == 0.9
    assert study_score([], "noisy_or") == 0.0
    uncalibrated = [Finding(1, (0, 0, 0), (0, 0, 0), 5.0, 0.1, 0.2)]
    assert study_score(uncalibrated, "noisy_or") == pytest.approx(0.2)
