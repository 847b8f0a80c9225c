"""Validation on the production path: whole volume → sliding window → findings → FROC.

The network being trained is wrapped in a :class:`~pipelines.engine.torch_engine.TorchEngine`
with the bundle's inference settings, every validation volume is predicted whole, findings are
extracted with the bundle's :class:`~pipelines.findings.FindingsConfig`, and scored with the
LUNA16 FROC (CPM), the study-level ROC AUC (when both classes are present) and a global Dice of
the thresholded probability map.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.engine.base import Engine
from pipelines.evaluation.froc import CaseDetections, compute_froc
from pipelines.findings import FindingsConfig, extract_findings, study_score
from pipelines.prepare import PreparedCase, load_prepared_case


@dataclass(frozen=True)
class ValidationCase:
    """One validation volume with its ground truth.

    ``image_kji`` and ``label_kji`` are ``[k, j, i]`` (float16 intensities, bool lesion mask);
    ``affine_lps`` maps voxel ``(i, j, k, 1)`` to LPS mm; ``lesion_centers_lps_mm`` is ``[n, 3]``
    and ``lesion_diameters_mm`` ``[n]``.
    """

    case_id: str
    image_kji: np.ndarray
    label_kji: np.ndarray
    affine_lps: np.ndarray
    lesion_centers_lps_mm: np.ndarray
    lesion_diameters_mm: np.ndarray
    has_lesion: bool


def load_validation_cases(data_dir: Path, cases: Sequence[PreparedCase]) -> list[ValidationCase]:
    """Read the cached validation volumes once (kept in their cached dtype to bound memory)."""
    loaded = []
    for case in cases:
        data = load_prepared_case(data_dir / case.cache)
        lesions = data["lesions"]
        loaded.append(
            ValidationCase(
                case_id=case.case_id,
                image_kji=data["image"],
                label_kji=data["label"] > 0,
                affine_lps=data["affine_lps"],
                lesion_centers_lps_mm=np.array(
                    [lesion["center_lps_mm"] for lesion in lesions], dtype=np.float64
                ).reshape(-1, 3),
                lesion_diameters_mm=np.array(
                    [lesion["diameter_mm"] for lesion in lesions], dtype=np.float64
                ),
                has_lesion=case.has_lesion or bool(lesions),
            )
        )
    return loaded


def _study_auc(labels: list[bool], scores: list[float]) -> float | None:
    if len(set(labels)) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def validate(
    engine: Engine, cases: Sequence[ValidationCase], findings: FindingsConfig
) -> dict[str, float]:
    """Detection and segmentation metrics of ``engine`` on ``cases``.

    Returns:
        ``cpm``, ``sens@<rate>`` for each LUNA16 false-positive rate, ``dice`` (global, at the
        findings threshold), ``findings_per_scan``, and ``auc`` when both study classes are
        present.
    """
    detections: list[CaseDetections] = []
    study_labels: list[bool] = []
    study_scores: list[float] = []
    overlap = predicted = truth = 0
    for case in cases:
        prob = engine.predict(case.image_kji)
        found = extract_findings(prob, case.affine_lps, findings)
        detections.append(
            CaseDetections(
                case_id=case.case_id,
                lesion_centers_lps_mm=case.lesion_centers_lps_mm,
                lesion_diameters_mm=case.lesion_diameters_mm,
                pred_centers_lps_mm=np.array(
                    [f.center_lps_mm for f in found], dtype=np.float64
                ).reshape(-1, 3),
                pred_scores=np.array([f.score for f in found], dtype=np.float64),
            )
        )
        study_labels.append(case.has_lesion)
        study_scores.append(study_score(found))
        mask = prob >= findings.threshold
        overlap += int(np.count_nonzero(mask & case.label_kji))
        predicted += int(np.count_nonzero(mask))
        truth += int(np.count_nonzero(case.label_kji))
    froc = compute_froc(detections)
    metrics = {"cpm": froc.cpm, "dice": 2 * overlap / max(predicted + truth, 1)}
    metrics |= {f"sens@{rate:g}": value for rate, value in froc.sensitivities.items()}
    metrics["findings_per_scan"] = sum(len(d.pred_scores) for d in detections) / len(cases)
    auc = _study_auc(study_labels, study_scores)
    if auc is not None:
        metrics["auc"] = auc
    return metrics
