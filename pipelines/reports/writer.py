"""Write the asked-for outputs of one study, check them read back, and only then release them.

Objects are written into a staging folder inside ``out_dir``, read back with pydicom and passed
through :mod:`pipelines.reports.selfcheck`; only when every check passes are they moved next to
the result JSON. On any failure the staging folder is removed, so a half-checked object never
reaches a hospital (fail closed).

Files, named by StudyInstanceUID: ``<uid>.seg.dcm``, ``<uid>.sr.dcm``, ``<uid>.fhir.json``,
``<uid>.key-<finding id>.dcm`` (for the study's key findings only). The SR references the SEG,
so asking for ``sr`` writes the SEG too. A study without findings gets only the FHIR bundle
(and the result JSON), which say so: a SEG needs a segment and highdicom's TID 1500 a
measurement group.

:func:`write_outputs` releases all the asked-for objects or none (fail closed, for library
callers that need the set). :func:`write_each_output`, which ``basira predict`` and the service
use, makes each object its own unit: one that cannot be written or fails its check is withheld
with a coded reason, and the others are released, so one object never costs a study its result.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

import pydicom
from pydicom.dataset import Dataset

from pipelines.errors import BasiraError, OutputError
from pipelines.reports.fhir import build_fhir_bundle
from pipelines.reports.key_images import build_key_images
from pipelines.reports.seg import build_seg
from pipelines.reports.selfcheck import check_key_images, check_seg, check_sr
from pipelines.reports.sr import build_sr
from pipelines.reports.study import AnalysedStudy

__all__ = ["OutputFormat", "WithheldOutput", "WrittenOutputs", "write_each_output", "write_outputs"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class OutputFormat(StrEnum):
    """The result objects ``basira predict --format`` can ask for besides the JSON."""

    SEG = "seg"
    SR = "sr"
    FHIR = "fhir"
    KEY_IMAGES = "keyimages"

    @property
    def label(self) -> str:
        """What a hospital calls the object, for messages."""
        return _LABELS[self]


_LABELS = {
    OutputFormat.SEG: "DICOM SEG",
    OutputFormat.SR: "DICOM SR",
    OutputFormat.FHIR: "FHIR report",
    OutputFormat.KEY_IMAGES: "key images",
}


@dataclass(frozen=True)
class WithheldOutput:
    """An asked-for object that was not released: which, the code of why, one sentence."""

    output: OutputFormat
    code: str
    message: str


@dataclass(frozen=True)
class WrittenOutputs:
    """What :func:`write_each_output` released and what it withheld."""

    paths: list[Path]
    withheld: list[WithheldOutput]


def write_outputs(
    study: AnalysedStudy, out_dir: Path, formats: Iterable[OutputFormat | str]
) -> list[Path]:
    """Write, read back, check and release the ``formats`` of ``study`` under ``out_dir``.

    Returns the released paths.

    Raises:
        OutputGeometryError: a written object does not line up with the source; nothing of
            this study is released.
    """
    return _write(study, out_dir, formats, isolate=False).paths


def write_each_output(
    study: AnalysedStudy, out_dir: Path, formats: Iterable[OutputFormat | str]
) -> WrittenOutputs:
    """:func:`write_outputs`, one object at a time: an object that cannot be written or fails
    its check is withheld (with its code: ``output.geometry_mismatch``, or ``output.invalid``
    for an unexpected error, logged with its traceback under the id the message gives) and
    every other one is released. An SR whose SEG was withheld is withheld too (it measures on
    the SEG's frames)."""
    return _write(study, out_dir, formats, isolate=True)


def _write(
    study: AnalysedStudy,
    out_dir: Path,
    formats: Iterable[OutputFormat | str],
    *,
    isolate: bool,
) -> WrittenOutputs:
    wanted = {OutputFormat(f) for f in formats}
    out_dir.mkdir(parents=True, exist_ok=True)
    name = study.volume.provenance.study_instance_uid
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=out_dir) as staging:
        units = _Units(isolate)
        _write_checked(study, Path(staging), name, wanted, units)
        paths = [Path(shutil.move(path, out_dir / path.name)) for path in units.staged]
        return WrittenOutputs(paths, units.withheld)


