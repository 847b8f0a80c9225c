"""The one preprocessing definition: geometry is exact, intensities are windowed, labels align."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

import pipelines.transforms as transforms
from pipelines.transforms import (
    CropMode,
    LungCropConfig,
    PreprocessConfig,
    PreprocessGeometry,
    _add_margin,
    _resample,
    body_box,
    label_to_source,
    lung_box,
    plan_reorientation,
    preprocess_label,
    preprocess_volume,
    reorient_array,
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


def _crop_after_resampling_all(volume: Volume, config: PreprocessConfig) -> np.ndarray:
    """The body crop as defined: the whole grid resampled, then cropped (the reference)."""
    axes, flips = plan_reorientation(volume.affine_lps, config.orientation)
    array = reorient_array(volume.array_hu, axes, flips)
    affine = volume.affine_lps @ transforms._reorientation_matrix(volume.shape, axes, flips)
    resampled = _resample(
        array, transforms._spacing_ratios(affine, config.target_spacing_mm), mode="trilinear"
    )
    start, stop = _add_margin(
        *body_box(resampled, config.body_threshold_hu), resampled.shape, config
    )
    cropped = resampled[start[2] : stop[2], start[1] : stop[1], start[0] : stop[0]]
    return window(cropped, config.window_hu)


def _chest(affine: np.ndarray, shape=(30, 90, 80), centre=(0.5, 0.5)) -> Volume:
    """An elliptic body with a table under it and noise, anywhere in the field of view."""
    rng = np.random.default_rng(3)
    _, j, i = np.ogrid[: shape[0], : shape[1], : shape[2]]
    body = ((j - shape[1] * centre[0]) / (shape[1] * 0.3)) ** 2 + (
        (i - shape[2] * centre[1]) / (shape[2] * 0.4)
    ) ** 2 < 1
    array = np.full(shape, -1000.0, np.float32)
    array[np.broadcast_to(body, shape)] = 40.0
    array[:, -6:-4, :] = 150.0  # the table
    array += rng.normal(0, 30, shape).astype(np.float32)
    return Volume(array, affine, Provenance(source_format="nifti"))


@pytest.mark.parametrize(
    ("affine", "centre"),
    [
        (_head_first(), (0.5, 0.5)),
        (_feet_first(), (0.5, 0.5)),
        (_oblique(), (0.35, 0.6)),
        (_head_first(), (0.3, 0.35)),  # the body against a side of the field of view
        (_affine((1.6, 1.6, 1.0), (0.0, 0.0, 0.0)), (0.5, 0.5)),  # upsampled in-plane
    ],
)
def test_body_crop_resamples_only_the_body_and_gives_the_same_voxels(
    affine: np.ndarray, centre: tuple[float, float]
) -> None:
    """Resampling only around the body (issue 18) must not move the crop by a voxel or change
    a value: the network was trained on the crop of the whole resampled grid."""
    volume = _chest(affine, centre=centre)
    config = PreprocessConfig(window_hu=(-1000.0, 400.0))
    prepared = preprocess_volume(volume, config)
    expected = _crop_after_resampling_all(volume, config)
    assert prepared.array.shape == expected.shape
    np.testing.assert_array_equal(prepared.array, expected)


def test_body_crop_picks_the_body_when_a_table_outweighs_it_on_the_coarse_estimate() -> None:
    """Every fourth voxel sees more of a thin table than of the body here; the crop must still
    be the body's, as on the whole grid."""
    volume = _body_volume()
    config = PreprocessConfig(crop_margin_mm=3.0)
    prepared = preprocess_volume(volume, config)
    np.testing.assert_array_equal(prepared.array, _crop_after_resampling_all(volume, config))


def test_body_crop_falls_back_to_the_whole_grid_when_the_estimate_misses_the_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A window estimate that cuts the body must not cut the crop."""
    volume = _chest(_head_first())
    config = PreprocessConfig()
    expected = preprocess_volume(volume, config)
    real_window = transforms._body_window

    def too_small(*args: object, **kwargs: object) -> tuple[tuple[int, int], ...] | None:
        window = real_window(*args, **kwargs)  # type: ignore[arg-type]
        assert window is not None
        (k0, k1), (j0, j1), (i0, i1) = window
        return (k0, k1), (j0 + 10, j1 - 10), (i0, i1)

    monkeypatch.setattr(transforms, "_body_window", too_small)
    prepared = preprocess_volume(volume, config)
    assert prepared.geometry.to_dict() == expected.geometry.to_dict()
    np.testing.assert_array_equal(prepared.array, expected.array)


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


@pytest.mark.parametrize(
    ("shape", "ratios"),
    [((250, 64, 48), (1 / 0.7, 1 / 0.7, 1.5 / 1.25)), ((13, 40, 41), (0.8, 1.3, 3.0))],
)
def test_numpy_resampling_equals_torch_interpolate(
    shape: tuple[int, int, int], ratios: tuple[float, float, float]
) -> None:
    """The preprocessing contract was defined by torch's interpolate; numpy must match it."""
    rng = np.random.default_rng(2)
    image = (rng.random(shape, dtype=np.float32) * 2000 - 1000).astype(np.float32)
    label = rng.integers(0, 4, shape).astype(np.uint8)
    scale = (1.0 / ratios[2], 1.0 / ratios[1], 1.0 / ratios[0])
    with torch.no_grad():
        expected = F.interpolate(
            torch.from_numpy(image)[None, None],
            scale_factor=scale,
            mode="trilinear",
            align_corners=False,
            recompute_scale_factor=False,
        )[0, 0].numpy()
        expected_label = F.interpolate(
            torch.from_numpy(label)[None, None],
            scale_factor=scale,
            mode="nearest-exact",
            recompute_scale_factor=False,
        )[0, 0].numpy()
    np.testing.assert_allclose(_resample(image, ratios, mode="trilinear"), expected, atol=1e-3)
    np.testing.assert_array_equal(_resample(label, ratios, mode="nearest-exact"), expected_label)


