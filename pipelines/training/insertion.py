"""Synthetic lesions painted into training patches as they are drawn: lesions without limit.

About a hundred real lesions cannot teach a network what a 4 mm nodule beside a vessel looks like;
every patch that passes through :class:`RandInsertLesionsd` may carry new ones, each drawn afresh
with an exact mask, so a run sees about as many distinct lesions as it draws patches. A lesion is
the synthetic generator's own model (:func:`pipelines.synth.lesions.build_model`: spherical,
ellipsoidal, lobulated or spiculated outlines; solid, part-solid or ground-glass density), with
appearance drawn wider than the generator's so the network learns nodules, not its spheres:
density, a smooth random perturbation of the outline (irregular margins), a smooth density
texture and the in-plane blur of the reconstruction kernel.

Placement reads the patch itself: the lung is its air closed over vessels; a lesion goes deep in
the lung, against a vessel (touching it) or against the pleura (a half-blob on the chest wall or
mediastinum), and is clipped to the lung as the generator clips its own.

Painting keeps what the scanner put there. The lesion adds ``max(lesion - local mean, 0)`` to the
patch, so the patch's own noise, at that study's level, runs through the lesion, and a vessel
brighter than ground glass stays visible through it. Partial volume follows the case's slice
thickness: the outline's occupancy is averaged over the slice profile (the thickness, at least the
cached slice step), so a 4 mm nodule in a 3 mm study is as faint as the generator would make it.
The label takes the voxels whose centre lies inside the outline and in the lung, as the
generator's ground truth does, and never overwrites a real lesion.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from monai.transforms import MapTransform, Randomizable
from monai.utils import convert_to_dst_type, convert_to_numpy
from scipy import ndimage

from pipelines.bundle import InsertionConfig
from pipelines.synth.config import Attachment
from pipelines.synth.lesions import LesionModel, build_model, lesion_hu
from pipelines.synth.protocol import LesionPlan
from pipelines.transforms import PreprocessConfig

#: the key :class:`RandInsertLesionsd` writes the number of lesions it painted into
INSERTED_KEY = "inserted_lesions"
#: the key holding the source slice thickness (mm) of the case a patch comes from, if known
THICKNESS_KEY = "slice_thickness_mm"

_AIR_HU = -400.0  # lung parenchyma is below, soft tissue above
_VESSEL_HU = -300.0  # inside the lung and above this: vessel, airway wall or lesion
_CLOSING_VOXELS = 3  # fills vessels up to about 6 voxels across into the lung mask
_MIN_LUNG_VOXELS = 500
_PLACEMENT_TRIES = 8
_PROFILE_SAMPLES = 5  # samples across the slice profile for partial volume
_BACKGROUND_SIGMA_VOXELS = 1.5  # the local mean the lesion is added over


class PatchLungs:
    """The lung of one patch, read off its intensities once for every lesion placed in it.

    ``lung``: air closed over vessels (a box closing, which fills vessels up to about six
    voxels across), so a lesion may cover a vessel as the generator's does; ``depth_mm``: the
    distance to the nearest non-lung voxel, on a grid twice as coarse (placement needs no more);
    ``vessel``: soft tissue inside the lung.
    """

    def __init__(self, image_kji: np.ndarray, preprocess: PreprocessConfig) -> None:
        low, high = preprocess.window_hu
        spacing_kji = np.asarray(preprocess.target_spacing_mm[::-1], float)
        air = image_kji < (_AIR_HU - low) / (high - low)
        size = 2 * _CLOSING_VOXELS + 1
        grown = ndimage.maximum_filter(air, size=size)
        self.lung = ndimage.minimum_filter(grown, size=size, mode="nearest") | air
        self.usable = int(np.count_nonzero(self.lung)) >= _MIN_LUNG_VOXELS
        self.depth_mm = np.zeros(image_kji.shape, np.float32)
        if self.usable:
            coarse = ndimage.distance_transform_edt(
                self.lung[::2, ::2, ::2], sampling=2 * spacing_kji
            )
            fine = coarse.repeat(2, 0).repeat(2, 1).repeat(2, 2)
            self.depth_mm = fine[tuple(slice(0, n) for n in image_kji.shape)] * self.lung
        self.vessel = self.lung & (image_kji > (_VESSEL_HU - low) / (high - low))
        self.spacing_kji = spacing_kji


def draw_plan(config: InsertionConfig, rng: np.random.Generator) -> LesionPlan:
    """Type, shape, diameter (skewed small) and attachment of one lesion."""
    low, high = config.diameter_mm
    split = min(max(config.small_below_mm, low), high)
    small = rng.uniform() < config.small_fraction
    lo, hi = (low, split) if small else (split, high)
    diameter = math.exp(rng.uniform(math.log(lo), math.log(hi))) if hi > lo else lo
    return LesionPlan(
        type=_choice(rng, config.type_weights),
        shape=_choice(rng, config.shape_weights),
        diameter_mm=float(diameter),
        attachment=_choice(rng, config.attachment_weights),
    )


def _choice(rng: np.random.Generator, weights: Mapping[Any, float]) -> Any:
    keys = sorted(weights, key=str)
    p = np.array([weights[k] for k in keys], float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _centre_kji(plan: LesionPlan, lungs: PatchLungs, rng: np.random.Generator) -> np.ndarray | None:
    """A centre (voxel units, off the voxel grid) for ``plan`` in the patch's lung, the whole
    lesion inside the patch; None when it has no room."""
    r = plan.diameter_mm / 2
    depth = lungs.depth_mm
    shape: np.ndarray = np.asarray(depth.shape)
    margin = np.ceil(r / lungs.spacing_kji).astype(int)
    if np.any(2 * margin >= shape):
        return None
    if plan.attachment == Attachment.VESSEL:
        cells = np.argwhere(lungs.vessel)
    elif plan.attachment == Attachment.PLEURA:
        cells = np.argwhere((depth >= 0.4 * r) & (depth <= max(r, 1.5)))
    else:
        cells = np.argwhere(depth >= r + 2.0)
    cells = cells[np.all((cells >= margin) & (cells < shape - margin), axis=1)]
    if len(cells) == 0:
        return None
    centre = cells[int(rng.integers(len(cells)))] + rng.uniform(-0.5, 0.5, 3)
    if plan.attachment == Attachment.VESSEL:
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        centre = centre + (0.8 * r + 0.5) * direction / lungs.spacing_kji
        voxel = np.rint(centre).astype(int)
        if (
            np.any(voxel < margin)
            or np.any(voxel >= shape - margin)
            or not lungs.lung[tuple(voxel)]
        ):
            return None
    return centre


def _smooth_field(shape: tuple[int, ...], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random field of unit standard deviation (0 where it cannot be normalised)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    sd = float(field.std())
    return field / sd if sd > 0 else field * 0


def paint_one(
    image_kji: np.ndarray,
    label_kji: np.ndarray,
    lungs: PatchLungs,
    config: InsertionConfig,
    preprocess: PreprocessConfig,
    rng: np.random.Generator,
    slice_thickness_mm: float | None = None,
) -> LesionPlan | None:
    """Place, paint and label one lesion in place; its plan, or None when it found no room.

    ``image_kji`` holds the network input (windowed to ``[0, 1]``), ``label_kji`` lesion
    instance numbers; the new lesion takes the next free number.
    """
    plan = draw_plan(config, rng)
    for _ in range(_PLACEMENT_TRIES):
        centre = _centre_kji(plan, lungs, rng)
        if centre is None:
            return None
        context = _Context(lungs, config, preprocess, slice_thickness_mm)
        if _paint_at(image_kji, label_kji, context, plan, centre, rng):
            return plan
    return None


@dataclass(frozen=True)
class _Context:
    """What every lesion of one patch is painted with."""

    lungs: PatchLungs
    config: InsertionConfig
    preprocess: PreprocessConfig
    slice_thickness_mm: float | None


def _paint_at(
    image_kji: np.ndarray,
    label_kji: np.ndarray,
    context: _Context,
    plan: LesionPlan,
    centre_kji: np.ndarray,
    rng: np.random.Generator,
) -> bool:
    """Paint ``plan`` centred on ``centre_kji``; False (nothing changed) if it would touch a
    lesion already there or cover no lung voxel."""
    lungs, config = context.lungs, context.config
    spacing = lungs.spacing_kji
    r = plan.diameter_mm / 2
    half = np.ceil((1.6 * r + 3.0) / spacing).astype(int)
    nearest = np.rint(centre_kji).astype(int)
    start = np.maximum(nearest - half, 0)
    stop = np.minimum(nearest + half + 1, np.asarray(image_kji.shape))
    box = tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))
    axes = [
        np.arange(a, b, dtype=np.float32) * s for a, b, s in zip(start, stop, spacing, strict=True)
    ]
    z, y, x = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    centre_mm = (centre_kji * spacing)[::-1].astype(float)  # x, y, z
    model = _appearance(build_model(plan, centre_mm, rng), config, rng)
    shape = tuple(int(b - a) for a, b in zip(start, stop, strict=True))
    margin = _smooth_field(shape, max(1.0, r / 3.0), rng) * (
        config.margin_irregularity * rng.uniform() * r
    )
    sd = model.signed_distance_mm(x, y, z) + margin
    in_lung = lungs.lung[box]
    inside = (sd >= 0) & in_lung
    if not inside.any() or np.any(label_kji[box][sd >= -1.0]):
        return False
    inside[tuple(nearest - start)] = bool(in_lung[tuple(nearest - start)])  # never an empty mask
    occupancy = _partial_volume(model, (x, y, z), margin, spacing, context.slice_thickness_mm)
    occupancy *= in_lung
    hu = lesion_hu(model, sd) + _smooth_field(shape, 1.0, rng) * rng.uniform(0, config.texture_hu)
    low, high = context.preprocess.window_hu
    value = (np.asarray(hu, np.float32) - low) / (high - low)
    patch = image_kji[box]
    local = ndimage.gaussian_filter(patch.astype(np.float32), _BACKGROUND_SIGMA_VOXELS)
    added = occupancy * np.maximum(value - local, 0)
    kernel_mm = rng.uniform(*config.kernel_sigma_mm)
    added = ndimage.gaussian_filter(added, (0.3, kernel_mm / spacing[1], kernel_mm / spacing[2]))
    image_kji[box] = np.clip(patch + added, 0.0, 1.0)
    labels = label_kji[box]
    labels[inside] = int(label_kji.max()) + 1 if label_kji.size else 1
    return True


def _appearance(
    model: LesionModel, config: InsertionConfig, rng: np.random.Generator
) -> LesionModel:
    """The model with densities drawn from the insertion's (wider) ranges."""
    return replace(
        model,
        solid_hu=float(rng.uniform(*config.solid_hu)),
        ggo_hu=float(rng.uniform(*config.ground_glass_hu)),
    )


