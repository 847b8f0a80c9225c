"""The Medical Segmentation Decathlon layout (e.g. ``Task06_Lung``).

::

    Task06_Lung/
      dataset.json     # {"name": ..., "training": [{"image": "./imagesTr/lung_001.nii.gz",
                       #                             "label": "./labelsTr/lung_001.nii.gz"}, ...]}
      imagesTr/lung_001.nii.gz
      labelsTr/lung_001.nii.gz
      imagesTs/...     # no labels: not imported

Each training pair becomes a case; the MSD gives one scan per patient, so the patient id is the
case id. Lesions are the label's connected components (see :mod:`pipelines.datasets.lesions`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.datasets.adapters.checks import require_files
from pipelines.datasets.images import read_nifti
from pipelines.datasets.lesions import lesions_from_mask
from pipelines.datasets.manifest import Case, ImageFormat, LabelFormat, Manifest
from pipelines.errors import InvalidLayoutError


def import_msd(src: Path) -> Manifest:
    """Build a manifest from an MSD task folder (paths relative to ``src``).

    Raises:
        InvalidLayoutError: dataset.json is missing or malformed, or files it names are missing.
        UnreadableImageError: a label NIfTI cannot be read.
    """
    index = _read_index(src)
    pairs = [(_relative(e, "image", src), _relative(e, "label", src)) for e in index["training"]]
    require_files(src, [path for pair in pairs for path in pair])
    cases = [_case(src, image, label) for image, label in pairs]
    return Manifest(name=str(index.get("name") or src.name), source="msd", cases=cases)


def _read_index(src: Path) -> dict[str, Any]:
    path = src / "dataset.json"
    if not path.is_file():
        raise InvalidLayoutError(
            f"{src} holds no dataset.json: not an MSD task folder.", path=str(src)
        )
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidLayoutError(f"{path} is not valid JSON: {exc}", path=str(path)) from exc
    if not isinstance(index, dict) or not isinstance(index.get("training"), list):
        raise InvalidLayoutError(f"{path} has no 'training' list.", path=str(path))
    return index


def _relative(entry: object, key: str, src: Path) -> str:
    if not isinstance(entry, dict) or not isinstance(entry.get(key), str):
        raise InvalidLayoutError(
            f"An entry of {src / 'dataset.json'} 'training' has no '{key}' path.", entry=str(entry)
        )
    value: str = entry[key]
    return value[2:] if value.startswith("./") else value


def _case(src: Path, image: str, label: str) -> Case:
    mask, affine = read_nifti(src / label)
    case_id = Path(image).name.removesuffix(".gz").removesuffix(".nii")
    return Case(
        case_id=case_id,
        patient_id=case_id,
        image=image,
        image_format=ImageFormat.NIFTI,
        label=label,
        label_format=LabelFormat.NIFTI,
        lesions=lesions_from_mask(mask, affine),
        source="msd",
        slice_thickness_mm=round(float(np.linalg.norm(affine[:3, 2])), 4),
    )