#: A chest at the default target spacing (1 x 1 x 1.5 mm): (k, j, i) = 150 x 160 x 200 mm.
CHEST_SHAPE = (100, 160, 200)


def lungs_hu(*, lungs: tuple[bool, bool] = (True, True)) -> np.ndarray:
    """Air, an elliptic body and two ellipsoid lungs (right at low i, left at high i)."""
    k, j, i = np.ogrid[: CHEST_SHAPE[0], : CHEST_SHAPE[1], : CHEST_SHAPE[2]]
    hu = np.full(CHEST_SHAPE, -1000.0, np.float32)
    body = ((j - 80) / 70) ** 2 + ((i - 100) / 90) ** 2 < 1
    hu[np.broadcast_to(body, CHEST_SHAPE)] = 40.0
    for centre_i, present in zip((55, 145), lungs, strict=True):
        lung = ((k - 50) / 40) ** 2 + ((j - 80) / 50) ** 2 + ((i - centre_i) / 35) ** 2 < 1
        if present:
            hu[lung] = -850.0
    return hu


def _sphere(centre_kji: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    k, j, i = np.ogrid[: CHEST_SHAPE[0], : CHEST_SHAPE[1], : CHEST_SHAPE[2]]
    ck, cj, ci = centre_kji
    return ((k - ck) * 1.5) ** 2 + (j - cj) ** 2 + (i - ci) ** 2 < radius_mm**2


def _inside(box, mask: np.ndarray, margin_mm: float) -> bool:
    """Every voxel of ``mask`` is in ``box`` with ``margin_mm`` of context on every side."""
    (i0, j0, k0), (i1, j1, k1) = box
    k, j, i = np.nonzero(mask)
    return bool(
        i.min() - i0 >= margin_mm
        and i1 - 1 - i.max() >= margin_mm
        and j.min() - j0 >= margin_mm
        and j1 - 1 - j.max() >= margin_mm
        and (k.min() - k0) * 1.5 >= margin_mm
        and (k1 - 1 - k.max()) * 1.5 >= margin_mm
    )


def test_lung_box_is_the_lungs_plus_margin_not_the_body() -> None:
    box = lung_box(window(lungs_hu(), (-1000, 400)), PreprocessConfig(), LungCropConfig())
    assert box is not None
    (i0, j0, k0), (i1, j1, k1) = box
    # lungs: i 20..180, j 30..130, k 10..90; margin 10 mm = 10 voxels in-plane, 7 slices
    assert (i0, i1) == pytest.approx((10, 190), abs=3)
    assert (j0, j1) == pytest.approx((20, 140), abs=3)
    assert (k0, k1) == pytest.approx((3, 97), abs=3)


@pytest.mark.parametrize(
    ("centre_kji", "radius_mm"),
    [
        ((50, 80, 168), 12.0),  # against the lateral chest wall, at the lung's widest point
        ((50, 40, 145), 10.0),  # against the anterior wall
        ((50, 120, 55), 10.0),  # against the posterior wall
        ((82, 80, 55), 12.0),  # at the apex of the right lung
    ],
)
def test_lung_box_keeps_a_pleural_lesion_inside_with_context(
    centre_kji: tuple[float, float, float], radius_mm: float
) -> None:
    """A lesion attached to the pleura replaces lung air up to the chest wall: the box must still
    hold all of it and some wall around it."""
    hu = lungs_hu()
    lesion = _sphere(centre_kji, radius_mm) & (hu > -900)  # inside the body
    hu[lesion] = 30.0
    box = lung_box(window(hu, (-1000, 400)), PreprocessConfig(), LungCropConfig())
    assert box is not None and _inside(box, lesion, margin_mm=5.0)


def test_lung_box_covers_a_lung_without_air_by_symmetry() -> None:
    """A collapsed (or tumour-filled) left lung holds no air; the right lung's mirror covers it."""
    hu = lungs_hu(lungs=(True, False))
    tumour = _sphere((50, 80, 150), 25.0)
    hu[tumour] = 35.0
    box = lung_box(window(hu, (-1000, 400)), PreprocessConfig(), LungCropConfig())
    assert box is not None and _inside(box, tumour, margin_mm=5.0)


def test_lung_box_is_none_without_enclosed_air_or_when_the_body_reaches_the_sides() -> None:
    config, crop = PreprocessConfig(), LungCropConfig()
    no_lungs = lungs_hu(lungs=(False, False))
    assert lung_box(window(no_lungs, (-1000, 400)), config, crop) is None
    cut = lungs_hu()[:, :, 15:185]  # the field of view cuts the body at both sides
    assert lung_box(window(cut, (-1000, 400)), config, crop) is None


def test_lung_box_grows_to_one_window() -> None:
    box = lung_box(
        window(lungs_hu(), (-1000, 400)),
        PreprocessConfig(),
        LungCropConfig(margin_mm=0.0),
        min_size_kji=(96, 150, 195),
    )
    assert box is not None
    (i0, j0, k0), (i1, j1, k1) = box
    assert (k1 - k0, j1 - j0, i1 - i0) == (96, 150, 195)
    assert k0 >= 0 and k1 <= 100 and i0 >= 0 and i1 <= 200
