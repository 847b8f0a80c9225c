"""The one preprocessing definition: geometry is exact, intensities are windowed, labels align."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from pipelines.transforms import (
    CropMode,
    PreprocessConfig,
    PreprocessGeometry,
    label_to_source,
    plan_reorientation,
    preprocess_label,
    preprocess_volume,
    window,
)
from pipelines.volume import Provenance, Volume

NO_CROP_WIDE = PreprocessConfig(
    target_spacing_mm=(1.0, 1.0, 1.5), window_hu=(-5000.0, 5000.0), crop=CropMode.NONE
)


def _affine(spacing: tuple[float, float, float], origin: tuple[float, float, float]) -> np.ndarray:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    return affine


def _head_first() -> np.ndarray:
    return _affine((0.7, 0.8, 2.0), (-20.0, -15.0, 100.0))


def _feet_first() -> np.ndarray:
    """Columns run toward the right, slices toward the feet; rows also transposed with columns."""
    affine = np.zeros((4, 4))
    affine[:3, 0] = (0.0, 0.8, 0.0)  # i -> posterior
    affine[:3, 1] = (-0.7, 0.0, 0.0)  # j -> right
    affine[:3, 2] = (0.0, 0.0, -2.0)  # k -> inferior
    affine[:3, 3] = (10.0, -15.0, 150.0)
    affine[3, 3] = 1.0
    return affine


def _oblique() -> np.ndarray:
    angle = np.deg2rad(10)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    affine = _affine((0.7, 0.8, 2.0), (-20.0, -15.0, 100.0))
    affine[:3, :3] = rotation @ affine[:3, :3]
    return affine


def _ramp_volume(affine: np.ndarray, shape=(12, 40, 36)) -> tuple[Volume, np.ndarray]:
    """A volume whose HU is a linear function of LPS position (trilinear reproduces it exactly)."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    ijk = np.stack([i, j, k], axis=-1).astype(float)
    lps = ijk @ affine[:3, :3].T + affine[:3, 3]
    coefficients = np.array([3.0, -2.0, 5.0])
    values = (lps @ coefficients + 10.0).astype(np.float32)
    return Volume(values, affine, Provenance(source_format="nifti")), coefficients


@pytest.mark.parametrize("affine", [_head_first(), _feet_first(), _oblique()])
def test_output_voxel_holds_the_value_at_its_lps_position(affine: np.ndarray) -> None:
    volume, coefficients = _ramp_volume(affine)
    prepared = preprocess_volume(volume, NO_CROP_WIDE)
    shape = prepared.array.shape
    k, j, i = np.meshgrid(*(np.arange(1, n - 1) for n in shape), indexing="ij")
    ijk = np.stack([i, j, k], axis=-1).astype(float)
    lps = prepared.geometry.output_ijk_to_lps(ijk)
    expected_hu = lps @ coefficients + 10.0
    got_hu = prepared.array[1:-1, 1:-1, 1:-1] * 10000.0 - 5000.0
    inside = np.all((prepared.geometry.output_to_source_ijk(ijk) >= 0), axis=-1) & np.all(
        prepared.geometry.output_to_source_ijk(ijk) <= np.array(volume.shape[::-1]) - 1, axis=-1
    )
    np.testing.assert_allclose(got_hu[inside], expected_hu[inside], atol=0.05)


@pytest.mark.parametrize("affine", [_head_first(), _feet_first(), _oblique()])
def test_output_is_canonical_lps_with_target_spacing(affine: np.ndarray) -> None:
    volume, _ = _ramp_volume(affine)
    geometry = preprocess_volume(volume, NO_CROP_WIDE).geometry
    np.testing.assert_allclose(geometry.spacing_mm, (1.0, 1.0, 1.5), rtol=1e-9)
    directions = geometry.affine_lps[:3, :3] / np.asarray(geometry.spacing_mm)
    assert np.all(np.diag(directions) > 0.9)  # i -> L, j -> P, k -> S


def test_point_maps_to_same_anatomy_before_and_after_feet_first() -> None:
    affine = _feet_first()
    array = np.full((12, 40, 36), -1000.0, np.float32)
    array[6, 20, 10] = 1000.0  # one bright voxel, k=6 j=20 i=10
    volume = Volume(array, affine, Provenance(source_format="nifti"))
    config = PreprocessConfig(target_spacing_mm=(0.7, 0.8, 2.0), crop=CropMode.NONE)
    prepared = preprocess_volume(volume, config)
    lps = volume.ijk_to_lps(np.array([10, 20, 6]))
    i, j, k = np.rint(prepared.geometry.lps_to_output_ijk(lps)).astype(int)
    assert prepared.array[k, j, i] == pytest.approx(1.0)
    assert np.count_nonzero(prepared.array > 0.5) == 1
    np.testing.assert_allclose(prepared.geometry.output_to_source_ijk([i, j, k]), [10, 20, 6])


