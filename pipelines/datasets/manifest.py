"""The one manifest format every dataset layout is converted into.

A manifest is a JSON file listing cases: where the image and its label live (paths relative to
the manifest's folder), the lesion list in patient LPS millimetres, the patient id used for
splitting, and the split. Training, evaluation and ``prepare`` only ever read manifests, so a new
public layout needs an adapter and nothing else.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pipelines.config import validate_config
from pipelines.errors import InputNotFoundError

MANIFEST_SCHEMA_VERSION = "1.0"


class Split(StrEnum):
    TRAIN = "train"
    VAL = "val"
    TEST = "test"


class ImageFormat(StrEnum):
    DICOM = "dicom"  # a folder holding one CT series
    NIFTI = "nifti"
    METAIMAGE = "metaimage"  # .mhd header + .raw data (LUNA16)


class LabelFormat(StrEnum):
    NIFTI = "nifti"
    DICOM_SEG = "dicom-seg"


class LesionType(StrEnum):
    SOLID = "solid"
    PART_SOLID = "part_solid"
    GROUND_GLASS = "ground_glass"
    UNKNOWN = "unknown"


class Lesion(BaseModel):
    """One ground-truth lesion, placed in patient LPS millimetres."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int
    center_lps_mm: tuple[float, float, float]
    diameter_mm: float = Field(gt=0)
    volume_ml: float | None = Field(default=None, ge=0)
    type: LesionType = LesionType.UNKNOWN
    shape: str | None = None
    attached_to: list[str] = Field(default_factory=list)


class Case(BaseModel):
    """One study of a dataset."""

    model_config = ConfigDict(extra="forbid")

    case_id: str
    patient_id: str
    image: str
    image_format: ImageFormat
    label: str | None = None
    label_format: LabelFormat | None = None
    lesions: list[Lesion] = Field(default_factory=list)
    split: Split | None = None
    source: str
    slice_thickness_mm: float | None = None
    #: For a case made from a radiologist's review: the model (``name version``) it reviewed.
    reviewed_model: str | None = None

    @property
    def has_lesion(self) -> bool:
        return bool(self.lesions)


class Manifest(BaseModel):
    """A dataset: its cases and where it came from."""

    model_config = ConfigDict(extra="forbid")

    schema_version: str = MANIFEST_SCHEMA_VERSION
    name: str
    source: str
    cases: list[Case]

    def resolve(self, manifest_path: Path, relative: str) -> Path:
        """The absolute path of a case file given relative to the manifest's folder."""
        return (manifest_path.parent / relative).resolve()


def write_manifest(manifest: Manifest, path: Path) -> None:
    """Write ``manifest`` as indented JSON (diff-friendly, DVC-hashable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")


def read_manifest(path: Path) -> Manifest:
    """Read and validate a manifest.

    Raises:
        InputNotFoundError: the file does not exist.
        ConfigError: the file is not a valid manifest (the message names the first bad field).
    """
    if not path.is_file():
        raise InputNotFoundError(f"Manifest {path} does not exist.", path=str(path))
    return validate_config(path.read_text(encoding="utf-8"), Manifest, path)