class _Units:
    """The staged files, and each output written as one unit: in isolation a failing unit's
    files are removed and the output withheld; otherwise the first failure propagates."""

    def __init__(self, isolate: bool) -> None:
        self.isolate = isolate
        self.staged: list[Path] = []
        self.withheld: list[WithheldOutput] = []

    def attempt(self, output: OutputFormat, step: Callable[[], _T]) -> _T | None:
        before = len(self.staged)
        try:
            return step()
        except Exception as exc:
            if not self.isolate:
                raise
            for path in self.staged[before:]:
                path.unlink(missing_ok=True)
            del self.staged[before:]
            self.withheld.append(_withheld(output, exc))
            return None

    def save(self, dataset: Dataset, path: Path) -> Dataset:
        """Save ``dataset`` and return it as read back from disk (what the checks look at)."""
        dataset.save_as(path, enforce_file_format=True)
        self.staged.append(path)
        return pydicom.dcmread(path)


def _write_checked(
    study: AnalysedStudy, staging: Path, name: str, wanted: set[OutputFormat], units: _Units
) -> None:
    if study.findings and wanted & {OutputFormat.SEG, OutputFormat.SR}:
        seg = units.attempt(OutputFormat.SEG, lambda: _seg(study, staging, name, units))
        if OutputFormat.SR in wanted and seg is not None:
            units.attempt(OutputFormat.SR, lambda: _sr(study, seg, staging, name, units))
        elif OutputFormat.SR in wanted:
            units.withheld.append(
                WithheldOutput(
                    OutputFormat.SR,
                    OutputError.code,
                    "The DICOM SR was withheld: the DICOM SEG it measures on was withheld.",
                )
            )
    if study.key_image_findings() and OutputFormat.KEY_IMAGES in wanted:
        units.attempt(OutputFormat.KEY_IMAGES, lambda: _key_images(study, staging, name, units))
    if OutputFormat.FHIR in wanted:
        units.attempt(OutputFormat.FHIR, lambda: _fhir(study, staging, name, units))


def _seg(study: AnalysedStudy, staging: Path, name: str, units: _Units) -> Dataset:
    seg = units.save(build_seg(study), staging / f"{name}.seg.dcm")
    check_seg(seg, study)
    return seg


def _sr(study: AnalysedStudy, seg: Dataset, staging: Path, name: str, units: _Units) -> None:
    sr = units.save(build_sr(study, seg), staging / f"{name}.sr.dcm")
    check_sr(sr, study, seg)


def _key_images(study: AnalysedStudy, staging: Path, name: str, units: _Units) -> None:
    images = [
        units.save(image, staging / f"{name}.key-{finding.id}.dcm")
        for image, finding in zip(build_key_images(study), study.key_image_findings(), strict=True)
    ]
    check_key_images(images, study)


def _fhir(study: AnalysedStudy, staging: Path, name: str, units: _Units) -> None:
    path = staging / f"{name}.fhir.json"
    units.staged.append(path)
    path.write_text(json.dumps(build_fhir_bundle(study), indent=2) + "\n", encoding="utf-8")


def _withheld(output: OutputFormat, exc: Exception) -> WithheldOutput:
    """The coded reason an output is withheld; an unexpected error is logged with its
    traceback under a correlation id that the message names (never the exception's text)."""
    if isinstance(exc, BasiraError):
        return WithheldOutput(output, exc.code, f"The {output.label} was withheld: {exc.message}")
    error_id = uuid.uuid4().hex[:12]
    log.error("%s not written: unexpected error %s", output.label, error_id, exc_info=exc)
    return WithheldOutput(
        output,
        OutputError.code,
        f"The {output.label} could not be written because of an unexpected error of ours "
        f"(logged as error {error_id}); it was withheld and the other outputs were released.",
    )
