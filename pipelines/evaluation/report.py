"""One evaluation of a set of cases: every metric with its bootstrap CI, as plain JSON data.

The caller (``basira evaluate``, validation during training) runs inference, fills one
:class:`CaseRecord` per case, and calls :func:`evaluate_cases`; :func:`write_metrics` writes
``metrics.json`` and the PNG plots. ``docs/evaluation.md`` describes every key.

Conventions: a study is *positive* when it holds at least one ground-truth lesion. FROC uses the
findings' raw ``score`` (rank-based, and isotonic calibration would add ties); calibration
metrics use each finding's ``confidence`` when set, otherwise its score. A finding's outcome is 1
when it hits a lesion (LUNA16 rule, :mod:`pipelines.evaluation.froc`).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipelines.datasets.manifest import Lesion
from pipelines.evaluation import classification
from pipelines.evaluation.bootstrap import bootstrap_case_weights, bootstrap_ci, bootstrap_cis
from pipelines.evaluation.calibration import compute_reliability, weighted_brier, weighted_ece
from pipelines.evaluation.froc import (
    FP_RATES,
    CaseDetections,
    FrocEntries,
    collect_froc_entries,
    compute_froc_curves,
    match_case,
    sensitivities_at,
)
from pipelines.evaluation.segmentation import DiceCounts, weighted_global_dice, weighted_mean_dice
from pipelines.evaluation.subgroups import SIZE_EDGES_MM, bin_label, bin_labels
from pipelines.findings import Finding

METRICS_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class CaseRecord:
    """What evaluation needs to know about one case after inference.

    ``findings`` come from :func:`pipelines.findings.extract_findings` (centres in LPS mm);
    ``study_probability`` is the study-level probability as served (calibrated when the bundle
    has a calibrator); ``dice_counts`` from
    :func:`pipelines.evaluation.segmentation.compute_dice_counts` when masks were compared.
    """

    case_id: str
    lesions: Sequence[Lesion]
    findings: Sequence[Finding]
    study_probability: float
    slice_thickness_mm: float | None = None
    dice_counts: DiceCounts | None = None

    def detections(self) -> CaseDetections:
        """The case in the array form FROC works on."""
        return CaseDetections(
            case_id=self.case_id,
            lesion_centers_lps_mm=np.array([les.center_lps_mm for les in self.lesions]),
            lesion_diameters_mm=np.array([les.diameter_mm for les in self.lesions]),
            pred_centers_lps_mm=np.array([f.center_lps_mm for f in self.findings]),
            pred_scores=np.array([f.score for f in self.findings]),
        )


class EvaluationConfig(BaseModel):
    """How :func:`evaluate_cases` summarises; the ``evaluate`` section of ``params.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Bootstrap resamples of the cases (0: no intervals).
    n_bootstrap: int = Field(default=1000, ge=0)
    seed: int = 0
    confidence_level: float = Field(default=0.95, gt=0.0, lt=1.0)
    fp_rates: tuple[float, ...] = FP_RATES
    ece_bins: int = Field(default=10, ge=1)
    #: Study probability at or above which a study is called positive (the operating point).
    study_threshold: float = 0.5
    #: Finding score at or above which a hit counts for lesion-level sensitivity.
    finding_threshold: float = 0.0
    size_bins_mm: tuple[float, ...] = SIZE_EDGES_MM
    #: the coarse split the release targets are stated on (``<6 mm`` and ``>=6 mm``)
    target_size_bins_mm: tuple[float, ...] = (6.0,)
    thickness_bins_mm: tuple[float, ...] = (2.0, 4.0)

    @field_validator("fp_rates", "size_bins_mm", "target_size_bins_mm", "thickness_bins_mm")
    @classmethod
    def _increasing(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError("must be strictly increasing")
        return value


def evaluate_cases(
    cases: Sequence[CaseRecord], config: EvaluationConfig | None = None
) -> dict[str, Any]:
    """Every metric of ``cases`` with bootstrap CIs, as JSON-ready data (NaN → None)."""
    if not cases:
        raise ValueError("evaluate_cases needs at least one case")
    config = config or EvaluationConfig()
    weights = bootstrap_case_weights(len(cases), config.n_bootstrap, config.seed)
    detections = [case.detections() for case in cases]
    n_lesions = sum(len(case.lesions) for case in cases)
    metrics = {
        "schema_version": METRICS_SCHEMA_VERSION,
        "n_cases": len(cases),
        "n_positive_cases": sum(1 for case in cases if case.lesions),
        "n_lesions": n_lesions,
        "n_findings": sum(len(case.findings) for case in cases),
        "settings": config.model_dump(mode="json"),
        "detection": _detection(detections, None, weights, config, curve=True),
        "study": _study(cases, weights, config),
        "calibration": _calibration(cases, detections, weights, config),
        "segmentation": _segmentation(cases, weights, config),
        "subgroups": _subgroups(cases, detections, weights, config),
        "lesion_free": _lesion_free(cases),
        "sizing": _sizing(cases, detections, config),
    }
    return _plain(metrics)


def write_metrics(metrics: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write ``metrics.json`` and the FROC, ROC and reliability PNGs; returns the paths.

    (matplotlib is imported here, not when evaluating, so validation during training skips it.)
    """
    from pipelines.evaluation import plots

    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n", "utf-8")
    return [metrics_path, *plots.plot_all(metrics, out_dir)]


def _detection(
    detections: Sequence[CaseDetections],
    lesion_included: Sequence[np.ndarray] | None,
    weights: np.ndarray,
    config: EvaluationConfig,
    *,
    curve: bool = False,
) -> dict[str, Any]:
    """CPM, sensitivity at each FP rate and lesion-level sensitivity, with CIs."""
    entries = collect_froc_entries(detections, lesion_included)

    def at_rates(w: np.ndarray) -> np.ndarray:
        sens = sensitivities_at(*compute_froc_curves(entries, w), config.fp_rates)
        return np.hstack([sens, sens.mean(axis=1, keepdims=True)])

    *at_rate_cis, cpm = bootstrap_cis(at_rates, weights, config.confidence_level)
    result: dict[str, Any] = {
        "n_cases": len(detections),
        "n_lesions": int(entries.lesions_per_case.sum()),
        "cpm": cpm.to_dict(),
        "sensitivity_at_fp_rate": {
            f"{rate:g}": ci.to_dict() for rate, ci in zip(config.fp_rates, at_rate_cis, strict=True)
        },
        "lesion_sensitivity": bootstrap_ci(
            _lesion_sensitivity(entries, config.finding_threshold), weights, config.confidence_level
        ).to_dict(),
    }
    if curve:
        fps, sens = compute_froc_curves(entries, np.ones((1, len(detections))))
        result["froc_curve"] = {"fps_per_scan": fps[0], "sensitivity": sens[0]}
    return result


def _lesion_sensitivity(
    entries: FrocEntries, threshold: float
) -> Callable[[np.ndarray], np.ndarray]:
    detected = entries.is_hit & (entries.scores >= threshold)

    def statistic(w: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return (w[:, entries.case_index] @ detected) / (w @ entries.lesions_per_case)

    return statistic


def _study(
    cases: Sequence[CaseRecord], weights: np.ndarray, config: EvaluationConfig
) -> dict[str, Any]:
    """AUC, and sensitivity/specificity at ``config.study_threshold``, with CIs."""
    scores = np.array([case.study_probability for case in cases], dtype=np.float64)
    labels = np.array([bool(case.lesions) for case in cases])
    level = config.confidence_level
    sens, spec = bootstrap_cis(
        lambda w: np.stack(
            classification.weighted_sensitivity_specificity(
                scores, labels, config.study_threshold, w
            ),
            axis=1,
        ),
        weights,
        level,
    )
    fpr, tpr = classification.compute_roc_curve(scores, labels)
    return {
        "auc": bootstrap_ci(
            lambda w: classification.weighted_roc_auc(scores, labels, w), weights, level
        ).to_dict(),
        "threshold": config.study_threshold,
        "sensitivity": sens.to_dict(),
        "specificity": spec.to_dict(),
        "roc_curve": {"fpr": fpr, "tpr": tpr},
    }


def _calibration_block(
    probs: np.ndarray, outcomes: np.ndarray, weights: np.ndarray, config: EvaluationConfig
) -> dict[str, Any]:
    """ECE and Brier with CIs, and reliability data; ``weights`` are ``[r, n]`` per sample."""
    level, bins = config.confidence_level, config.ece_bins
    cis = bootstrap_cis(
        lambda w: np.stack(
            [weighted_ece(probs, outcomes, w, bins), weighted_brier(probs, outcomes, w)], axis=1
        ),
        weights,
        level,
    )
    return {
        "n_samples": int(probs.size),
        "ece": cis[0].to_dict(),
        "brier": cis[1].to_dict(),
        "reliability": compute_reliability(probs, outcomes, bins),
    }


def finding_outcomes(
    cases: Sequence[CaseRecord], detections: Sequence[CaseDetections] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every finding's raw score, outcome (1.0 when it hits a lesion) and case index, each
    ``[f]`` in case order: what the per-finding calibrator is fit on (validation split)."""
    detections = detections or [case.detections() for case in cases]
    scores, hits, case_index = [], [], []
    for index, detection in enumerate(detections):
        _, is_fp = match_case(detection)
        scores.append(np.asarray(detection.pred_scores, dtype=np.float64).reshape(-1))
        hits.append((~is_fp).astype(np.float64))
        case_index.append(np.full(is_fp.size, index, dtype=np.int64))
    return (
        np.concatenate([np.zeros(0), *scores]),
        np.concatenate([np.zeros(0), *hits]),
        np.concatenate([np.zeros(0, np.int64), *case_index]),
    )


def _calibration(
    cases: Sequence[CaseRecord],
    detections: Sequence[CaseDetections],
    weights: np.ndarray,
    config: EvaluationConfig,
) -> dict[str, Any]:
    """Calibration of study probabilities and of finding confidences (outcome: hit a lesion)."""
    study_probs = np.array([case.study_probability for case in cases], dtype=np.float64)
    study_outcomes = np.array([float(bool(case.lesions)) for case in cases])
    _, finding_hits, case_of = finding_outcomes(cases, detections)
    finding_probs = np.array(
        [f.score if f.confidence is None else f.confidence for c in cases for f in c.findings],
        dtype=np.float64,
    )
    return {
        "n_bins": config.ece_bins,
        "study": _calibration_block(study_probs, study_outcomes, weights, config),
        "findings": _calibration_block(finding_probs, finding_hits, weights[:, case_of], config),
    }


def _segmentation(
    cases: Sequence[CaseRecord], weights: np.ndarray, config: EvaluationConfig
) -> dict[str, Any] | None:
    """Mean per-case and global Dice over the cases that carry Dice counts; None if none do."""
    with_counts = [i for i, case in enumerate(cases) if case.dice_counts is not None]
    if not with_counts:
        return None
    counts = [c.dice_counts for c in cases if c.dice_counts is not None]
    sub = weights[:, with_counts]
    level = config.confidence_level
    return {
        "n_cases": len(counts),
        "dice_mean": bootstrap_ci(lambda w: weighted_mean_dice(counts, w), sub, level).to_dict(),
        "dice_global": bootstrap_ci(
            lambda w: weighted_global_dice(counts, w), sub, level
        ).to_dict(),
    }


def _subgroups(
    cases: Sequence[CaseRecord],
    detections: Sequence[CaseDetections],
    weights: np.ndarray,
    config: EvaluationConfig,
) -> dict[str, dict[str, Any]]:
    """Detection metrics per lesion size bin and lesion type (other lesions ignored, all scans
    and false positives kept) and per slice-thickness bin (only that bin's scans)."""
    size_of = [
        [bin_label(les.diameter_mm, config.size_bins_mm) for les in c.lesions] for c in cases
    ]
    target_size_of = [
        [bin_label(les.diameter_mm, config.target_size_bins_mm) for les in c.lesions] for c in cases
    ]
    type_of = [[str(les.type) for les in c.lesions] for c in cases]
    types = sorted({t for per_case in type_of for t in per_case})
    location_of = [[lesion_location(les) for les in c.lesions] for c in cases]

    def by_lesion(groups: list[str], label_of: list[list[str]]) -> dict[str, Any]:
        return {
            group: _detection(
                detections,
                [np.array([g == group for g in c], bool) for c in label_of],
                weights,
                config,
            )
            for group in groups
        }

    thickness = [bin_label(c.slice_thickness_mm, config.thickness_bins_mm) for c in cases]
    by_thickness = {}
    for group in [*bin_labels(config.thickness_bins_mm), "unknown"]:
        members = [i for i, label in enumerate(thickness) if label == group]
        if members:
            subset = [detections[i] for i in members]
            by_thickness[group] = _detection(subset, None, weights[:, members], config)
    return {
        "lesion_size": by_lesion(bin_labels(config.size_bins_mm), size_of),
        "lesion_size_target": by_lesion(bin_labels(config.target_size_bins_mm), target_size_of),
        "lesion_type": by_lesion(types, type_of),
        "lesion_location": by_lesion(list(LOCATIONS), location_of),
        "slice_thickness": by_thickness,
    }


#: where a lesion lies, read from what the ground truth says it touches
LOCATIONS = ("interior", "juxta-vascular", "juxta-pleural")


def lesion_location(lesion: Lesion) -> str:
    """``juxta-pleural`` when the lesion touches the pleura (whatever else it touches),
    ``juxta-vascular`` when it touches a vessel only, else ``interior``."""
    if "pleura" in lesion.attached_to:
        return "juxta-pleural"
    if "vessel" in lesion.attached_to:
        return "juxta-vascular"
    return "interior"


def _lesion_free(cases: Sequence[CaseRecord]) -> dict[str, Any]:
    """What a radiologist sees on studies without a lesion: how many findings are reported
    (every finding the result lists), and how many such studies show any."""
    counts = np.array([len(case.findings) for case in cases if not case.lesions], dtype=np.int64)
    if counts.size == 0:
        return {"n_cases": 0}
    return {
        "n_cases": int(counts.size),
        "findings_median": float(np.median(counts)),
        "findings_mean": float(counts.mean()),
        "share_with_a_finding": float(np.mean(counts > 0)),
    }


def equivalent_diameter_mm(lesion: Lesion) -> float:
    """Diameter of the sphere of the lesion's mask volume (its nominal diameter when the
    ground truth has no volume): what a finding's segmentation diameter is compared with."""
    if lesion.volume_ml and lesion.volume_ml > 0:
        return float(np.cbrt(6.0 * lesion.volume_ml * 1000.0 / math.pi))
    return float(lesion.diameter_mm)


def _sizing(
    cases: Sequence[CaseRecord], detections: Sequence[CaseDetections], config: EvaluationConfig
) -> dict[str, Any]:
    """Diameter from the segmentation against the truth, for every lesion a finding hits (the
    highest-scoring finding that hits it, LUNA16 rule): median absolute and mean signed error in
    mm, overall and per size bin."""
    errors: list[float] = []
    bins: list[str] = []
    for case, detection in zip(cases, detections, strict=True):
        if not case.lesions or not case.findings:
            continue
        lesions = np.asarray(detection.lesion_centers_lps_mm, dtype=np.float64).reshape(-1, 3)
        preds = np.asarray(detection.pred_centers_lps_mm, dtype=np.float64).reshape(-1, 3)
        radii = np.asarray(detection.lesion_diameters_mm, dtype=np.float64) / 2.0
        hits = np.linalg.norm(lesions[:, None] - preds[None], axis=2) <= radii[:, None]
        scores = np.asarray(detection.pred_scores, dtype=np.float64)
        for index, lesion in enumerate(case.lesions):
            if not hits[index].any():
                continue
            best = int(np.argmax(np.where(hits[index], scores, -np.inf)))
            errors.append(case.findings[best].diameter_mm - equivalent_diameter_mm(lesion))
            bins.append(bin_label(lesion.diameter_mm, config.size_bins_mm))
    return {
        "n_lesions": len(errors),
        **_errors_summary(np.asarray(errors, dtype=np.float64)),
        "by_size": {
            group: _errors_summary(
                np.array([e for e, b in zip(errors, bins, strict=True) if b == group])
            )
            for group in bin_labels(config.size_bins_mm)
        },
    }


def _errors_summary(errors: np.ndarray) -> dict[str, Any]:
    if errors.size == 0:
        return {"n": 0, "median_abs_error_mm": None, "mean_error_mm": None}
    return {
        "n": int(errors.size),
        "median_abs_error_mm": float(np.median(np.abs(errors))),
        "mean_error_mm": float(errors.mean()),
    }


def _plain(value: Any) -> Any:
    """JSON-ready copy: numpy arrays and scalars to Python, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value
