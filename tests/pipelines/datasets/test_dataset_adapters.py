"""Each layout adapter on a tiny dataset written in exactly that layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipelines.datasets.adapters import Layout, import_dataset
from pipelines.datasets.adapters.luna16 import import_luna16
from pipelines.datasets.adapters.msd import import_msd
from pipelines.datasets.manifest import (
    Case,
    ImageFormat,
    LabelFormat,
    Manifest,
    read_manifest,
    write_manifest,
)
from pipelines.datasets.splits import SplitConfig
from pipelines.errors import InputNotFoundError, InvalidLayoutError
from tests.pipelines.datasets.layouts import (
    LUNA_UIDS,
    affine_lps,
    body_with_nodules,
    write_ct_and_seg,
    write_nifti,
)


def test_msd_cases_and_lesions_from_label_components(msd_task: Path) -> None:
    manifest = import_msd(msd_task)
    assert [c.case_id for c in manifest.cases] == ["lung_001", "lung_002", "lung_003"]
    first = manifest.cases[0]
    assert first.image == "imagesTr/lung_001.nii.gz" and first.label_format is LabelFormat.NIFTI
    assert first.slice_thickness_mm == pytest.approx(2.0)
    assert len(first.lesions) == 2 and not manifest.cases[2].lesions
    big = first.lesions[0]
    voxel_ml = 0.8 * 0.8 * 2.0 / 1000
    assert big.volume_ml == pytest.approx(48 * voxel_ml)
    # centre of label[5:8, 8:12, 8:12] is voxel (i, j, k) = (9.5, 9.5, 6)
    expected = affine_lps() @ np.array([9.5, 9.5, 6.0, 1.0])
    np.testing.assert_allclose(big.center_lps_mm, expected[:3], atol=1e-3)
    assert big.diameter_mm == pytest.approx((6 * 48 * voxel_ml * 1000 / np.pi) ** (1 / 3), rel=1e-3)


def test_msd_without_dataset_json_raises_invalid_layout(tmp_path: Path) -> None:
    with pytest.raises(InvalidLayoutError) as info:
        import_msd(tmp_path)
    assert info.value.code == "dataset.invalid_layout"


def test_msd_with_missing_label_names_it(msd_task: Path) -> None:
    (msd_task / "labelsTr" / "lung_002.nii.gz").unlink()
    with pytest.raises(InvalidLayoutError, match=r"labelsTr/lung_002\.nii\.gz"):
        import_msd(msd_task)


def test_luna16_lesions_are_annotation_rows_in_lps(luna_folder: Path) -> None:
    manifest = import_luna16(luna_folder)
    assert [c.case_id for c in manifest.cases] == list(LUNA_UIDS)
    first, second = manifest.cases
    assert first.image == f"subset0/{LUNA_UIDS[0]}.mhd"
    assert first.image_format is ImageFormat.METAIMAGE and first.label is None
    assert [lesion.diameter_mm for lesion in first.lesions] == [4.0, 6.5]
    assert first.lesions[1].center_lps_mm == (-2.0, 5.0, -20.0)
    assert not second.lesions
    assert first.slice_thickness_mm == pytest.approx(2.0)


def test_luna16_missing_raw_raises_invalid_layout(luna_folder: Path) -> None:
    (luna_folder / "subset1" / f"{LUNA_UIDS[1]}.raw").unlink()
    with pytest.raises(InvalidLayoutError, match=r"\.raw"):
        import_luna16(luna_folder)


def test_luna16_bad_csv_columns_raise_invalid_layout(luna_folder: Path) -> None:
    (luna_folder / "annotations.csv").write_text("uid,x,y,z,d\n", encoding="utf-8")
    with pytest.raises(InvalidLayoutError, match="columns"):
        import_luna16(luna_folder)


def _synthetic_folder(root: Path) -> Path:
    _, label = body_with_nodules()
    cases = []
    for n in range(2):
        case_dir = root / f"case_{n:04d}"
        write_nifti(case_dir / "label.nii.gz", label, affine_lps())
        (case_dir / "dicom").mkdir(parents=True)
        (case_dir / "dicom" / "CT00001.dcm").write_bytes(b"placeholder")
        cases.append(
            Case(
                case_id=case_dir.name,
                patient_id=f"SYN{n}",
                image=f"{case_dir.name}/dicom",
                image_format=ImageFormat.DICOM,
                label=f"{case_dir.name}/label.nii.gz",
                label_format=LabelFormat.NIFTI,
                source="synthetic",
            )
        )
    write_manifest(Manifest(name="synth", source="synthetic", cases=cases), root / "manifest.json")
    return root


def test_synthetic_import_rebases_paths_to_the_new_manifest(tmp_path: Path) -> None:
    src = _synthetic_folder(tmp_path / "synth")
    out = tmp_path / "prepared" / "manifest.json"
    import_dataset(Layout.SYNTHETIC, src, out, split=SplitConfig(seed=1))
    manifest = read_manifest(out)
    case = manifest.cases[0]
    assert case.image == "../synth/case_0000/dicom"
    assert manifest.resolve(out, case.label or "") == (src / "case_0000/label.nii.gz").resolve()
    assert all(c.split is not None for c in manifest.cases)


def test_synthetic_with_missing_series_raises_invalid_layout(tmp_path: Path) -> None:
    src = _synthetic_folder(tmp_path / "synth")
    shutil.rmtree(src / "case_0001" / "dicom")
    with pytest.raises(InvalidLayoutError, match="case_0001/dicom"):
        import_dataset(Layout.SYNTHETIC, src, tmp_path / "m.json")


def test_import_from_absent_folder_raises_not_found(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        import_dataset(Layout.MSD, tmp_path / "absent", tmp_path / "m.json")


def test_duplicate_case_ids_raise_invalid_layout(msd_task: Path, tmp_path: Path) -> None:
    index = json.loads((msd_task / "dataset.json").read_text())
    index["training"].append(dict(index["training"][0]))
    (msd_task / "dataset.json").write_text(json.dumps(index))
    with pytest.raises(InvalidLayoutError, match="not unique"):
        import_dataset(Layout.MSD, msd_task, tmp_path / "m.json")


def test_dicom_seg_folders_pair_series_with_their_seg(tmp_path: Path) -> None:
    image, label = body_with_nodules()
    src = tmp_path / "hospital"
    write_ct_and_seg(src / "p1", image, label, affine_lps(), patient_id="P1")
    write_ct_and_seg(src / "p2", image, np.zeros_like(label), affine_lps(), patient_id="P2")
    (src / "README.txt").write_text("not dicom")
    manifest = import_dataset(Layout.DICOM_SEG, src, src / "manifest.json")
    assert sorted(c.case_id for c in manifest.cases) == ["p1_ct", "p2_ct"]
    by_patient = {c.patient_id: c for c in manifest.cases}
    assert by_patient["P1"].image == "p1/ct" and by_patient["P1"].label == "p1/seg/seg.dcm"
    assert len(by_patient["P1"].lesions) == 2 and not by_patient["P2"].lesions


def test_dicom_seg_without_any_seg_raises_invalid_layout(tmp_path: Path) -> None:
    image, label = body_with_nodules()
    src = tmp_path / "hospital"
    write_ct_and_seg(src / "p1", image, label, affine_lps(), patient_id="P1")
    shutil.rmtree(src / "p1" / "seg")
    with pytest.raises(InvalidLayoutError, match="no CT series with a DICOM SEG"):
        import_dataset(Layout.DICOM_SEG, src, src / "manifest.json")
