"""The result JSON of one study (the contract in DESIGN.md) and its published JSON Schema.

``basira predict`` writes one ``<StudyInstanceUID>.json`` per study as a :class:`StudyResult`.
The schema in ``docs/schemas/result.schema.json`` is generated from these models
(``python -m pipelines.result docs/schemas/result.schema.json``) and a test keeps the committed
file equal to the generated one. ``schema_version`` changes with any change to the fields: a
new optional field is a minor version, anything else a major one.

Coordinates: ``center_lps_mm`` is DICOM patient space (LPS, millimetres); ``center_ijk`` is the
fractional voxel index ``(i, j, k)`` = (column, row, slice) in the *source* series, slice ``k``
counted in the series' spatial order (:class:`~pipelines.volume.Volume`), and
``referenced_sop_instance_uid`` is the instance of the source slice nearest the centre.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.cpu import CpuInfo

__all__ = [
    "SCHEMA_VERSION",
    "CandidateTiming",
    "ChosenBy",
    "Diagnosis",
    "DiagnosisLabel",
    "EngineCandidate",
    "EngineRuntime",
    "FindingResult",
    "ModelInfo",
    "ReasonResult",
    "StudyResult",
    "StudyStatus",
    "WithheldResult",
    "result_json_schema",
]

#: 1.1 added ``withheld`` (what a completed result leaves out, and why); 1.2 added ``runtime``
#: (the CPU, and which engine ran and how it was chosen).
SCHEMA_VERSION: Literal["1.2"] = "1.2"

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Triple = tuple[float, float, float]


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_serialization_defaults_required=True
    )


class StudyStatus(StrEnum):
    """How the analysis of one study ended."""

    #: analysed: a diagnosis and the findings are given.
    COMPLETED = "completed"
    #: the input is outside what the model may be shown, or unreadable: no score, ``reasons``.
    NOT_ANALYSABLE = "not_analysable"
    #: our own failure (not the input's): no score, ``reasons`` hold the error code.
    FAILED = "failed"


class DiagnosisLabel(StrEnum):
    """The study label at the model's operating point."""

    TUMOUR_SUSPECTED = "tumour_suspected"
    NO_TUMOUR_SUSPECTED = "no_tumour_suspected"


class ReasonResult(_Strict):
    """Why a study was not analysed: a stable code (``docs/errors.md``) and one sentence."""

    code: str = Field(min_length=1)
    message: str


class WithheldResult(_Strict):
    """What a completed result leaves out, with a stable code (``docs/errors.md``) and one
    sentence: a finding no output can show (``finding_id`` set, ``output`` null: it is in none
    of them, this JSON included), or an asked-for object that could not be released
    (``output`` set; the diagnosis and every other output are delivered)."""

    code: str = Field(min_length=1)
    message: str
    output: Literal["seg", "sr", "fhir", "keyimages"] | None = None
    finding_id: int | None = Field(default=None, ge=1)


class ModelInfo(_Strict):
    """The model release that produced the result."""

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    #: SHA-256 of the release's ``model.onnx`` (also when the torch engine ran the weights).
    onnx_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    engine: Literal["onnx", "torch"] = "onnx"


class ChosenBy(StrEnum):
    """How the engine that ran was chosen."""

    #: timed against the other candidates on this host when the model was loaded.
    MEASURED = "measured"
    #: an earlier measurement on a host with the same CPU, for the same model (the cache).
    CACHED = "cached"
    #: named by the operator (``--engine onnx|torch``, ``BASIRA_INFERENCE_ENGINE``), or the only
    #: candidate the operator's settings left.
    PINNED = "pinned"


class EngineCandidate(_Strict):
    """One way to run the network: a backend, ONNX Runtime's execution providers in order (empty:
    the installed ones by preference; always empty for torch) and CPU threads (``None``: the
    runtime's default, one per core)."""

    engine: Literal["onnx", "torch"]
    providers: tuple[str, ...] = ()
    threads: int | None = Field(default=None, ge=1)

    @property
    def label(self) -> str:
        """``onnx OpenVINOExecutionProvider, 2 threads`` (for logs and tables)."""
        where = f" {'+'.join(self.providers)}" if self.providers else ""
        threads = "default threads" if self.threads is None else f"{self.threads} threads"
        return f"{self.engine}{where}, {threads}"


