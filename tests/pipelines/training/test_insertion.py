"""Synthetic lesions painted into training patches: where they go, how they look, their masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from pipelines.bundle import InsertionConfig
from pipelines.datasets.manifest import LesionType
from pipelines.synth.config import Attachment, LesionShape
from pipelines.training.insertion import (
    INSERTED_KEY,
    THICKNESS_KEY,
    PatchLungs,
    RandInsertLesionsd,
    draw_plan,
    insert_lesions,
)
from pipelines.transforms import PreprocessConfig

PREPROCESS = PreprocessConfig()  # 1.0 x 1.0 x 1.5 mm, window -1000..400 HU
LOW, HIGH = PREPROCESS.window_hu
SHAPE = (48, 64, 64)  # k, j, i: 72 x 64 x 64 mm


def _window(hu: float | np.ndarray) -> np.ndarray:
    return (np.asarray(hu, np.float32) - LOW) / (HIGH - LOW)


def _patch(noise_hu: float = 20.0, seed: int = 0) -> np.ndarray:
    """Chest wall on the left (i < 12), lung elsewhere, a 4 mm vessel along k, scanner noise."""
    rng = np.random.default_rng(seed)
    hu = np.full(SHAPE, -850.0, np.float32)
    hu[:, :, :12] = 40.0  # chest wall
    j, i = np.ogrid[: SHAPE[1], : SHAPE[2]]
    hu[:, (j - 32) ** 2 + (i - 44) ** 2 <= 4] = 40.0  # vessel of radius 2 mm
    hu += rng.normal(0, noise_hu, SHAPE).astype(np.float32)
    return np.clip(_window(hu), 0, 1)


def _config(**changes: object) -> InsertionConfig:
    base = {"probability": 1.0, "margin_irregularity": 0.0, "texture_hu": 0.0}
    return InsertionConfig.model_validate(base | changes)


def _one(plan_overrides: dict[str, object], seed: int = 0, thickness: float | None = None):
    image = _patch()
    before = image.copy()
    label = np.zeros(SHAPE, np.int16)
    rng = np.random.default_rng(seed)
    painted = insert_lesions(
        image, label, 1, _config(**plan_overrides), PREPROCESS, rng, slice_thickness_mm=thickness
    )
    return before, image, label, painted


def test_a_lesion_is_painted_into_the_lung_with_its_mask() -> None:
    before, image, label, painted = _one({"attachment_weights": {Attachment.NONE: 1.0}})
    assert len(painted) == 1
    mask = label == 1
    assert mask.sum() > 0
    lungs = PatchLungs(before, PREPROCESS)
    assert np.all(lungs.lung[mask])  # never outside the lung
    changed = np.abs(image - before) > 1e-6
    grown = ndimage.binary_dilation(mask, iterations=6)
    assert changed.any() and not np.any(changed & ~grown)  # only around the lesion
    assert image.min() >= 0 and image.max() <= 1
    assert image[mask].mean() > before[mask].mean() + 0.05  # denser than lung, even ground glass


def test_a_spherical_mask_has_the_volume_of_its_diameter() -> None:
    volumes = []
    for seed in range(6):
        _, _, label, painted = _one(
            {
                "attachment_weights": {Attachment.NONE: 1.0},
                "shape_weights": {LesionShape.SPHERICAL: 1.0},
                "diameter_mm": (12.0, 12.0),
            },
            seed=seed,
        )
        assert painted and painted[0].diameter_mm == 12.0
        volumes.append((label == 1).sum() * 1.0 * 1.0 * 1.5)
    expected = math.pi / 6 * 12.0**3
    assert abs(np.mean(volumes) / expected - 1) < 0.1


def test_the_scanner_noise_runs_through_the_lesion() -> None:
    config = {
        "attachment_weights": {Attachment.NONE: 1.0},
        "shape_weights": {LesionShape.SPHERICAL: 1.0},
        "type_weights": {LesionType.SOLID: 1.0},
        "diameter_mm": (16.0, 16.0),
        "kernel_sigma_mm": (0.2, 0.2),
    }
    before, image, label, _ = _one(config)
    core = ndimage.binary_erosion(label == 1, iterations=3)
    lung = (before < _window(-600)) & (label == 0)
    # a lesion painted as a constant would have no texture left: the background's noise stays
    assert image[core].std() > 0.6 * before[lung].std()


def test_a_real_lesion_is_never_overwritten() -> None:
    image = _patch()
    label = np.zeros(SHAPE, np.int16)
    label[10:40, 10:60, 14:60] = 7  # most of the lung is a real lesion
    kept = label.copy()
    config = _config(attachment_weights={Attachment.NONE: 1.0}, diameter_mm=(3.0, 6.0))
    insert_lesions(image, label, 4, config, PREPROCESS, np.random.default_rng(1))
    assert np.array_equal(label[kept == 7], kept[kept == 7])
    new = label[(label != 0) & (label != 7)]
    assert set(np.unique(new)) <= {8, 9, 10, 11}


def test_lesions_against_a_vessel_touch_it_and_against_the_pleura_touch_the_wall() -> None:
    touching = {Attachment.VESSEL: 0, Attachment.PLEURA: 0}
    for attachment in touching:
        for seed in range(5):
            before, _, label, painted = _one(
                {"attachment_weights": {attachment: 1.0}, "diameter_mm": (4.0, 8.0)}, seed=seed
            )
            if not painted:
                continue
            grown = ndimage.binary_dilation(label == 1, iterations=2)
            tissue = before > _window(-300)
            wall = np.zeros(SHAPE, bool)
            wall[:, :, :14] = True
            target = tissue & ~wall if attachment == Attachment.VESSEL else tissue & wall
            touching[attachment] += bool(np.any(grown & target))
    assert touching[Attachment.VESSEL] >= 4
    assert touching[Attachment.PLEURA] >= 4


def test_thick_slices_make_a_small_nodule_fainter() -> None:
    config = {
        "attachment_weights": {Attachment.NONE: 1.0},
        "shape_weights": {LesionShape.SPHERICAL: 1.0},
        "type_weights": {LesionType.SOLID: 1.0},
        "diameter_mm": (3.0, 3.0),
    }
    peaks = {}
    for thickness in (0.8, 3.0):
        runs = [_one(config, seed=seed, thickness=thickness) for seed in range(8)]
        peaks[thickness] = np.mean([float((image - before).max()) for before, image, _, _ in runs])
    assert peaks[3.0] < 0.92 * peaks[0.8]


def test_diameters_are_skewed_towards_small_nodules() -> None:
    config = InsertionConfig(probability=1.0)
    rng = np.random.default_rng(0)
    diameters = np.array([draw_plan(config, rng).diameter_mm for _ in range(4000)])
    assert diameters.min() >= 3.0 and diameters.max() <= 30.0
    assert 0.66 < np.mean(diameters < 10.0) < 0.74
    assert 0.2 < np.mean(diameters < 5.0) < 0.4


def test_a_patch_without_lung_gets_nothing() -> None:
    image = np.full(SHAPE, _window(40.0), np.float32)
    label = np.zeros(SHAPE, np.int16)
    painted = insert_lesions(image, label, 2, _config(), PREPROCESS, np.random.default_rng(0))
    assert painted == [] and not label.any()


def _item() -> dict[str, object]:
    return {
        "image": _patch()[None],
        "label": np.zeros((1, *SHAPE), np.float32),
        THICKNESS_KEY: 1.25,
    }


def test_the_transform_is_reproducible_and_counts_what_it_painted() -> None:
    transform = RandInsertLesionsd(_config(max_per_patch=3), PREPROCESS)
    outs = []
    for _ in range(2):
        transform.set_random_state(seed=5)
        outs.append(transform(_item()))
    assert np.array_equal(outs[0]["image"], outs[1]["image"])
    count = outs[0][INSERTED_KEY]
    assert 1 <= count <= 3
    assert len(np.unique(outs[0]["label"])) == count + 1


def test_probability_zero_leaves_the_patch_alone() -> None:
    transform = RandInsertLesionsd(InsertionConfig(probability=0.0), PREPROCESS)
    transform.set_random_state(seed=0)
    item = _item()
    out = transform(item)
    assert out[INSERTED_KEY] == 0
    assert out["image"] is item["image"]


@pytest.mark.parametrize("field", ["diameter_mm", "solid_hu", "kernel_sigma_mm"])
def test_a_reversed_range_is_refused(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        InsertionConfig.model_validate({field: (5.0, 1.0)})
