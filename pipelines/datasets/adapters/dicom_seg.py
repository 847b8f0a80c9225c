"""Folders of DICOM CT series with DICOM SEG objects drawn on them.

::

    SRC/
      patient01/ct/IM0001.dcm ...   # one CT series per folder
      patient01/seg/lesions.dcm     # Modality SEG, ReferencedSeriesSequence -> the CT series
      patient02/...

Headers are read with ``stop_before_pixels``; files that are not DICOM are ignored. A case is a CT
series with a SEG referencing it by SeriesInstanceUID. CT series without a SEG are unannotated, not
negative, so they are skipped (with a warning). Lesions are the SEG's connected components on the
CT grid, so importing reads each case's pixels once.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from pipelines.datasets.images import load_image, load_label
from pipelines.datasets.lesions import lesions_from_mask
from pipelines.datasets.manifest import Case, ImageFormat, LabelFormat, Manifest
from pipelines.errors import InvalidLayoutError

logger = logging.getLogger(__name__)


@dataclass
class _Series:
    folders: set[Path] = field(default_factory=set)
    patient_id: str = ""
    thickness_mm: float | None = None


def import_dicom_seg(src: Path) -> Manifest:
    """Build a manifest from CT series and the SEGs referencing them (paths relative to src).

    Raises:
        InvalidLayoutError: no CT series with a SEG, or a series spread over several folders or
            sharing its folder with another series.
    """
    series, segs = _scan(src)
    cases = []
    for uid, seg_paths in sorted(segs.items()):
        if uid not in series:
            logger.warning("SEG %s references series %s, absent from %s", seg_paths[0], uid, src)
            continue
        folder = _only_folder(uid, series)
        cases.append(_case(src, folder, seg_paths[0], series[uid]))
    unlabelled = set(series) - set(segs)
    if unlabelled:
        logger.warning("%d CT series under %s have no SEG and are skipped", len(unlabelled), src)
    if not cases:
        raise InvalidLayoutError(f"{src} holds no CT series with a DICOM SEG.", path=str(src))
    return Manifest(name=src.name, source="dicom-seg", cases=cases)


def _scan(src: Path) -> tuple[dict[str, _Series], dict[str, list[Path]]]:
    series: dict[str, _Series] = defaultdict(_Series)
    segs: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError):
            continue
        modality = str(ds.get("Modality", ""))
        if modality == "SEG" and "ReferencedSeriesSequence" in ds:
            for ref in ds.ReferencedSeriesSequence:
                segs[str(ref.SeriesInstanceUID)].append(path)
        elif modality == "CT" and "SeriesInstanceUID" in ds:
            entry = series[str(ds.SeriesInstanceUID)]
            entry.folders.add(path.parent)
            entry.patient_id = str(ds.get("PatientID", "") or "")
            thickness = ds.get("SliceThickness")
            entry.thickness_mm = float(thickness) if thickness not in (None, "") else None
    shared = [f for f in {f for s in series.values() for f in s.folders} if _count(series, f) > 1]
    if shared:
        raise InvalidLayoutError(
            f"Folder {shared[0]} holds more than one CT series; give each series its own folder.",
            path=str(shared[0]),
        )
    return dict(series), dict(segs)


def _count(series: dict[str, _Series], folder: Path) -> int:
    return sum(folder in s.folders for s in series.values())


def _only_folder(uid: str, series: dict[str, _Series]) -> Path:
    folders = series[uid].folders
    if len(folders) != 1:
        raise InvalidLayoutError(
            f"CT series {uid} is spread over {len(folders)} folders; keep one series per folder.",
            series_instance_uid=uid,
        )
    return next(iter(folders))


def _case(src: Path, folder: Path, seg_path: Path, entry: _Series) -> Case:
    image = folder.relative_to(src).as_posix()
    label = seg_path.relative_to(src).as_posix()
    volume = load_image(folder, ImageFormat.DICOM)
    mask = load_label(seg_path, LabelFormat.DICOM_SEG, volume)
    case_id = re.sub(r"[^A-Za-z0-9._-]+", "_", image).strip("_") or "case"
    return Case(
        case_id=case_id,
        patient_id=entry.patient_id or case_id,
        image=image,
        image_format=ImageFormat.DICOM,
        label=label,
        label_format=LabelFormat.DICOM_SEG,
        lesions=lesions_from_mask(mask, np.asarray(volume.affine_lps)),
        source="dicom-seg",
        slice_thickness_mm=entry.thickness_mm,
    )