def _partial_volume(
    model: LesionModel,
    xyz: tuple[np.ndarray, np.ndarray, np.ndarray],
    margin: np.ndarray,
    spacing_kji: np.ndarray,
    slice_thickness_mm: float | None,
) -> np.ndarray:
    """Occupancy of each voxel: the outline's one-pixel fade, averaged over the slice profile."""
    x, y, z = xyz
    profile_mm = max(slice_thickness_mm or 0.0, float(spacing_kji[0]))
    fade_mm = float(spacing_kji[1])
    total = np.zeros(margin.shape, np.float32)
    for offset in np.linspace(-0.4, 0.4, _PROFILE_SAMPLES) * profile_mm:
        sd = model.signed_distance_mm(x, y, z + np.float32(offset)) + margin
        total += np.clip(sd / fade_mm + 0.5, 0.0, 1.0)
    return total / _PROFILE_SAMPLES


def insert_lesions(
    image_kji: np.ndarray,
    label_kji: np.ndarray,
    count: int,
    config: InsertionConfig,
    preprocess: PreprocessConfig,
    rng: np.random.Generator,
    slice_thickness_mm: float | None = None,
) -> list[LesionPlan]:
    """Paint up to ``count`` lesions into a patch in place; the plans of those painted."""
    lungs = PatchLungs(image_kji, preprocess)
    if not lungs.usable:
        return []
    painted = []
    for _ in range(count):
        plan = paint_one(image_kji, label_kji, lungs, config, preprocess, rng, slice_thickness_mm)
        if plan is not None:
            painted.append(plan)
    return painted


