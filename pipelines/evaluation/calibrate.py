"""The bundle's calibration: fit on the validation split, stored beside ``bundle.yaml``.

``calibration.json`` holds two calibrators of one method: per finding (raw score → probability
that the finding is a true lesion, fit on each finding's hit/miss from
:func:`~pipelines.evaluation.report.finding_outcomes`) and per study (study score → probability
that the study holds a lesion), the study operating point for a target sensitivity (a threshold
on the *calibrated* study probability), and what they were fit on (data folder, split, content
hash, counts). The bundle's ``calibration`` field names the file and ``operating_point`` repeats
the threshold, so serving reads both from the bundle.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.bundle import Bundle, load_bundle
from pipelines.errors import ConfigError, InputNotFoundError
from pipelines.evaluation.calibration import CalibrationMethod, Calibrator, fit_calibrator
from pipelines.evaluation.classification import operating_point_for_sensitivity
from pipelines.evaluation.predictions import DataInfo
from pipelines.evaluation.report import CaseRecord, finding_outcomes
from pipelines.findings import study_score

CALIBRATION_FILE = "calibration.json"
CALIBRATION_SCHEMA_VERSION = 1
#: Temperature: one parameter cannot over-fit a small validation split (docs/evaluation.md).
DEFAULT_METHOD = CalibrationMethod.TEMPERATURE

StoredCalibrator = Annotated[Calibrator, Field(discriminator="method")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FittedOn(_Strict):
    """The data a calibration was fit on."""

    data: str
    split: str
    data_sha256: str
    n_cases: int
    n_positive_cases: int
    n_findings: int
    n_true_findings: int


class StoredOperatingPoint(_Strict):
    """A study threshold and what it achieved on the data it was picked on."""

    threshold: float = Field(ge=0, le=1)
    target_sensitivity: float = Field(gt=0, le=1)
    sensitivity: float
    specificity: float | None


class BundleCalibration(_Strict):
    """``calibration.json`` (see module docstring)."""

    schema_version: int = CALIBRATION_SCHEMA_VERSION
    method: CalibrationMethod
    findings: StoredCalibrator
    study: StoredCalibrator
    operating_point: StoredOperatingPoint
    fitted_on: FittedOn


def fit_bundle_calibration(
    records: Sequence[CaseRecord],
    method: CalibrationMethod,
    target_sensitivity: float,
    data: DataInfo,
) -> BundleCalibration:
    """Fit both calibrators on uncalibrated ``records`` of ``data`` and pick the study
    operating point.

    Raises:
        MissingClassError: the split lacks true or false findings, or lesion-free or lesion
            studies (a calibrator needs both outcomes).
    """
    scores, hits, _ = finding_outcomes(records)
    finding_calibrator = fit_calibrator(method, scores, hits)
    study_scores = np.array([study_score(record.findings) for record in records])
    has_lesion = np.array([bool(record.lesions) for record in records])
    study_calibrator = fit_calibrator(method, study_scores, has_lesion.astype(np.float64))
    point = operating_point_for_sensitivity(
        study_calibrator.apply(study_scores), has_lesion, target_sensitivity
    )
    specificity = point.specificity if np.isfinite(point.specificity) else None
    return BundleCalibration(
        method=method,
        findings=finding_calibrator,
        study=study_calibrator,
        operating_point=StoredOperatingPoint(
            threshold=point.threshold,
            target_sensitivity=point.target_sensitivity,
            sensitivity=point.sensitivity,
            specificity=specificity,
        ),
        fitted_on=FittedOn(
            data=data.path,
            split=data.split,
            data_sha256=data.sha256,
            n_cases=len(records),
            n_positive_cases=int(has_lesion.sum()),
            n_findings=int(hits.size),
            n_true_findings=int(hits.sum()),
        ),
    )


def load_calibration(bundle_dir: Path, bundle: Bundle) -> BundleCalibration | None:
    """The calibration the bundle names (relative to ``bundle_dir``), or None if it has none.

    Raises:
        InputNotFoundError: the bundle names a file that does not exist.
        ConfigError: the file is not a valid calibration.
    """
    if bundle.calibration is None:
        return None
    path = bundle_dir / bundle.calibration
    if not path.is_file():
        raise InputNotFoundError(
            f"Bundle '{bundle.name}' names calibration {path}, which does not exist; "
            "run 'basira calibrate' again.",
            path=str(path),
        )
    try:
        return BundleCalibration.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as exc:
        raise ConfigError(f"{path} is not a valid calibration: {exc}", path=str(path)) from exc


def save_calibration(bundle_path: Path, calibration: BundleCalibration) -> Bundle:
    """Write ``calibration.json`` beside ``bundle_path`` and point the bundle at it.

    Only the bundle's top-level ``calibration`` (the file name) and ``operating_point`` (the
    study threshold) lines change, so the reference bundle keeps its comments; the result is
    validated and returned.
    """
    path = bundle_path.parent / CALIBRATION_FILE
    data = calibration.model_dump(mode="json")
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    text = bundle_path.read_text(encoding="utf-8")
    text = _set_top_level(text, "calibration", CALIBRATION_FILE)
    text = _set_top_level(text, "operating_point", calibration.operating_point.threshold)
    bundle_path.write_text(text, encoding="utf-8")
    return load_bundle(bundle_path)


def _set_top_level(text: str, key: str, value: str | float) -> str:
    """``text`` (YAML) with the top-level scalar ``key`` set to ``value`` (appended if absent)."""
    line = yaml.safe_dump({key: value}, default_flow_style=False).strip()
    pattern = re.compile(rf"^{re.escape(key)}:[^\n]*$", re.MULTILINE)
    if pattern.search(text):
        return pattern.sub(lambda _: line, text, count=1)
    return text.rstrip("\n") + "\n" + line + "\n"
