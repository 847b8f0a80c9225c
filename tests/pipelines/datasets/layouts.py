"""Writers for tiny datasets in each public layout, on 32 x 32 x 16 grids."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SHAPE = (16, 32, 32)  # (k, j, i)


def affine_lps(
    spacing_mm: tuple[float, float, float] = (0.8, 0.8, 2.0),
    origin_lps_mm: tuple[float, float, float] = (-12.0, -10.0, -40.0),
) -> np.ndarray:
    """Head-first axial: i -> L, j -> P, k -> S."""
    affine = np.diag([*spacing_mm, 1.0])
    affine[:3, 3] = origin_lps_mm
    return affine


def body_with_nodules() -> tuple[np.ndarray, np.ndarray]:
    """A HU volume (air around a soft-tissue block) and its two-nodule label, both (k, j, i)."""
    image = np.full(SHAPE, -1000.0, np.float32)
    image[2:14, 4:28, 4:28] = 30.0
    label = np.zeros(SHAPE, np.uint8)
    label[5:8, 8:12, 8:12] = 1  # 48 voxels
    label[10:12, 20:23, 18:21] = 1  # 18 voxels
    image[label > 0] = 80.0
    return image, label


def write_nifti(path: Path, array_kji: np.ndarray, affine: np.ndarray) -> Path:
    """Write a (k, j, i) array with an LPS affine as NIfTI (i, j, k) with its RAS affine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.transpose(array_kji, (2, 1, 0)), LPS_TO_RAS @ affine), str(path))
    return path


def write_mhd(path: Path, array_kji: np.ndarray, affine: np.ndarray) -> Path:
    """Write a (k, j, i) array with an LPS affine as MetaImage .mhd + .raw (as LUNA16)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array_kji.astype(np.int16))
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in (affine[:3, :3] / spacing).ravel()])
    image.SetOrigin([float(v) for v in affine[:3, 3]])
    sitk.WriteImage(image, str(path))
    return path


def write_ct_and_seg(
    root: Path, image: np.ndarray, mask: np.ndarray, affine: np.ndarray, *, patient_id: str
) -> tuple[Path, Path]:
    """Write ``image`` as a CT series in ``root/ct`` and ``mask`` as a SEG in ``root/seg``."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from pipelines.dicom.write_ct import CTSeriesInfo, write_ct_series

    paths = write_ct_series(
        image,
        affine,
        root / "ct",
        CTSeriesInfo(
            uid_seed=str(root),
            patient_id=patient_id,
            patient_name="Test^Patient",
            slice_thickness_mm=float(np.linalg.norm(affine[:3, 2])),
            extra={"PatientBirthDate": ""},
        ),
    )
    sources = [pydicom.dcmread(p) for p in paths]
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="nodule",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Nodule,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=mask.astype(bool),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=hd.UID(),
        series_number=100,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="Basira",
        manufacturer_model_name="tests",
        software_versions="0",
        device_serial_number="0",
    )
    seg_path = root / "seg" / "seg.dcm"
    seg_path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(seg_path)
    return root / "ct", seg_path


LUNA_UIDS = ("1.3.6.1.4.1.14519.5.2.1.6279.6001.100", "1.3.6.1.4.1.14519.5.2.1.6279.6001.200")
