"""From a lesion probability map to a short list of findings, and from findings to a study score.

A *finding* is one connected component of the voxels whose probability is at least
``FindingsConfig.threshold`` (26-connectivity, :func:`scipy.ndimage.label`). Each finding reports
its probability-weighted centroid (voxel index and LPS millimetres), its size as the diameter of
the sphere of equal volume, and a score: the maximum (or mean) probability inside the component.
Scores are uncalibrated; :func:`calibrate_findings` adds the calibrated ``confidence`` that the
result JSON reports.

Only the bounding box of the foreground is labelled and only foreground voxels are visited
afterwards, so the cost follows the foreground, not the volume.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

_CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class Finding:
    """One detected lesion candidate.

    ``id`` is 1-based in descending score order. ``center_ijk`` is the (i, j, k) voxel index in
    the array the finding was extracted from (fractional: a weighted centroid). ``score`` is the
    uncalibrated model score in [0, 1]; ``confidence`` is the calibrated probability that the
    finding is a true lesion, ``None`` until a calibrator is applied.
    """

    id: int
    center_ijk: tuple[float, float, float]
    center_lps_mm: tuple[float, float, float]
    diameter_mm: float
    volume_ml: float
    score: float
    confidence: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (tuples become lists)."""
        data = asdict(self)
        data["center_ijk"] = list(self.center_ijk)
        data["center_lps_mm"] = list(self.center_lps_mm)
        return data


