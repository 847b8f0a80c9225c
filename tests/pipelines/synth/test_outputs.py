"""Written studies read back: DICOM CT validity, HU per tissue, NIfTI and SEG ground truth."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom

from pipelines.datasets.manifest import LesionType, Manifest
from pipelines.dicom.geometry import SlicePlacement, affine_from_dicom, stack_slices
from pipelines.synth.study import SynthStudy


def _read_series(folder: Path) -> tuple[list[pydicom.Dataset], np.ndarray, np.ndarray]:
    """Datasets, HU volume ``[k, j, i]`` in normal order, and the DICOM-derived affine."""
    datasets = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    placements = [
        SlicePlacement(
            tuple(float(v) for v in ds.ImageOrientationPatient),
            tuple(float(v) for v in ds.ImagePositionPatient),  # type: ignore[arg-type]
            tuple(float(v) for v in ds.PixelSpacing),  # type: ignore[arg-type]
            ds.Rows,
            ds.Columns,
        )
        for ds in datasets
    ]
    stacked = stack_slices(placements)
    ordered = [datasets[i] for i in stacked.order]
    volume = np.stack(
        [ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in ordered]
    )
    return ordered, volume, stacked.affine_lps


def _voxel(affine: np.ndarray, lps_mm: tuple[float, float, float]) -> tuple[int, int, int]:
    inverse = np.linalg.inv(affine)
    i, j, k = np.rint(inverse[:3, :3] @ np.asarray(lps_mm) + inverse[:3, 3]).astype(int)
    return int(k), int(j), int(i)


def test_series_is_a_valid_ct_with_synthetic_identity(tiny_dataset: tuple[Path, Manifest]) -> None:
    out, manifest = tiny_dataset
    uids: set[str] = set()
    for case in manifest.cases:
        datasets, _, _ = _read_series(out / case.image)
        first = datasets[0]
        assert first.Modality == "CT" and first.SOPClassUID == pydicom.uid.CTImageStorage
        assert first.PatientID == case.patient_id and first.PatientID.startswith("SYN-")
        assert str(first.PatientName).startswith("SYNTHETIC^")
        assert float(first.SliceThickness) == case.slice_thickness_mm
        assert first.PatientPosition in {"HFS", "FFS"}
        assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
        uids.update(ds.SOPInstanceUID for ds in datasets)
        uids.add(first.StudyInstanceUID)
    n_instances = sum(len(list((out / c.image).glob("*.dcm"))) for c in manifest.cases)
    assert len(uids) == n_instances + len(manifest.cases)


def test_tissues_have_plausible_hu(
    tiny_dataset: tuple[Path, Manifest], tiny_studies: list[SynthStudy]
) -> None:
    out, manifest = tiny_dataset
    for case, study in zip(manifest.cases, tiny_studies, strict=True):
        _, volume, affine = _read_series(out / case.image)
        raw, lungs = study.volume_hu, study.lung_side
        if not np.allclose(affine, study.affine_lps, atol=1e-3):  # read back sorted along +normal
            raw, lungs = raw[::-1], lungs[::-1]
        assert np.abs(volume - raw).max() <= 0.5 + 1e-3
        assert volume[lungs > 0].mean() < -600
        assert np.percentile(volume, 99.9) > 300


def test_lesion_hu_matches_its_type(tiny_studies: list[SynthStudy]) -> None:
    seen = set()
    for study in tiny_studies:
        for lesion in study.lesions:
            median = float(np.median(study.volume_hu[study.label == lesion.id]))
            seen.add(lesion.type)
            if lesion.type == LesionType.SOLID:
                assert -350 < median < 150
            else:
                assert -800 < median < -150
    assert seen


def test_lesion_centres_fall_in_their_masks(tiny_dataset: tuple[Path, Manifest]) -> None:
    out, manifest = tiny_dataset
    n_lesions = 0
    for case in manifest.cases:
        affine = _instance_order_affine(out / case.image)
        nifti = nib.load(out / str(case.label))
        label = np.asarray(nifti.dataobj).transpose(2, 1, 0)
        assert np.allclose(nifti.affine, np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine, atol=1e-3)
        stored = json.loads((out / case.case_id / "lesions.json").read_text())
        assert [s["id"] for s in stored] == [lesion.id for lesion in case.lesions]
        for lesion in case.lesions:
            k, j, i = _voxel(affine, lesion.center_lps_mm)
            assert label[k, j, i] == lesion.id
            assert lesion.volume_ml and lesion.volume_ml > 0
            n_lesions += 1
    assert n_lesions > 0


def _instance_order_affine(folder: Path) -> np.ndarray:
    """The affine of the series in InstanceNumber order (the order the label is stored in)."""
    datasets = sorted(
        (pydicom.dcmread(p, stop_before_pixels=True) for p in folder.glob("*.dcm")),
        key=lambda ds: int(ds.InstanceNumber),
    )
    first, second = (np.array(ds.ImagePositionPatient, float) for ds in datasets[:2])
    return affine_from_dicom(
        [float(v) for v in datasets[0].ImageOrientationPatient],
        [float(v) for v in datasets[0].PixelSpacing],
        first,
        second - first,
    )


def test_seg_references_the_series_and_matches_the_mask(
    tiny_dataset: tuple[Path, Manifest], tiny_studies: list[SynthStudy]
) -> None:
    out, manifest = tiny_dataset
    case, study = next(
        (c, s) for c, s in zip(manifest.cases, tiny_studies, strict=True) if c.lesions
    )
    seg = hd.seg.segread(out / case.case_id / "seg.dcm")
    ct = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted((out / case.image).glob("*"))]
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "MANUAL"
    referenced = {
        ref.ReferencedSOPInstanceUID
        for item in seg.ReferencedSeriesSequence
        for ref in item.ReferencedInstanceSequence
    }
    assert referenced == {ds.SOPInstanceUID for ds in ct}
    mask = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[ds.SOPInstanceUID for ds in ct],
        segment_numbers=[1],
        ignore_spatial_locations=True,
        skip_overlap_checks=True,
    )[..., 0]
    assert np.array_equal(mask > 0, study.label > 0)


def test_feet_first_series_is_placed_correctly(
    tiny_dataset: tuple[Path, Manifest], tiny_studies: list[SynthStudy]
) -> None:
    out, manifest = tiny_dataset
    pairs = zip(manifest.cases, tiny_studies, strict=True)
    ffs = [(c, s) for c, s in pairs if s.protocol.patient_position == "FFS"]
    assert ffs, "the fixture needs a feet-first study"
    for case, study in ffs:
        datasets = [pydicom.dcmread(p) for p in sorted((out / case.image).glob("*.dcm"))]
        assert [float(v) for v in datasets[0].ImageOrientationPatient] == [-1, 0, 0, 0, 1, 0]
        z = [float(ds.ImagePositionPatient[2]) for ds in datasets]
        assert all(b > a for a, b in itertools.pairwise(z))  # scanned from the feet up
        assert np.allclose(_instance_order_affine(out / case.image), study.affine_lps, atol=1e-3)
        # the patient's left (+x) is on the heart's side: more soft tissue left of the midline
        x_mm = study.affine_lps[0, 3] + np.arange(study.volume_hu.shape[2]) * study.affine_lps[0, 0]
        middle = study.volume_hu[len(z) // 2]
        left, right = middle[:, x_mm > 0], middle[:, x_mm < 0]
        assert (left > -300).sum() > (right > -300).sum()
