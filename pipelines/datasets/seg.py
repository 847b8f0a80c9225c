"""Place a DICOM Segmentation's frames on the slices of the CT series it was drawn on.

A SEG is a stack of frames, each naming its segment and, usually, the source instance it was
derived from (``DerivationImageSequence``) and always its plane position. A frame goes onto the
reference slice with the same SOPInstanceUID when the reference volume knows its slices' UIDs
(single-frame series); otherwise onto the slice at the same plane position. Either way the SEG's
in-plane grid must be the reference's, and the frame of reference must agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipelines.errors import LabelMismatchError, UnreadableImageError
from pipelines.volume import Volume

#: How far a SEG frame may sit from a reference slice, in voxels.
POSITION_ATOL_VOXELS = 0.05
ORIENTATION_ATOL = 1e-3


def read_seg_label(path: Path, reference: Volume) -> np.ndarray:
    """Read a DICOM SEG as uint8 ``(k, j, i)`` on ``reference``'s grid; value = segment number.

    Raises:
        UnreadableImageError: the file is not a readable DICOM Segmentation.
        LabelMismatchError: its frame of reference, orientation, matrix or positions do not
            match ``reference``.
    """
    seg = _read(path)
    _check_frame_of_reference(seg, reference, path)
    _check_plane(seg, reference, path)
    pixels = np.asarray(seg.pixel_array)
    if pixels.ndim == 2:
        pixels = pixels[None]
    if str(seg.SegmentationType) == "FRACTIONAL":
        pixels = pixels > float(seg.MaximumFractionalValue) / 2
    slice_by_uid = _slice_index_by_uid(reference)
    shared = seg.SharedFunctionalGroupsSequence[0]
    mask = np.zeros(reference.shape, np.uint8)
    for frame, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
        identification = _functional(group, shared, "SegmentIdentificationSequence", path)
        number = int(identification.ReferencedSegmentNumber)
        position = _functional(group, shared, "PlanePositionSequence", path)
        k = _frame_slice(group, position, reference, slice_by_uid, path)
        mask[k][pixels[frame] > 0] = number
    return mask


def _read(path: Path) -> Any:
    import highdicom as hd
    from pydicom.errors import InvalidDicomError

    try:
        return hd.seg.segread(path)
    except (InvalidDicomError, OSError, ValueError, AttributeError, KeyError) as exc:
        raise UnreadableImageError(
            f"{path.name} is not a readable DICOM Segmentation: {exc}", path=str(path)
        ) from exc


def _check_frame_of_reference(seg: Any, reference: Volume, path: Path) -> None:
    expected = reference.provenance.frame_of_reference_uid
    found = str(seg.get("FrameOfReferenceUID", ""))
    if expected and found and expected != found:
        raise LabelMismatchError(
            f"Segmentation {path.name} was drawn in another frame of reference than its image.",
            path=str(path),
            expected=expected,
            found=found,
        )


def _check_plane(seg: Any, reference: Volume, path: Path) -> None:
    """The SEG's rows, columns, orientation and pixel spacing must be the reference's."""
    shared = seg.SharedFunctionalGroupsSequence[0]
    orientation = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    spacing = [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing]
    affine = reference.affine_lps
    columns_mm, rows_mm = np.linalg.norm(affine[:3, 0]), np.linalg.norm(affine[:3, 1])
    expected = np.concatenate([affine[:3, 0] / columns_mm, affine[:3, 1] / rows_mm])
    _, rows, columns = reference.shape
    same = (
        (int(seg.Rows), int(seg.Columns)) == (rows, columns)
        and np.allclose(orientation, expected, atol=ORIENTATION_ATOL)
        and np.allclose(spacing, [rows_mm, columns_mm], rtol=1e-3)
    )
    if not same:
        raise LabelMismatchError(
            f"Segmentation {path.name} is not on its image's in-plane grid.",
            path=str(path),
            seg_matrix=[int(seg.Rows), int(seg.Columns)],
            image_matrix=[rows, columns],
        )


def _slice_index_by_uid(reference: Volume) -> dict[str, int]:
    """SOPInstanceUID → slice k, when each slice is its own instance (single-frame series)."""
    uids = reference.provenance.sop_instance_uids
    if len(uids) != reference.shape[0] or len(set(uids)) != len(uids):
        return {}
    return {uid: k for k, uid in enumerate(uids)}


def _functional(group: Any, shared: Any, keyword: str, path: Path) -> Any:
    """A functional group macro's item, from the frame's own groups or else the shared ones."""
    for source in (group, shared):
        if keyword in source and len(source[keyword].value):
            return source[keyword].value[0]
    raise UnreadableImageError(
        f"Segmentation {path.name} has frames without {keyword}.", path=str(path), missing=keyword
    )


def _frame_slice(
    group: Any, plane: Any, reference: Volume, slice_by_uid: dict[str, int], path: Path
) -> int:
    """The reference slice a SEG frame lies on: by source SOPInstanceUID, else by position."""
    if slice_by_uid and "DerivationImageSequence" in group:
        for derivation in group.DerivationImageSequence:
            for source in derivation.get("SourceImageSequence", []):
                uid = str(source.ReferencedSOPInstanceUID)
                if uid in slice_by_uid:
                    return slice_by_uid[uid]
    position = [float(v) for v in plane.ImagePositionPatient]
    i, j, k = reference.lps_to_ijk(np.asarray(position))
    k_index = round(float(k))
    aligned = max(abs(i), abs(j), abs(k - k_index)) < POSITION_ATOL_VOXELS
    if not aligned or not 0 <= k_index < reference.shape[0]:
        raise LabelMismatchError(
            f"A frame of segmentation {path.name} lies on no slice of its image.",
            path=str(path),
            position_lps_mm=position,
        )
    return k_index