class FindingsConfig(BaseModel):
    """How a probability map becomes findings; stored in the model bundle."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Probability at or above which a voxel belongs to a component.
    threshold: float = Field(default=0.5, gt=0.0, le=1.0)
    #: Components whose equivalent-sphere diameter is smaller are dropped (speckle).
    min_diameter_mm: float = Field(default=2.0, ge=0.0)
    #: At most this many findings are returned, the highest scores first.
    max_findings: int = Field(default=20, ge=1, le=255)  # ids fit a uint8 mask and SEG
    #: Score of a component: its maximum or its mean voxel probability.
    score: Literal["max", "mean"] = "max"


def extract_findings(
    prob_kji: np.ndarray, affine_lps: np.ndarray, config: FindingsConfig
) -> list[Finding]:
    """Connected components of ``prob_kji >= config.threshold`` as findings, best first.

    Args:
        prob_kji: lesion probability, shape ``[k, j, i]`` (slice, row, column), values in [0, 1].
        affine_lps: ``[4, 4]`` map from voxel ``(i, j, k, 1)`` to patient LPS millimetres.
        config: threshold, minimum size, maximum count and score reduction.

    Returns:
        At most ``config.max_findings`` findings in descending score order (ties: larger volume
        first), with ids ``1..n`` in that order.
    """
    return extract_findings_with_mask(prob_kji, affine_lps, config)[0]


def extract_findings_with_mask(
    prob_kji: np.ndarray, affine_lps: np.ndarray, config: FindingsConfig
) -> tuple[list[Finding], np.ndarray]:
    """:func:`extract_findings`, plus the uint8 ``[k, j, i]`` mask on ``prob_kji``'s grid whose
    voxel value ``n`` belongs to finding ``n`` (0 elsewhere, and for dropped components): the
    segmentation the DICOM SEG and key images are drawn from, labelled once."""
    prob = np.asarray(prob_kji)
    affine = np.asarray(affine_lps, dtype=np.float64)
    if prob.ndim != 3:
        raise ValueError(f"prob_kji must be 3-D [k, j, i], got shape {prob.shape}")
    if affine.shape != (4, 4):
        raise ValueError(f"affine_lps must be 4x4, got shape {affine.shape}")

    mask = prob >= config.threshold
    finding_mask = np.zeros(prob.shape, dtype=np.uint8)
    box = _bounding_box(mask)
    if box is None:
        return [], finding_mask
    labels, n_components = ndimage.label(mask[box], structure=_CONNECTIVITY_26)
    k, j, i = np.nonzero(labels)
    component = labels[k, j, i] - 1
    k, j, i = k + box[0].start, j + box[1].start, i + box[2].start
    weight = prob[k, j, i].astype(np.float64)
    n_voxels = np.bincount(component, minlength=n_components)
    weight_sum = np.bincount(component, weights=weight, minlength=n_components)
    weighted_ijk = [
        np.bincount(component, weights=weight * a, minlength=n_components) for a in (i, j, k)
    ]
    centroid_ijk = np.stack(weighted_ijk, axis=1) / weight_sum[:, None]
    if config.score == "max":
        score = np.zeros(n_components)
        np.maximum.at(score, component, weight)
    else:
        score = weight_sum / n_voxels

    voxel_volume_mm3 = abs(float(np.linalg.det(affine[:3, :3])))
    volume_mm3 = n_voxels * voxel_volume_mm3
    diameter_mm = np.cbrt(6.0 * volume_mm3 / math.pi)
    keep = np.flatnonzero(diameter_mm >= config.min_diameter_mm)
    order = keep[np.lexsort((-volume_mm3[keep], -score[keep]))][: config.max_findings]

    center_lps = centroid_ijk[order] @ affine[:3, :3].T + affine[:3, 3]
    finding_of_label = np.zeros(n_components + 1, dtype=np.uint8)
    finding_of_label[order + 1] = np.arange(1, order.size + 1)
    finding_mask[box] = finding_of_label[labels]
    findings = [
        Finding(
            id=rank,
            center_ijk=_triple(centroid_ijk[c]),
            center_lps_mm=_triple(center_lps[rank - 1]),
            diameter_mm=float(diameter_mm[c]),
            volume_ml=float(volume_mm3[c] / 1000.0),
            score=float(np.clip(score[c], 0.0, 1.0)),
        )
        for rank, c in enumerate(order, start=1)
    ]
    return findings, finding_mask


#: How the findings of a study combine into its score: the best finding's, or a noisy-OR of all.
StudyScore = Literal["max", "noisy_or"]


def study_score(findings: Sequence[Finding], method: StudyScore = "max") -> float:
    """Uncalibrated score that the study holds at least one lesion; 0.0 without findings.

    ``max``: the best finding's score, monotone in the strongest evidence. ``noisy_or``:
    ``1 - prod(1 - p)`` over every finding's calibrated ``confidence`` (its score when not
    calibrated), so several likely nodules say more than one. A noisy-OR of raw segmentation
    scores would grow with every weak false positive; of calibrated confidences it is the
    probability that not every finding is false, were they independent. Either way the study
    calibrator, fit on this score, turns it into a probability; ``basira calibrate`` keeps the
    method with the better validation AUC.
    """
    if method == "max":
        return max((finding.score for finding in findings), default=0.0)
    probs = np.array(
        [f.score if f.confidence is None else f.confidence for f in findings], dtype=np.float64
    )
    return float(1.0 - np.prod(1.0 - np.clip(probs, 0.0, 1.0)))


class ScoreCalibrator(Protocol):
    """What :func:`calibrate_findings` needs of a calibrator (:mod:`pipelines.calibration`)."""

    def apply(self, probs: np.ndarray) -> np.ndarray: ...


def calibrate_findings(findings: Sequence[Finding], calibrator: ScoreCalibrator) -> list[Finding]:
    """The same findings with ``confidence`` set to the calibrated score."""
    if not findings:
        return []
    scores = np.array([finding.score for finding in findings], dtype=np.float64)
    confidences = calibrator.apply(scores)
    return [
        replace(finding, confidence=float(conf))
        for finding, conf in zip(findings, confidences, strict=True)
    ]


def _bounding_box(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    """The smallest box holding every True voxel of a ``[k, j, i]`` mask (labelling only it is
    far cheaper than labelling the whole volume); None when the mask is empty."""
    spans = []
    for axis in range(3):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        if present.size == 0:
            return None
        spans.append(slice(int(present[0]), int(present[-1]) + 1))
    return (spans[0], spans[1], spans[2])


def _triple(values: np.ndarray) -> tuple[float, float, float]:
    return (float(values[0]), float(values[1]), float(values[2]))
