"""``prepare``: cases cached with the shared preprocessing, labels aligned, failures recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.datasets.adapters import Layout, import_dataset
from pipelines.datasets.commands import prepare_command
from pipelines.datasets.manifest import read_manifest
from pipelines.datasets.prepare import (
    PrepareConfig,
    PreparedIndex,
    load_prepare_config,
    load_prepared_case,
    prepare_manifest,
)
from pipelines.errors import ConfigError, PrepareFailedError
from pipelines.transforms import PreprocessConfig
from tests.pipelines.datasets.layouts import (
    LUNA_UIDS,
    affine_lps,
    body_with_nodules,
    write_mhd,
    write_nifti,
)

CONFIG = PrepareConfig(preprocess=PreprocessConfig(target_spacing_mm=(1.0, 1.0, 1.5)))


def _msd(root: Path, n_cases: int = 3) -> Path:
    image, label = body_with_nodules()
    training = []
    for n in range(1, n_cases + 1):
        name = f"lung_{n:03d}.nii.gz"
        write_nifti(root / "imagesTr" / name, image, affine_lps())
        write_nifti(root / "labelsTr" / name, label, affine_lps())
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    (root / "dataset.json").write_text(json.dumps({"name": "Lung", "training": training}))
    return root


def test_msd_cases_are_cached_with_aligned_labels(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    import_dataset(Layout.MSD, _msd(tmp_path / "Task06_Lung"), manifest)
    out = tmp_path / "prepared"
    index = prepare_manifest(manifest, out, CONFIG)
    assert len(index.cases) == 3 and not index.failures
    again = PreparedIndex.model_validate_json((out / "prepared.json").read_text())
    assert again == index
    case = load_prepared_case(out / index.cases[0].cache)
    assert case["image"].dtype == np.float16 and case["label"].dtype == np.uint8
    assert case["image"].shape == case["label"].shape == tuple(index.cases[0].shape_kji)
    # nodules are 80 HU in a 30 HU body: labelled voxels are brighter than the body around
    body = (case["image"] > 0.7) & (case["label"] == 0)
    assert case["image"][case["label"] > 0].mean() > case["image"][body].mean()
    for lesion in case["lesions"]:
        i, j, k = np.rint(lesion["center_ijk"]).astype(int)
        assert case["label"][k, j, i] == 1
    np.testing.assert_allclose(index.cases[0].spacing_mm, (1.0, 1.0, 1.5))


def test_luna16_lesions_become_sphere_labels(tmp_path: Path) -> None:
    root = tmp_path / "LUNA16"
    image, _ = body_with_nodules()
    write_mhd(root / "subset0" / f"{LUNA_UIDS[0]}.mhd", image, affine_lps())
    centre = affine_lps() @ np.array([16.0, 16.0, 8.0, 1.0])
    (root / "annotations.csv").write_text(
        "seriesuid,coordX,coordY,coordZ,diameter_mm\n"
        f"{LUNA_UIDS[0]},{centre[0]},{centre[1]},{centre[2]},6.0\n"
    )
    manifest = tmp_path / "manifest.json"
    import_dataset(Layout.LUNA16, root, manifest)
    index = prepare_manifest(manifest, tmp_path / "prepared", CONFIG)
    case = load_prepared_case(tmp_path / "prepared" / index.cases[0].cache)
    (lesion,) = case["lesions"]
    i, j, k = np.rint(lesion["center_ijk"]).astype(int)
    assert case["label"][k, j, i] == 1
    voxels = int(case["label"].sum())
    assert voxels * 1.5 / 1000 == pytest.approx(np.pi * 6.0**3 / 6 / 1000, rel=0.25)


def test_unreadable_case_is_recorded_and_others_kept(tmp_path: Path) -> None:
    src = _msd(tmp_path / "Task06_Lung")
    (src / "imagesTr" / "lung_002.nii.gz").write_bytes(b"\x1f\x8b broken")
    manifest = tmp_path / "manifest.json"
    import_dataset(Layout.MSD, src, manifest)
    index = prepare_manifest(manifest, tmp_path / "prepared", CONFIG)
    assert [c.case_id for c in index.cases] == ["lung_001", "lung_003"]
    (failure,) = index.failures
    assert failure.case_id == "lung_002" and failure.code == "dataset.unreadable_image"
    with pytest.raises(PrepareFailedError) as info:
        prepare_command(manifest=manifest, out=tmp_path / "again", params=None, section="prepare")
    assert info.value.code == "dataset.prepare_failed"


def test_split_in_config_is_applied_and_written(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    import_dataset(Layout.MSD, _msd(tmp_path / "Task06_Lung", n_cases=4), manifest)
    params = tmp_path / "params.yaml"
    params.write_text(
        "prepare:\n  split: {seed: 3, val_fraction: 0.25, test_fraction: 0.25}\n"
        "  preprocess: {target_spacing_mm: [2.0, 2.0, 3.0], crop: none}\n"
        "  cache_dtype: float32\n"
    )
    config = load_prepare_config(params)
    index = prepare_manifest(manifest, tmp_path / "prepared", config)
    assert sorted(str(c.split) for c in index.cases) == ["test", "train", "train", "val"]
    written = read_manifest(tmp_path / "prepared" / "manifest.json")
    assert written.resolve(
        tmp_path / "prepared" / "manifest.json", written.cases[0].image
    ).is_file()
    case = load_prepared_case(tmp_path / "prepared" / index.cases[0].cache)
    assert case["image"].dtype == np.float32 and case["image"].shape == (
        10,
        12,
        12,
    )  # floor(n * source / target)


def test_split_name_in_config_puts_every_case_in_that_split(tmp_path: Path) -> None:
    """A held-out test set is prepared on its own: ``split: test`` labels every case test."""
    manifest = tmp_path / "manifest.json"
    import_dataset(Layout.MSD, _msd(tmp_path / "Task06_Lung", n_cases=3), manifest)
    params = tmp_path / "params.yaml"
    params.write_text(
        "prepare_test:\n  split: test\n  preprocess: {target_spacing_mm: [2.0, 2.0, 3.0]}\n"
    )
    config = load_prepare_config(params, "prepare_test")
    index = prepare_manifest(manifest, tmp_path / "prepared", config)
    assert [str(c.split) for c in index.cases] == ["test"] * 3
    written = read_manifest(tmp_path / "prepared" / "manifest.json")
    assert {str(c.split) for c in written.cases} == {"test"}


@pytest.mark.parametrize(
    ("text", "section"),
    [("other: {}\n", "prepare"), ("prepare: {cache_dtype: int8}\n", "prepare"), (": [", "prepare")],
)
def test_bad_params_raise_config_error(tmp_path: Path, text: str, section: str) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(text)
    with pytest.raises(ConfigError):
        load_prepare_config(params, section)
