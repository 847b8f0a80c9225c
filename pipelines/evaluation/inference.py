"""The production inference path on prepared cases: engine → findings → calibrated confidence.

Validation during training and ``basira evaluate`` / ``basira calibrate`` all turn a prepared
case into a :class:`~pipelines.evaluation.report.CaseRecord` through :func:`infer_case`, so the
numbers a training run reports and the numbers the evaluation reports come from the same code:
the whole volume through the engine's sliding window, connected components of the probability
map as findings (the bundle's :class:`~pipelines.findings.FindingsConfig`), the study score,
and, when the bundle has a calibration, calibrated finding confidences and study probability.

Also here: reading the cases of one split back from the ``prepare`` cache, and the content hash
that names exactly which test data a metric was computed on (the locked test split).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.calibration import apply_calibration
from pipelines.datasets.manifest import Lesion
from pipelines.datasets.prepare import PreparedCase, load_prepared_case
from pipelines.engine.base import Engine
from pipelines.evaluation.report import CaseRecord
from pipelines.evaluation.segmentation import compute_dice_counts
from pipelines.findings import (
    FindingsConfig,
    extract_findings,
)

if TYPE_CHECKING:
    from pipelines.calibration import BundleCalibration


@dataclass(frozen=True)
class LoadedCase:
    """One prepared case in memory, with its ground truth.

    ``image_kji`` and ``label_kji`` are ``[k, j, i]`` (cached intensities in [0, 1], bool lesion
    mask); ``affine_lps`` maps voxel ``(i, j, k, 1)`` to LPS mm; ``lesions`` are in LPS mm.
    """

    case_id: str
    image_kji: np.ndarray
    label_kji: np.ndarray
    affine_lps: np.ndarray
    lesions: tuple[Lesion, ...]
    slice_thickness_mm: float | None = None


def lesions_from_prepared(items: Sequence[dict[str, Any]]) -> tuple[Lesion, ...]:
    """Ground-truth lesions of a cached case (the cache's extra ``center_ijk`` is dropped)."""
    return tuple(
        Lesion.model_validate({k: v for k, v in item.items() if k != "center_ijk"})
        for item in items
    )


def load_case(
    data_dir: Path, case: PreparedCase, slice_thickness_mm: float | None = None
) -> LoadedCase:
    """Read one case of the ``prepare`` cache in ``data_dir`` (kept in its cached dtype)."""
    data = load_prepared_case(data_dir / case.cache)
    return LoadedCase(
        case_id=case.case_id,
        image_kji=data["image"],
        label_kji=data["label"] > 0,
        affine_lps=data["affine_lps"],
        lesions=lesions_from_prepared(data["lesions"]),
        slice_thickness_mm=slice_thickness_mm,
    )


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in chunks."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def split_data_hash(data_dir: Path, cases: Sequence[PreparedCase]) -> str:
    """sha256 naming exactly the data of ``cases``: their ids and cached file contents.

    Two metrics files are comparable only when computed on the same hash (the locked test
    split); re-preparing with other preprocessing or regenerating the studies changes it.
    """
    entries = []
    for case in sorted(cases, key=lambda c: c.case_id):
        entries.append([case.case_id, file_sha256(data_dir / case.cache)])
    return hashlib.sha256(json.dumps(entries).encode("utf-8")).hexdigest()


def infer_case(
    engine: Engine,
    case: LoadedCase,
    findings: FindingsConfig,
    calibration: BundleCalibration | None = None,
) -> CaseRecord:
    """Run the production path on one case and record what evaluation needs.

    Findings keep their raw ``score``; with a ``calibration`` they also get a ``confidence``
    and the study probability is the calibrated study score (otherwise the raw study score).
    Dice counts compare the probability map at the findings threshold with the label.
    """
    return record_case(case, engine.predict(case.image_kji), findings, calibration)


def infer_case_at_thresholds(
    engine: Engine, case: LoadedCase, findings: FindingsConfig, thresholds: Sequence[float]
) -> dict[float, CaseRecord]:
    """:func:`infer_case` (uncalibrated) with findings extracted at each of ``thresholds``
    from one probability map: the network runs once, whatever the number of thresholds."""
    prob = engine.predict(case.image_kji)
    return {
        threshold: record_case(case, prob, findings.model_copy(update={"threshold": threshold}))
        for threshold in thresholds
    }


def record_case(
    case: LoadedCase,
    prob_kji: np.ndarray,
    findings: FindingsConfig,
    calibration: BundleCalibration | None = None,
) -> CaseRecord:
    """The :class:`CaseRecord` of ``case`` given its probability map ``[k, j, i]``."""
    found, probability = apply_calibration(
        extract_findings(prob_kji, case.affine_lps, findings), calibration
    )
    return CaseRecord(
        case_id=case.case_id,
        lesions=case.lesions,
        findings=found,
        study_probability=probability,
        slice_thickness_mm=case.slice_thickness_mm,
        dice_counts=compute_dice_counts(prob_kji >= findings.threshold, case.label_kji),
    )
