"""Calibrated probabilities at run time: the calibrators a bundle stores in
``calibration.json``, reading that file, and applying it to a study's findings.

Fitting them is evaluation's work (:mod:`pipelines.evaluation.calibrate`); serving, ``basira
predict`` and evaluation all apply them through :func:`apply_calibration`, so the three report
the same numbers.

Calibrators share one tiny interface: ``apply(probabilities) -> probabilities`` and
``to_dict()``; :func:`calibrator_from_dict` reads either back from the bundle's JSON.

- **Temperature scaling**: ``sigmoid(logit(p) / T)``, ``T > 0``. One parameter, monotone, so
  rankings (AUC, FROC) are unchanged.
- **Isotonic**: a piecewise-linear monotone map through stored breakpoints, clipped at the ends,
  so serving needs no scikit-learn. Monotone but not strictly: it can create ties.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from pipelines.config import validate_config
from pipelines.errors import ConfigError, InputNotFoundError
from pipelines.findings import Finding, StudyScore, calibrate_findings, study_score

if TYPE_CHECKING:
    from pipelines.bundle import Bundle

CALIBRATION_FILE = "calibration.json"
CALIBRATION_SCHEMA_VERSION = 1
_EPS = 1e-7


class CalibrationMethod(StrEnum):
    TEMPERATURE = "temperature"
    ISOTONIC = "isotonic"


class TemperatureCalibrator(BaseModel):
    """``sigmoid(logit(p) / temperature)``; T > 1 softens over-confident scores."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["temperature"] = "temperature"
    temperature: float = Field(gt=0)

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, same shape as ``probs``."""
        from scipy import special

        logits = special.logit(np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1 - _EPS))
        return np.asarray(special.expit(logits / self.temperature))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


class IsotonicCalibrator(BaseModel):
    """Piecewise-linear monotone map through the breakpoints ``(x, y)``, clipped at the ends."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["isotonic"] = "isotonic"
    x: list[float] = Field(min_length=1)
    y: list[float] = Field(min_length=1)

    @model_validator(mode="after")
    def _monotone(self) -> IsotonicCalibrator:
        x, y = np.asarray(self.x), np.asarray(self.y)
        if x.shape != y.shape:
            raise ValueError("x and y must have the same length")
        if np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
            raise ValueError("x and y must be non-decreasing")
        if y.min() < 0 or y.max() > 1:
            raise ValueError("y must lie in [0, 1]")
        return self

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, same shape as ``probs``."""
        return np.interp(np.asarray(probs, dtype=np.float64), self.x, self.y)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


Calibrator = TemperatureCalibrator | IsotonicCalibrator
_CALIBRATOR_ADAPTER: TypeAdapter[Calibrator] = TypeAdapter(
    Annotated[Calibrator, Field(discriminator="method")]
)


def calibrator_from_dict(data: dict[str, Any]) -> Calibrator:
    """Read a calibrator back from its ``to_dict()`` form (as stored in the model bundle).

    Raises:
        ConfigError: unknown ``method`` or invalid parameters.
    """
    try:
        return _CALIBRATOR_ADAPTER.validate_python(data)
    except ValidationError as error:
        raise ConfigError(
            "The calibration stored in the model bundle is not valid.", errors=error.errors()
        ) from error


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


class FindingsThresholdChoice(_Strict):
    """The findings threshold picked on the calibration split, and every candidate's CPM and
    study AUC (keys are the thresholds as text: JSON keys are strings; AUC is null when the
    split lacks a class)."""

    threshold: float = Field(gt=0, le=1)
    cpm_by_threshold: dict[str, float]
    auc_by_threshold: dict[str, float | None]


class BundleCalibration(_Strict):
    """``calibration.json`` (see module docstring)."""

    schema_version: int = CALIBRATION_SCHEMA_VERSION
    method: CalibrationMethod
    findings: StoredCalibrator
    study: StoredCalibrator
    operating_point: StoredOperatingPoint
    fitted_on: FittedOn
    findings_threshold: FindingsThresholdChoice | None = None
    #: how the calibrated findings combine into the study score the study calibrator maps
    #: (``max`` for calibrations written before the choice existed)
    study_score: StudyScore = "max"
    #: the validation AUC of each candidate study score (null: the split lacks a class)
    study_auc_by_score: dict[str, float | None] = Field(default_factory=dict)


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
    return validate_config(path.read_text(encoding="utf-8"), BundleCalibration, path)


def apply_calibration(
    found: Sequence[Finding], calibration: BundleCalibration | None
) -> tuple[list[Finding], float]:
    """Findings with calibrated ``confidence`` and the calibrated study probability.

    Shared by evaluation and ``basira predict`` so both report the same numbers. Without a
    ``calibration`` the findings are returned as they are and the probability is the raw
    :func:`~pipelines.findings.study_score`; with one, the study score is computed the way the
    calibration was fit (``calibration.study_score``) from the calibrated findings.
    """
    if calibration is None:
        return list(found), study_score(found)
    calibrated = calibrate_findings(found, calibration.findings)
    score = study_score(calibrated, calibration.study_score)
    return calibrated, float(calibration.study.apply(np.array([score]))[0])
