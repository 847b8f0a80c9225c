"""The LUNA16 layout: MetaImage CT scans in ``subset*`` folders and a nodule CSV.

::

    LUNA16/
      annotations.csv          # seriesuid,coordX,coordY,coordZ,diameter_mm (or CSVFILES/)
      subset0/1.3.6.1.4.1.14519.5.2.1.6279.6001.105756658031515062000744821260.mhd
      subset0/1.3.6.1.4.1.14519.5.2.1.6279.6001.105756658031515062000744821260.raw
      subset1/...

``coordX/Y/Z`` are ITK physical coordinates, the space of the ``.mhd`` ``Offset`` and
``TransformMatrix``: that is DICOM patient LPS in millimetres (ITK keeps DICOM's LPS), so they are
used as ``center_lps_mm`` unchanged. LUNA16 ships no labels: ``basira prepare`` rasterises each
nodule as a sphere of ``diameter_mm``. LUNA16 has no patient ids either; each series counts as its
own patient (LIDC-IDRI has a few patients with two scans, which may then share a split only by
chance).
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from pathlib import Path

from pipelines.datasets.adapters.checks import require_files
from pipelines.datasets.lesions import sphere_volume_ml
from pipelines.datasets.manifest import Case, ImageFormat, Lesion, Manifest
from pipelines.errors import InvalidLayoutError

logger = logging.getLogger(__name__)

COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")


def import_luna16(src: Path) -> Manifest:
    """Build a manifest from a LUNA16 folder (paths relative to ``src``).

    Raises:
        InvalidLayoutError: no annotations.csv or scans, a malformed CSV or MetaImage header, or a
            missing ``.raw`` file.
    """
    lesions = _read_annotations(_find_annotations(src))
    headers = sorted(src.glob("subset*/*.mhd"))
    if not headers:
        raise InvalidLayoutError(f"{src} holds no subset*/*.mhd scans.", path=str(src))
    cases = [_case(src, header, lesions.get(header.stem, [])) for header in headers]
    unknown = sorted(set(lesions) - {case.case_id for case in cases})
    if unknown:
        logger.warning("%d annotated series have no scan under %s", len(unknown), src)
    return Manifest(name="LUNA16", source="luna16", cases=cases)


def _find_annotations(src: Path) -> Path:
    for candidate in (src / "annotations.csv", src / "CSVFILES" / "annotations.csv"):
        if candidate.is_file():
            return candidate
    raise InvalidLayoutError(
        f"{src} holds no annotations.csv (nor CSVFILES/annotations.csv).", path=str(src)
    )


def _read_annotations(path: Path) -> dict[str, list[Lesion]]:
    by_series: dict[str, list[Lesion]] = defaultdict(list)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not set(COLUMNS) <= set(reader.fieldnames or ()):
            raise InvalidLayoutError(
                f"{path.name} must have the columns {', '.join(COLUMNS)}.",
                path=str(path),
                found=list(reader.fieldnames or ()),
            )
        for line, row in enumerate(reader, start=2):
            try:
                centre = (float(row["coordX"]), float(row["coordY"]), float(row["coordZ"]))
                diameter = float(row["diameter_mm"])
            except (TypeError, ValueError) as exc:
                raise InvalidLayoutError(
                    f"{path.name} line {line} has a non-numeric coordinate or diameter.",
                    path=str(path),
                    line=line,
                ) from exc
            series = by_series[row["seriesuid"]]
            series.append(
                Lesion(
                    id=len(series) + 1,
                    center_lps_mm=centre,
                    diameter_mm=diameter,
                    volume_ml=round(sphere_volume_ml(diameter), 5),
                )
            )
    return dict(by_series)


def _case(src: Path, header: Path, lesions: list[Lesion]) -> Case:
    fields = read_mhd_header(header)
    data_file = fields.get("ElementDataFile", "")
    spacing = fields.get("ElementSpacing", "").split()
    if not data_file or len(spacing) != 3:
        raise InvalidLayoutError(
            f"{header.name} lacks ElementDataFile or a 3-D ElementSpacing.", path=str(header)
        )
    image = header.relative_to(src).as_posix()
    require_files(src, [(header.parent / data_file).relative_to(src).as_posix()])
    return Case(
        case_id=header.stem,
        patient_id=header.stem,
        image=image,
        image_format=ImageFormat.METAIMAGE,
        lesions=lesions,
        source="luna16",
        slice_thickness_mm=float(spacing[2]),
    )


def read_mhd_header(path: Path) -> dict[str, str]:
    """The ``Key = Value`` fields of a MetaImage header (text only, no pixel data read)."""
    fields: dict[str, str] = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return fields
