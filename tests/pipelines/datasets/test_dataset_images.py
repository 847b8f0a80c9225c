"""Image and label readers: NIfTI, MetaImage and DICOM SEG land in Basira's LPS convention."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pipelines.datasets.images import load_image, load_label
from pipelines.datasets.manifest import ImageFormat, LabelFormat
from pipelines.errors import InputNotFoundError, LabelMismatchError, UnreadableImageError
from pipelines.volume import Provenance, Volume
from tests.pipelines.datasets.layouts import (
    affine_lps,
    body_with_nodules,
    write_ct_and_seg,
    write_mhd,
    write_nifti,
)


def _feet_first_affine() -> np.ndarray:
    affine = affine_lps()
    affine[:3, 0] = (-0.8, 0, 0)  # i -> R
    affine[:3, 2] = (0, 0, -2.0)  # k -> I
    return affine


@pytest.mark.parametrize("affine", [affine_lps(), _feet_first_affine()])
def test_nifti_reads_as_lps_kji_and_agrees_with_itk(tmp_path: Path, affine: np.ndarray) -> None:
    image, _ = body_with_nodules()
    path = write_nifti(tmp_path / "ct.nii.gz", image, affine)
    volume = load_image(path, ImageFormat.NIFTI)
    np.testing.assert_array_equal(volume.array_hu, image)
    np.testing.assert_allclose(volume.affine_lps, affine, atol=1e-5)
    # ITK reads NIfTI into LPS itself: the same voxel must land on the same point
    itk = sitk.ReadImage(str(path))
    point = itk.TransformContinuousIndexToPhysicalPoint((3.0, 5.0, 7.0))
    np.testing.assert_allclose(volume.ijk_to_lps(np.array([3.0, 5.0, 7.0])), point, atol=1e-4)


def test_metaimage_reads_itk_lps_geometry(tmp_path: Path) -> None:
    image, _ = body_with_nodules()
    path = write_mhd(tmp_path / "scan.mhd", image, _feet_first_affine())
    volume = load_image(path, ImageFormat.METAIMAGE)
    assert volume.array_hu.dtype == np.float32 and volume.shape == image.shape
    np.testing.assert_array_equal(volume.array_hu, image)
    np.testing.assert_allclose(volume.affine_lps, _feet_first_affine(), atol=1e-6)
    assert volume.provenance.source_format == "metaimage"


def test_nifti_label_on_same_grid_is_uint8(tmp_path: Path) -> None:
    image, label = body_with_nodules()
    reference = load_image(
        write_nifti(tmp_path / "ct.nii.gz", image, affine_lps()), ImageFormat.NIFTI
    )
    path = write_nifti(tmp_path / "label.nii.gz", label.astype(np.float32), affine_lps())
    loaded = load_label(path, LabelFormat.NIFTI, reference)
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, label)


def test_nifti_label_on_other_grid_raises_label_mismatch(tmp_path: Path) -> None:
    image, label = body_with_nodules()
    reference = load_image(
        write_nifti(tmp_path / "ct.nii.gz", image, affine_lps()), ImageFormat.NIFTI
    )
    shifted = write_nifti(tmp_path / "label.nii.gz", label, affine_lps(origin_lps_mm=(0, 0, 0)))
    with pytest.raises(LabelMismatchError) as info:
        load_label(shifted, LabelFormat.NIFTI, reference)
    assert info.value.code == "dataset.label_mismatch"


def test_fractional_label_is_refused(tmp_path: Path) -> None:
    image, label = body_with_nodules()
    reference = load_image(
        write_nifti(tmp_path / "ct.nii.gz", image, affine_lps()), ImageFormat.NIFTI
    )
    path = write_nifti(tmp_path / "label.nii.gz", label * np.float32(0.5), affine_lps())
    with pytest.raises(UnreadableImageError):
        load_label(path, LabelFormat.NIFTI, reference)


@pytest.mark.parametrize(
    ("name", "image_format"),
    [("broken.nii.gz", ImageFormat.NIFTI), ("broken.mhd", ImageFormat.METAIMAGE)],
)
def test_corrupt_file_raises_unreadable_image(
    tmp_path: Path, name: str, image_format: ImageFormat
) -> None:
    path = tmp_path / name
    path.write_bytes(b"\x1f\x8b not really an image")
    with pytest.raises(UnreadableImageError) as info:
        load_image(path, image_format)
    assert info.value.code == "dataset.unreadable_image"
    assert name in info.value.message


def test_missing_image_raises_not_found(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        load_image(tmp_path / "absent.nii.gz", ImageFormat.NIFTI)


@pytest.fixture
def ct_and_seg(tmp_path: Path) -> tuple[Volume, Path, np.ndarray]:
    image, label = body_with_nodules()
    ct, seg = write_ct_and_seg(tmp_path, image, label, _feet_first_affine(), patient_id="P1")
    return load_image(ct, ImageFormat.DICOM), seg, label


def test_seg_frames_land_on_their_source_slices(
    ct_and_seg: tuple[Volume, Path, np.ndarray],
) -> None:
    volume, seg, label = ct_and_seg
    mask = load_label(seg, LabelFormat.DICOM_SEG, volume)
    assert mask.dtype == np.uint8 and mask.shape == volume.shape
    # the series is read in slice-normal order, so compare through LPS, not raw indices
    expected_lps = np.sort(_foreground_lps(label, _feet_first_affine()), axis=0)
    np.testing.assert_allclose(
        np.sort(_foreground_lps(mask, volume.affine_lps), axis=0), expected_lps, atol=1e-3
    )


def test_seg_placed_by_position_when_uids_are_unknown(
    ct_and_seg: tuple[Volume, Path, np.ndarray],
) -> None:
    volume, seg, _ = ct_and_seg
    anonymous = dataclasses.replace(volume, provenance=Provenance(source_format="dicom"))
    np.testing.assert_array_equal(
        load_label(seg, LabelFormat.DICOM_SEG, anonymous),
        load_label(seg, LabelFormat.DICOM_SEG, volume),
    )


def test_seg_on_another_grid_raises_label_mismatch(
    ct_and_seg: tuple[Volume, Path, np.ndarray],
) -> None:
    volume, seg, _ = ct_and_seg
    moved = affine_lps(origin_lps_mm=(100.0, 0.0, 0.0))
    other = Volume(volume.array_hu, moved, Provenance(source_format="dicom"))
    with pytest.raises(LabelMismatchError):
        load_label(seg, LabelFormat.DICOM_SEG, other)


def test_seg_in_another_frame_of_reference_raises_label_mismatch(
    ct_and_seg: tuple[Volume, Path, np.ndarray],
) -> None:
    volume, seg, _ = ct_and_seg
    other = dataclasses.replace(
        volume,
        provenance=dataclasses.replace(volume.provenance, frame_of_reference_uid="1.2.3.4"),
    )
    with pytest.raises(LabelMismatchError):
        load_label(seg, LabelFormat.DICOM_SEG, other)


def test_non_seg_file_raises_unreadable_image(
    ct_and_seg: tuple[Volume, Path, np.ndarray], tmp_path: Path
) -> None:
    volume, _, _ = ct_and_seg
    ct_file = sorted((tmp_path / "ct").iterdir())[0]
    with pytest.raises(UnreadableImageError):
        load_label(ct_file, LabelFormat.DICOM_SEG, volume)


def _foreground_lps(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    k, j, i = np.nonzero(mask)
    ijk = np.stack([i, j, k], axis=-1).astype(float)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def test_label_stored_in_reverse_slice_order_is_put_in_place(tmp_path: Path) -> None:
    image, label = body_with_nodules()
    reference = load_image(
        write_nifti(tmp_path / "ct.nii.gz", image, affine_lps()), ImageFormat.NIFTI
    )
    reversed_affine = affine_lps()
    reversed_affine[:3, 2] *= -1  # same voxels, slices written head to feet
    reversed_affine[:3, 3] = affine_lps()[:3, :3] @ [0, 0, label.shape[0] - 1] + affine_lps()[:3, 3]
    path = write_nifti(tmp_path / "label.nii.gz", label[::-1].copy(), reversed_affine)
    np.testing.assert_array_equal(load_label(path, LabelFormat.NIFTI, reference), label)
