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
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from pipelines.reports.fhir import build_fhir_bundle
from pipelines.reports.key_images import build_key_images
from pipelines.reports.seg import build_seg
from pipelines.reports.selfcheck import check_key_images, check_seg, check_sr
from pipelines.reports.sr import build_sr
from pipelines.reports.study import AnalysedStudy

__all__ = ["OutputFormat", "write_outputs"]


class OutputFormat(StrEnum):
    """The result objects ``basira predict --format`` can ask for besides the JSON."""

    SEG = "seg"
    SR = "sr"
    FHIR = "fhir"
    KEY_IMAGES = "keyimages"


def write_outputs(
    study: AnalysedStudy, out_dir: Path, formats: Iterable[OutputFormat | str]
) -> list[Path]:
    """Write, read back, check and release the ``formats`` of ``study`` under ``out_dir``.

    Returns the released paths.

    Raises:
        OutputGeometryError: a written object does not line up with the source; nothing of
            this study is released.
    """
    wanted = {OutputFormat(f) for f in formats}
    out_dir.mkdir(parents=True, exist_ok=True)
    name = study.volume.provenance.study_instance_uid
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=out_dir) as staging:
        staged = _write_checked(study, Path(staging), name, wanted)
        return [Path(shutil.move(path, out_dir / path.name)) for path in staged]


def _write_checked(
    study: AnalysedStudy, staging: Path, name: str, wanted: set[OutputFormat]
) -> list[Path]:
    staged: list[Path] = []
    if study.findings and wanted & {OutputFormat.SEG, OutputFormat.SR}:
        seg = _save(build_seg(study), staging / f"{name}.seg.dcm", staged)
        check_seg(seg, study)
        if OutputFormat.SR in wanted:
            sr = _save(build_sr(study, seg), staging / f"{name}.sr.dcm", staged)
            check_sr(sr, study, seg)
    if study.key_image_findings() and OutputFormat.KEY_IMAGES in wanted:
        images = [
            _save(image, staging / f"{name}.key-{finding.id}.dcm", staged)
            for image, finding in zip(
                build_key_images(study), study.key_image_findings(), strict=True
            )
        ]
        check_key_images(images, study)
    if OutputFormat.FHIR in wanted:
        path = staging / f"{name}.fhir.json"
        path.write_text(json.dumps(build_fhir_bundle(study), indent=2) + "\n", encoding="utf-8")
        staged.append(path)
    return staged


def _save(dataset: Dataset, path: Path, staged: list[Path]) -> Dataset:
    """Save ``dataset`` and return it as read back from disk (what the checks look at)."""
    dataset.save_as(path, enforce_file_format=True)
    staged.append(path)
    return pydicom.dcmread(path)