class RandInsertLesionsd(Randomizable, MapTransform):
    """With probability ``config.probability``, paint 1 to ``config.max_per_patch`` lesions into
    ``"image"`` and label them in ``"label"`` (both ``[1, k, j, i]``, label instance numbers);
    records how many were painted under :data:`INSERTED_KEY` (0 when none)."""

    def __init__(self, config: InsertionConfig, preprocess: PreprocessConfig) -> None:
        MapTransform.__init__(self, ["image", "label"])
        self.config = config
        self.preprocess = preprocess

    def randomize(self, data: Any = None) -> None:
        """Unused: the draws are made in :meth:`__call__` from ``self.R``."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        out[INSERTED_KEY] = 0
        if self.config.probability <= 0 or self.R.random_sample() >= self.config.probability:
            return out
        rng = np.random.default_rng(int(self.R.randint(2**31 - 1)))
        count = 1 + int(rng.integers(self.config.max_per_patch))
        image = np.array(convert_to_numpy(data["image"]), dtype=np.float32, copy=True)
        label = np.array(convert_to_numpy(data["label"]), copy=True)
        thickness = data.get(THICKNESS_KEY)
        source_mm = float(thickness) if thickness is not None and thickness > 0 else None
        painted = insert_lesions(
            image[0], label[0], count, self.config, self.preprocess, rng, source_mm
        )
        out["image"] = convert_to_dst_type(image, data["image"])[0]
        out["label"] = convert_to_dst_type(label, data["label"])[0]
        out[INSERTED_KEY] = len(painted)
        return out