class CandidateTiming(_Strict):
    """A candidate's measured time for one window batch of the model's own input shape (median
    of the rounds), or why it could not run."""

    candidate: EngineCandidate
    window_batch_ms: float | None = Field(default=None, ge=0.0)
    error: str | None = None


class EngineRuntime(_Strict):
    """Where and how the network ran: the CPU, the engine chosen and, when it was chosen by
    measurement, every candidate's time on ``window_batch_shape`` (``[b, 1, k, j, i]``)."""

    cpu: CpuInfo
    chosen: EngineCandidate
    #: the execution providers the ONNX Runtime session actually runs on; empty for torch.
    providers: tuple[str, ...] = ()
    chosen_by: ChosenBy
    window_batch_shape: tuple[int, ...] = ()
    candidates: list[CandidateTiming] = Field(default_factory=list)
    #: when the candidates were timed (ISO 8601, UTC); ``None`` for a pinned engine.
    measured_at: str | None = None


class Diagnosis(_Strict):
    """Study level: calibrated probability that a tumour is present and its label."""

    label: DiagnosisLabel
    probability: Probability
    #: the probability at or above which the label is ``tumour_suspected``.
    operating_point: Probability


class FindingResult(_Strict):
    """One finding: where, how large, how confident, and on which source slice."""

    id: int = Field(ge=1)
    center_lps_mm: Triple
    #: fractional source voxel index (i, j, k); round k for the slice.
    center_ijk: Triple
    diameter_mm: float = Field(ge=0.0)
    volume_ml: float = Field(ge=0.0)
    #: calibrated probability that the finding is a true lesion.
    confidence: Probability
    referenced_sop_instance_uid: str = Field(min_length=1)


class StudyResult(_Strict):
    """``<StudyInstanceUID>.json``: the result of one study."""

    schema_version: Literal["1.2"] = SCHEMA_VERSION
    study_instance_uid: str = Field(min_length=1)
    #: the analysed series; None when no series of the study could be read.
    series_instance_uid: str | None
    status: StudyStatus
    reasons: list[ReasonResult] = Field(default_factory=list)
    model: ModelInfo
    diagnosis: Diagnosis | None = None
    findings: list[FindingResult] = Field(default_factory=list)
    #: completed studies only: findings left out of every output and objects not released.
    withheld: list[WithheldResult] = Field(default_factory=list)
    #: wall time per stage (read, intended_use, preprocess, inference, findings, outputs, total).
    timings_ms: dict[str, Annotated[float, Field(ge=0.0)]] = Field(default_factory=dict)
    #: the CPU the timings were taken on and the engine that ran (None: written before 1.2).
    runtime: EngineRuntime | None = None

    @model_validator(mode="after")
    def _status_matches_content(self) -> StudyResult:
        if self.status is StudyStatus.COMPLETED:
            if self.diagnosis is None or self.reasons:
                raise ValueError("a completed study has a diagnosis and no reasons")
        elif self.diagnosis is not None or self.findings or not self.reasons:
            raise ValueError(
                f"a {self.status.value} study has reasons and neither diagnosis nor findings"
            )
        elif self.withheld:
            raise ValueError(f"a {self.status.value} study withholds nothing: it has no outputs")
        return self

    def to_json(self) -> str:
        """The file's text (indented, newline-terminated)."""
        return self.model_dump_json(indent=2) + "\n"


def result_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of :class:`StudyResult`, as published in ``docs/``."""
    schema = StudyResult.model_json_schema(mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://basira.invalid/schemas/result-{SCHEMA_VERSION}.schema.json",
        **schema,
    }


def schema_text() -> str:
    """:func:`result_json_schema` as the committed file's text."""
    return json.dumps(result_json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # regenerate: python -m pipelines.result docs/schemas/result.schema.json
    Path(sys.argv[1]).write_text(schema_text(), encoding="utf-8")
