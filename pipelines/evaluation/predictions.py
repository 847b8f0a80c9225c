"""``predictions.json``: every case's findings and study probability, so evaluation re-runs
without inference.

``basira evaluate`` writes it beside ``metrics.json``; ``basira evaluate --predictions FILE``
reads it back into :class:`~pipelines.evaluation.report.CaseRecord` objects and recomputes the
metrics (other bootstrap settings, new subgroups) in seconds. Findings are in LPS mm with their
raw ``score`` and, when the bundle was calibrated, their ``confidence``. The ``model`` and
``data`` blocks are copied into ``metrics.json`` too: ``data.sha256`` is what the promotion gate
compares (the locked test split).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from pipelines.config import validate_config
from pipelines.datasets.manifest import Lesion
from pipelines.errors import InputNotFoundError
from pipelines.evaluation.report import CaseRecord
from pipelines.evaluation.segmentation import DiceCounts
from pipelines.findings import Finding, study_score

PREDICTIONS_FILE = "predictions.json"
PREDICTIONS_SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelInfo(_Strict):
    """Which model produced the predictions."""

    name: str
    version: str
    weights_sha256: str
    calibration_method: str | None
    operating_point: float | None


class DataInfo(_Strict):
    """Which data: the prepared folder, the split and its content hash."""

    path: str
    split: str
    sha256: str
    n_cases: int


class CasePrediction(_Strict):
    """One case: ground truth, findings (LPS mm), study score and probability, Dice counts."""

    case_id: str
    slice_thickness_mm: float | None
    study_score: float
    study_probability: float
    dice_counts: DiceCounts | None
    lesions: list[Lesion]
    findings: list[Finding]

    @classmethod
    def from_record(cls, record: CaseRecord) -> CasePrediction:
        """The stored form of an inference record."""
        return cls(
            case_id=record.case_id,
            slice_thickness_mm=record.slice_thickness_mm,
            study_score=study_score(record.findings),
            study_probability=record.study_probability,
            dice_counts=record.dice_counts,
            lesions=list(record.lesions),
            findings=list(record.findings),
        )

    def to_record(self) -> CaseRecord:
        """Back to the record :func:`~pipelines.evaluation.report.evaluate_cases` takes."""
        return CaseRecord(
            case_id=self.case_id,
            lesions=self.lesions,
            findings=self.findings,
            study_probability=self.study_probability,
            slice_thickness_mm=self.slice_thickness_mm,
            dice_counts=self.dice_counts,
        )


class Predictions(_Strict):
    """``predictions.json`` (see module docstring)."""

    schema_version: int = PREDICTIONS_SCHEMA_VERSION
    model: ModelInfo
    data: DataInfo
    cases: list[CasePrediction]

    def records(self) -> list[CaseRecord]:
        """One :class:`CaseRecord` per case, in file order."""
        return [case.to_record() for case in self.cases]


def build_predictions(
    model: ModelInfo, data: DataInfo, records: Sequence[CaseRecord]
) -> Predictions:
    """The predictions file content for ``records``."""
    return Predictions(
        model=model, data=data, cases=[CasePrediction.from_record(r) for r in records]
    )


def write_predictions(predictions: Predictions, out_dir: Path) -> Path:
    """Write ``out_dir/predictions.json``; returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / PREDICTIONS_FILE
    path.write_text(predictions.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path


def read_predictions(path: Path) -> Predictions:
    """Read a ``predictions.json`` written by ``basira evaluate``.

    Raises:
        InputNotFoundError: the file does not exist.
        ConfigError: it does not validate (the message names the first bad field).
    """
    if not path.is_file():
        raise InputNotFoundError(f"Predictions file {path} does not exist.", path=str(path))
    return validate_config(path.read_text(encoding="utf-8"), Predictions, path)
