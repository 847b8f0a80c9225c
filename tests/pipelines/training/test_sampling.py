"""Where patches are cut: lesions drawn by lesion, not by voxel; background where inference runs."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.training.sampling import RandCropByLesiond
from pipelines.transforms import LungCropConfig, PreprocessConfig, lung_box

PREPROCESS = PreprocessConfig(target_spacing_mm=(1.0, 1.0, 1.0))
PATCH = (8, 8, 8)


def _sampler(
    pos_fraction: float, num_samples: int, hard_negative_fraction: float = 0.0, **kwargs: object
) -> RandCropByLesiond:
    sampler = RandCropByLesiond(
        ["image", "label", "position"],
        spatial_size=PATCH,
        num_samples=num_samples,
        pos_fraction=pos_fraction,
        preprocess=PREPROCESS,
        lung_crop=LungCropConfig(**kwargs),  # type: ignore[arg-type]
        hard_negative_fraction=hard_negative_fraction,
    )
    sampler.set_random_state(seed=0)
    return sampler


def _case(shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """A chest-like image in [0, 1]: air outside, a body block, two enclosed air 'lungs'.

    ``position`` holds each voxel's (k, j, i), so a crop's centre can be read back from it.
    """
    image = np.zeros(shape, np.float32)
    image[4:-4, 8:-8, 8:-8] = 0.7  # soft tissue, about -20 HU in the -1000..400 window
    image[8:-8, 16:-16, 14:38] = 0.1  # right lung, about -860 HU
    image[8:-8, 16:-16, -38:-14] = 0.1  # left lung
    position = np.stack(np.indices(shape), axis=0).astype(np.float32)
    return {
        "image": image[None],
        "label": np.zeros((1, *shape), np.float32),
        "position": position,
    }


def _centre(crop: dict[str, np.ndarray]) -> np.ndarray:
    return np.asarray(crop["position"]).reshape(3, -1).mean(axis=1)


def test_each_lesion_is_drawn_as_often_whatever_its_size() -> None:
    case = _case((48, 96, 120))
    case["label"][0, 10:30, 20:40, 20:40] = 1  # 8,000 voxels
    case["label"][0, 40, 70, 90] = 2  # one voxel
    crops = _sampler(pos_fraction=1.0, num_samples=400)(case)
    small = np.mean([bool((np.asarray(c["label"]) == 2).any()) for c in crops])
    large = np.mean([bool((np.asarray(c["label"]) == 1).any()) for c in crops])
    # drawn by voxel (MONAI's RandCropByPosNegLabeld) the one-voxel lesion would be 1 in 8,001
    assert 0.4 < small < 0.6
    assert 0.4 < large < 0.6
    assert all(np.asarray(c["label"]).any() for c in crops)


def test_a_plain_mask_is_drawn_by_connected_lesion_not_by_voxel() -> None:
    case = _case((48, 96, 120))
    case["label"][0, 10:30, 20:40, 20:40] = 1  # 8,000 voxels
    case["label"][0, 40, 70, 90] = 1  # one voxel, same value: a 0/1 mask
    crops = _sampler(pos_fraction=1.0, num_samples=400)(case)
    centres = np.array([_centre(c) for c in crops])
    on_small = np.mean(centres[:, 2] > 60)  # the big lesion spans i 20-39, the small one i 90
    # drawn by voxel the one-voxel lesion would be 1 in 8,001
    assert 0.4 < on_small < 0.6
    assert all(np.asarray(c["label"]).any() for c in crops)


def test_background_patches_are_centred_inside_the_box_inference_covers() -> None:
    case = _case((48, 96, 120))
    box = lung_box(case["image"][0], PREPROCESS, LungCropConfig())
    assert box is not None
    start_kji, stop_kji = np.asarray(box[0][::-1]), np.asarray(box[1][::-1])
    assert (stop_kji - start_kji < (48, 96, 120)).any()  # the box is smaller than the image
    crops = _sampler(pos_fraction=0.0, num_samples=200)(case)
    centres = np.array([_centre(c) for c in crops])
    half = np.asarray(PATCH) // 2
    assert (centres >= start_kji - half).all() and (centres <= stop_kji + half).all()
    assert all(c["image"].shape == (1, *PATCH) for c in crops)


def test_without_the_lung_crop_background_spans_the_whole_image() -> None:
    case = _case((48, 96, 120))
    crops = _sampler(pos_fraction=0.0, num_samples=300, enabled=False)(case)
    centres = np.array([_centre(c) for c in crops])
    assert centres[:, 2].min() < 8 and centres[:, 2].max() > 120 - 8


def test_background_centres_avoid_lesions_and_a_case_without_lesions_gives_background() -> None:
    case = _case((48, 96, 120))
    crops = _sampler(pos_fraction=1.0, num_samples=20)(case)
    assert not any(np.asarray(c["label"]).any() for c in crops)
    case["label"][0, :, 16:-16, 14:38] = 3  # a lesion filling the right lung
    crops = _sampler(pos_fraction=0.0, num_samples=100)(case)
    labels_at_centre = [
        np.asarray(c["label"])[0, PATCH[0] // 2, PATCH[1] // 2, PATCH[2] // 2] for c in crops
    ]
    assert np.mean(np.asarray(labels_at_centre) == 0) > 0.95


def test_an_image_smaller_than_the_patch_is_refused() -> None:
    case = _case((48, 96, 120))
    small = {key: value[:, :4] for key, value in case.items()}
    with pytest.raises(ValueError, match="smaller than the patch"):
        _sampler(pos_fraction=0.5, num_samples=2)(small)


def _vessel(case: dict[str, np.ndarray]) -> None:
    """A soft-tissue rod (a vessel) through the middle of the right lung, along k."""
    case["image"][0, 8:-8, 46:50, 24:28] = 0.75


def _touches_air(image: np.ndarray, centre: np.ndarray) -> bool:
    """Whether the voxel a crop was centred on (its mean position + 0.5: an even patch) is soft
    tissue with air within 4 voxels."""
    k, j, i = (int(v + 0.5) for v in centre)
    around = image[max(k - 4, 0) : k + 5, max(j - 4, 0) : j + 5, max(i - 4, 0) : i + 5]
    return bool(image[k, j, i] > 0.5 and (around < 0.3).any())


def test_hard_negatives_are_centred_on_tissue_touching_lung_air() -> None:
    case = _case((48, 96, 120))
    _vessel(case)
    crops = _sampler(pos_fraction=0.0, num_samples=1000, hard_negative_fraction=1.0)(case)
    centres = np.array([_centre(c) for c in crops])
    assert all(_touches_air(case["image"][0], c) for c in centres)
    on_vessel = (np.abs(centres[:, 1] - 47) <= 3) & (np.abs(centres[:, 2] - 25) <= 3)
    assert on_vessel.any()  # the vessel, not only the lungs' walls
    uniform = np.array([_centre(c) for c in _sampler(0.0, 200)(case)])
    assert np.mean([_touches_air(case["image"][0], c) for c in uniform]) < 0.5


def test_hard_negatives_avoid_lesions_and_fall_back_without_lung_air() -> None:
    case = _case((48, 96, 120))
    _vessel(case)
    case["label"][0, 8:-8, 46:50, 24:28] = 1  # the rod is a lesion now, not a look-alike
    crops = _sampler(pos_fraction=0.0, num_samples=100, hard_negative_fraction=1.0)(case)
    assert not any(np.asarray(c["label"])[0, 4, 4, 4] for c in crops)
    solid = _case((48, 96, 120))
    solid["image"][0] = 0.7  # no air anywhere: no hard negative to draw, plain background
    crops = _sampler(0.0, 20, hard_negative_fraction=1.0, enabled=False)(solid)
    assert len(crops) == 20
    assert len({tuple(_centre(c)) for c in crops}) > 10  # drawn across the image, not one spot


def test_fractions_outside_zero_one_are_refused() -> None:
    with pytest.raises(ValueError, match="hard_negative_fraction"):
        _sampler(pos_fraction=0.5, num_samples=2, hard_negative_fraction=1.5)


def test_mined_false_positives_are_drawn_and_not_passed_on() -> None:
    from pipelines.training.mining import MINED_KEY

    case = _case((48, 96, 120))
    case[MINED_KEY] = np.array([[20, 40, 30], [30, 60, 90]])
    sampler = RandCropByLesiond(
        ["image", "label", "position"],
        spatial_size=PATCH,
        num_samples=200,
        pos_fraction=0.0,
        preprocess=PREPROCESS,
        lung_crop=LungCropConfig(),
        mined_fraction=0.5,
    )
    sampler.set_random_state(seed=0)
    crops = sampler(case)
    centres = np.array([_centre(c) for c in crops]) + 0.5  # an even patch centres half a voxel off
    on_mined = [any(np.allclose(c, m) for m in case[MINED_KEY].astype(float)) for c in centres]
    assert 0.4 < np.mean(on_mined) < 0.6
    assert all(MINED_KEY not in crop for crop in crops)