def test_window_clips_and_scales_to_unit_interval() -> None:
    values = np.array([-2000.0, -1000.0, -300.0, 400.0, 3000.0], np.float32)
    np.testing.assert_allclose(window(values, (-1000, 400)), [0.0, 0.0, 0.5, 1.0, 1.0])


def _body_volume() -> Volume:
    array = np.full((20, 64, 64), -1000.0, np.float32)
    array[4:16, 20:40, 10:30] = 40.0  # the body
    array[:, 60:62, :] = 200.0  # a table, far away and smaller
    array[10, 5, 50] = 500.0  # a speck
    return Volume(array, _affine((1.0, 1.0, 1.5), (0, 0, 0)), Provenance(source_format="nifti"))


def test_body_crop_keeps_largest_component_plus_margin() -> None:
    config = PreprocessConfig(target_spacing_mm=(1.0, 1.0, 1.5), crop_margin_mm=3.0)
    prepared = preprocess_volume(_body_volume(), config)
    start, stop = prepared.geometry.crop_start_ijk, prepared.geometry.crop_stop_ijk
    assert start[0] <= 10 - 3 + 1 and stop[0] >= 30 + 3 - 1
    assert start[1] <= 20 - 3 + 1 and stop[1] >= 40 + 3 - 1
    assert stop[1] < 60  # table excluded
    assert prepared.array.shape == prepared.geometry.shape
    # the crop moves the origin: output voxel 0 is resampled voxel crop_start
    np.testing.assert_allclose(
        prepared.geometry.output_ijk_to_lps([0, 0, 0]), start * np.array([1, 1, 1.5])
    )


def test_all_air_volume_is_not_cropped() -> None:
    volume = Volume(
        np.full((8, 16, 16), -1000.0, np.float32),
        _affine((1.0, 1.0, 1.5), (0, 0, 0)),
        Provenance(source_format="nifti"),
    )
    prepared = preprocess_volume(volume, PreprocessConfig())
    assert prepared.array.shape == (8, 16, 16)
    assert np.all(prepared.array == 0.0)


@pytest.mark.parametrize("affine", [_head_first(), _feet_first(), _oblique()])
def test_label_voxel_is_the_source_voxel_containing_its_centre(affine: np.ndarray) -> None:
    volume, _ = _ramp_volume(affine)
    label = np.random.default_rng(0).integers(0, 3, volume.shape, dtype=np.uint8)
    geometry = preprocess_volume(volume, PreprocessConfig(crop_margin_mm=2.0)).geometry
    out = preprocess_label(label, geometry)
    assert out.dtype == np.uint8 and out.shape == geometry.shape
    k, j, i = np.meshgrid(*(np.arange(n) for n in out.shape), indexing="ij")
    source = geometry.output_to_source_ijk(np.stack([i, j, k], axis=-1).astype(float))
    nearest = np.floor(source + 0.5).astype(int)
    nearest = np.clip(nearest, 0, np.array(volume.shape[::-1]) - 1)
    expected = label[nearest[..., 2], nearest[..., 1], nearest[..., 0]]
    # a centre exactly on a source voxel edge may go either way (float rounding)
    on_edge = np.any(np.abs((source + 0.5) - np.rint(source + 0.5)) < 1e-4, axis=-1)
    np.testing.assert_array_equal(out[~on_edge], expected[~on_edge])
    assert np.mean(on_edge) < 0.2


@pytest.mark.parametrize("affine", [_head_first(), _feet_first()])
def test_label_round_trips_to_source_grid(affine: np.ndarray) -> None:
    volume, _ = _ramp_volume(affine)
    label = np.zeros(volume.shape, np.uint8)
    label[3:9, 8:30, 6:28] = 2
    config = PreprocessConfig(target_spacing_mm=(0.35, 0.4, 1.0), crop=CropMode.NONE)
    geometry = preprocess_volume(volume, config).geometry
    back = label_to_source(preprocess_label(label, geometry), geometry)
    np.testing.assert_array_equal(back, label)  # upsampling then back is lossless


def test_geometry_round_trips_through_dict() -> None:
    volume, _ = _ramp_volume(_feet_first())
    geometry = preprocess_volume(volume, PreprocessConfig()).geometry
    again = PreprocessGeometry.from_dict(geometry.to_dict())
    assert again.shape == geometry.shape and again.axes == geometry.axes
    np.testing.assert_array_equal(again.affine_lps, geometry.affine_lps)


def test_plan_reorientation_for_ras_target() -> None:
    axes, flips = plan_reorientation(_head_first(), "RAS")
    assert axes == (0, 1, 2) and flips == (True, True, False)


@pytest.mark.parametrize(
    "fields",
    [
        {"orientation": "LPX"},
        {"orientation": "LLS"},
        {"window_hu": (400, -1000)},
        {"target_spacing_mm": (1.0, 0.0, 1.0)},
        {"spacing": (1, 1, 1)},
    ],
)
def test_invalid_config_is_refused(fields: dict) -> None:
    with pytest.raises(ValidationError):
        PreprocessConfig(**fields)
