"""Read a manifest case's image and label into Basira's conventions, whatever the file format.

Every reader returns the :class:`~pipelines.volume.Volume` convention: HU as float32 in array order
``(k, j, i)`` and an affine from voxel ``(i, j, k, 1)`` to patient LPS millimetres.

* **NIfTI** (nibabel) stores voxels as ``(i, j, k)`` and an affine to RAS+ world space; the LPS
  affine is ``diag(-1, -1, 1, 1) @ affine_ras`` and the array is transposed to ``(k, j, i)``.
* **MetaImage** (SimpleITK, LUNA16's ``.mhd``/``.raw``): ITK's origin and direction are already
  LPS, and ``GetArrayFromImage`` already gives ``(k, j, i)``.
* **DICOM** series are read by :func:`pipelines.dicom.read.read_series_volume`.

Labels come back as uint8 ``(k, j, i)`` on the reference image's grid: NIfTI labels must share
the image's grid; DICOM SEG frames are placed on the reference slices by the SOPInstanceUID they
were derived from, or else by their plane position.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.datasets.manifest import ImageFormat, LabelFormat
from pipelines.errors import InputNotFoundError, LabelMismatchError, UnreadableImageError
from pipelines.volume import Provenance, Volume

logger = logging.getLogger(__name__)

#: RAS+ (NIfTI world) to LPS (DICOM patient) and back: negate x and y.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: How far a label's affine may differ from its image's (mm, and direction cosines).
AFFINE_ATOL = 1e-2


def load_image(path: Path, image_format: ImageFormat) -> Volume:
    """Read the image of a case as a HU :class:`Volume`.

    Raises:
        InputNotFoundError: ``path`` does not exist.
        UnreadableImageError: a NIfTI or MetaImage file its reader refuses, or not 3-D.
        BasiraError: any DICOM error of :func:`pipelines.dicom.read.read_series_volume`.
    """
    if not path.exists():
        raise InputNotFoundError(f"Image {path} does not exist.", path=str(path))
    if image_format is ImageFormat.DICOM:
        from pipelines.dicom.read import read_series_volume

        return read_series_volume(path)
    if image_format is ImageFormat.NIFTI:
        array, affine = read_nifti(path)
        source = "nifti"
    else:
        array, affine = _read_metaimage(path)
        source = "metaimage"
    return Volume(array.astype(np.float32, copy=False), affine, Provenance(source_format=source))


def load_label(path: Path, label_format: LabelFormat, reference: Volume) -> np.ndarray:
    """Read a case's label as uint8 ``(k, j, i)`` aligned voxel for voxel with ``reference``.

    Raises:
        InputNotFoundError: ``path`` does not exist.
        UnreadableImageError: the file cannot be read, or holds values that are not labels.
        LabelMismatchError: the label's grid or frame of reference differs from the image's.
    """
    if not path.exists():
        raise InputNotFoundError(f"Label {path} does not exist.", path=str(path))
    if label_format is LabelFormat.DICOM_SEG:
        from pipelines.datasets.seg import read_seg_label

        return read_seg_label(path, reference)
    array, affine = read_nifti(path)
    return as_label_array(align_to_reference(array, affine, reference, path), path)


def align_to_reference(
    array: np.ndarray, affine_lps: np.ndarray, reference: Volume, path: Path
) -> np.ndarray:
    """Return a ``(k, j, i)`` label array in ``reference``'s voxel order.

    A label stored on the very same voxels but with its axes in another order or direction (a
    series written head-to-feet while the reader orders slices feet-to-head) is permuted and
    flipped into place; any other grid is refused.

    Raises:
        LabelMismatchError: the label's voxels are not the reference's voxels.
    """
    if array.shape == reference.shape and np.allclose(
        affine_lps, reference.affine_lps, atol=AFFINE_ATOL
    ):
        return array
    # label voxel (i, j, k) -> reference voxel (i, j, k): must be a signed permutation
    mapping = np.linalg.inv(reference.affine_lps) @ affine_lps
    linear = np.rint(mapping[:3, :3])
    sizes = reference.shape[::-1]
    permutation = np.abs(linear)
    aligned = (
        np.allclose(mapping[:3, :3], linear, atol=1e-3)
        and np.array_equal(permutation.sum(axis=0), [1, 1, 1])
        and np.array_equal(permutation.sum(axis=1), [1, 1, 1])
    )
    if aligned:
        source_axis = [int(np.argmax(permutation[b])) for b in range(3)]  # label axis per ref axis
        signs = [linear[b, source_axis[b]] for b in range(3)]
        starts = [0 if signs[b] > 0 else sizes[b] - 1 for b in range(3)]
        aligned = np.allclose(mapping[:3, 3], starts, atol=1e-2) and all(
            array.shape[2 - source_axis[b]] == sizes[b] for b in range(3)
        )
    if not aligned:
        raise LabelMismatchError(
            f"Label {path.name} is not on its image's grid.",
            path=str(path),
            label_shape=list(array.shape),
            image_shape=list(reference.shape),
        )
    out = np.transpose(array, [2 - source_axis[2 - m] for m in range(3)])
    for b in range(3):
        if signs[b] < 0:
            out = np.flip(out, axis=2 - b)
    return np.ascontiguousarray(out)


def read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI file as ``(array (k, j, i), affine_lps)``, scaling applied.

    Raises:
        UnreadableImageError: nibabel refuses the file or it is not a 3-D volume.
    """
    import nibabel as nib

    try:
        image: Any = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError) as exc:
        raise UnreadableImageError(
            f"{path.name} is not a readable NIfTI file: {exc}", path=str(path)
        ) from exc
    data = _squeeze_to_3d(data, path)
    affine_lps = RAS_TO_LPS @ np.asarray(image.affine, float)
    return np.ascontiguousarray(np.transpose(data, (2, 1, 0))), affine_lps


def as_label_array(array: np.ndarray, path: Path) -> np.ndarray:
    """Cast label values to uint8, refusing fractions, negatives and values above 255."""
    if array.dtype == np.uint8:
        return array
    values = np.asarray(array)
    if not np.all(np.isfinite(values)) or np.any(values != np.rint(values)):
        raise UnreadableImageError(f"Label {path.name} holds non-integer values.", path=str(path))
    if values.size and (values.min() < 0 or values.max() > 255):
        raise UnreadableImageError(
            f"Label {path.name} holds values outside 0-255.",
            path=str(path),
            minimum=float(values.min()),
            maximum=float(values.max()),
        )
    return values.astype(np.uint8)


def _read_metaimage(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
        raise UnreadableImageError(
            f"{path.name} is not a readable MetaImage: {first_line}", path=str(path)
        ) from exc
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise UnreadableImageError(
            f"{path.name} is not a single-channel 3-D volume.",
            path=str(path),
            dimension=image.GetDimension(),
        )
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return sitk.GetArrayFromImage(image), affine


def _squeeze_to_3d(data: np.ndarray, path: Path) -> np.ndarray:
    if data.ndim > 3 and all(n == 1 for n in data.shape[3:]):
        data = data.reshape(data.shape[:3])
    if data.ndim != 3:
        raise UnreadableImageError(
            f"{path.name} is not a 3-D volume (shape {data.shape}).",
            path=str(path),
            shape=list(data.shape),
        )
    return data
