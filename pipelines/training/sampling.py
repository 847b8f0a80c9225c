"""Where patches are cut: each lesion as likely as any other, background where inference runs.

MONAI's ``RandCropByPosNegLabeld`` centres a positive patch on a foreground voxel drawn
uniformly, so a lesion's share of positive patches grows with its volume: a 30 mm nodule has
1,000 times the voxels of a 3 mm one, and with the synthetic generator's log-uniform sizes the
nodules under 10 mm (half of them) were almost never the centre of a patch. The reference model
trained that way found none of them. :class:`RandCropByLesiond` first draws a lesion uniformly
(lesions are the label's instance numbers, as ``basira prepare`` writes them), then a voxel of it.

Background patches are centred on a non-lesion voxel inside the box that inference covers
(:func:`~pipelines.transforms.lung_box` with the bundle's ``inference.lung_crop``): windows outside
it are never run in production, so patches of outside air or abdomen teach nothing that is used.
A ``hard_negative_fraction`` share of them is centred instead on *soft tissue touching lung air*:
vessels, the hila, the pleura and fissures, the look-alikes behind the false positives. Drawn
uniformly in the box, those patches were too rare: after 30 epochs a model drawn that way still
called thick hilar vessels nodules with a score of 1.0 in every study (study AUC 0.48).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from monai.transforms import MapTransform, Randomizable
from scipy import ndimage

from pipelines.training.mining import MINED_KEY
from pipelines.transforms import LungCropConfig, PreprocessConfig, lung_box

_DRAWS_PER_BACKGROUND = 32
#: soft tissue: above this is vessel, wall or lesion density (lung parenchyma is about -850 HU)
_TISSUE_HU = -300.0
#: "touching lung air": within this many voxels of the coarse (every second voxel) grid
_TOUCH_COARSE_VOXELS = 2


#: the key of a training item holding its case's precomputed :class:`CaseSampling`
SAMPLING_KEY = "case_sampling"


@dataclass(frozen=True)
class CaseSampling:
    """Where one case's patches may be centred: each lesion's voxels, the background box
    (start, stop ``(k, j, i)``) and the hard-negative candidates ``[n, 3]``."""

    lesion_voxels: list[np.ndarray]
    background: tuple[np.ndarray, np.ndarray]
    hard: np.ndarray


class RandCropByLesiond(Randomizable, MapTransform):
    """``num_samples`` crops of ``spatial_size`` of the ``keys`` of a dict (each ``[c, k, j, i]``).

    Each crop is centred on a lesion with probability ``pos_fraction`` (a lesion drawn uniformly
    among the label's nonzero values, or its connected components when it is a plain mask, then
    one of its voxels), otherwise on background: with probability ``mined_fraction`` on one of the
    case's mined false positives (``data[MINED_KEY]``, ``[n, 3]``, when it has any; the key is not
    passed on to the crops), else with probability ``hard_negative_fraction`` on soft tissue
    touching lung air, else on a voxel with label 0 inside the lung box of the image (the whole
    image when no box is found or the crop is off).
    A case without lesions gives background crops only. Crops are shifted to lie inside the
    image, which must be at least ``spatial_size`` (pad it first). The draws read ``"label"``
    (instance numbers) and ``"image"`` (network input in ``[0, 1]``). Returns a list of dicts
    with the same keys; the label keeps its instance numbers.
    """

    def __init__(  # noqa: PLR0913 -- keyword-only shares of each kind of centre
        self,
        keys: Sequence[Hashable],
        *,
        spatial_size: Sequence[int],
        num_samples: int,
        pos_fraction: float,
        preprocess: PreprocessConfig,
        lung_crop: LungCropConfig,
        hard_negative_fraction: float = 0.0,
        mined_fraction: float = 0.0,
    ) -> None:
        MapTransform.__init__(self, keys)
        for name, value in (
            ("pos_fraction", pos_fraction),
            ("hard_negative_fraction", hard_negative_fraction),
            ("mined_fraction", mined_fraction),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.spatial_size = tuple(int(s) for s in spatial_size)
        self.num_samples = num_samples
        self.pos_fraction = pos_fraction
        self.hard_negative_fraction = hard_negative_fraction
        self.mined_fraction = mined_fraction
        self.preprocess = preprocess
        self.lung_crop = lung_crop

    def randomize(self, data: Any = None) -> None:
        """Unused: the draws depend on the case, so :meth:`__call__` makes them from ``self.R``."""

    def where(self, image: np.ndarray, label: np.ndarray) -> CaseSampling:
        """What the draws of one case read off its whole volume (``[k, j, i]`` arrays): a pure
        function of the case, so the training dataset computes it once per case and hands it in
        under :data:`SAMPLING_KEY` instead of every epoch paying for it again."""
        background = self._background_box(image)
        hard = (
            self._tissue_touching_air(image, label, background)
            if self.hard_negative_fraction > 0
            else np.zeros((0, 3), np.int64)
        )
        return CaseSampling(_voxels_by_lesion(label), background, hard)

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        label = np.asarray(data["label"])[0]
        shape = label.shape
        if any(s < p for s, p in zip(shape, self.spatial_size, strict=True)):
            raise ValueError(f"image {shape} is smaller than the patch {self.spatial_size}")
        image = np.asarray(data["image"])[0]
        known = data.get(SAMPLING_KEY)
        sampling = known if isinstance(known, CaseSampling) else self.where(image, label)
        lesion_voxels, background, hard = sampling.lesion_voxels, sampling.background, sampling.hard
        mined = np.asarray(data.get(MINED_KEY, np.zeros((0, 3), int))).reshape(-1, 3)
        crops = []
        for _ in range(self.num_samples):
            if lesion_voxels and self.R.random_sample() < self.pos_fraction:
                voxels = lesion_voxels[int(self.R.randint(len(lesion_voxels)))]
                centre = voxels[int(self.R.randint(len(voxels)))]
            elif (
                self.mined_fraction > 0
                and len(mined)
                and (self.R.random_sample() < self.mined_fraction)
            ):
                centre = mined[int(self.R.randint(len(mined)))]
            elif self.hard_negative_fraction > 0 and (
                self.R.random_sample() < self.hard_negative_fraction
            ):
                centre = self._hard_centre(hard, label, background)
            else:
                centre = self._background_centre(label, background)
            crops.append(self._crop(data, centre, shape))
        return crops

    def _background_box(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(start_kji, stop_kji)`` of where background centres are drawn."""
        box = lung_box(image, self.preprocess, self.lung_crop) if self.lung_crop.enabled else None
        if box is None:
            return np.zeros(3, int), np.asarray(image.shape)
        start_ijk, stop_ijk = box
        return np.asarray(start_ijk[::-1]), np.asarray(stop_ijk[::-1])

    def _background_centre(
        self, label: np.ndarray, box: tuple[np.ndarray, np.ndarray]
    ) -> np.ndarray:
        """A uniform voxel of ``box`` with label 0 (the last draw if every draw hit a lesion)."""
        start, stop = box
        centre = start
        for _ in range(_DRAWS_PER_BACKGROUND):
            centre = self.R.randint(start, stop)
            if label[tuple(centre)] == 0:
                break
        return np.asarray(centre)

    def _tissue_touching_air(
        self, image: np.ndarray, label: np.ndarray, box: tuple[np.ndarray, np.ndarray]
    ) -> np.ndarray:
        """``[n, 3]`` (k, j, i) centres on every second voxel of ``box``: soft tissue within a
        few millimetres of air, not lesion (vessels, hila, pleura, fissures)."""
        start, stop = box
        window = tuple(slice(int(a), int(b), 2) for a, b in zip(start, stop, strict=True))
        coarse = image[window]
        low, high = self.preprocess.window_hu
        air = coarse < (self.lung_crop.air_threshold_hu - low) / (high - low)
        tissue = coarse > (_TISSUE_HU - low) / (high - low)
        near_air = ndimage.binary_dilation(air, iterations=_TOUCH_COARSE_VOXELS)
        found = np.argwhere(tissue & near_air & (label[window] == 0))
        return found * 2 + start

    def _hard_centre(
        self, hard: np.ndarray, label: np.ndarray, box: tuple[np.ndarray, np.ndarray]
    ) -> np.ndarray:
        """A uniform hard-negative centre, or a plain background one when the case has none."""
        if len(hard) == 0:
            return self._background_centre(label, box)
        return np.asarray(hard[int(self.R.randint(len(hard)))])

    def _crop(
        self, data: Mapping[Hashable, Any], centre: np.ndarray, shape: tuple[int, ...]
    ) -> dict[Hashable, Any]:
        size = np.asarray(self.spatial_size)
        start = np.clip(np.asarray(centre) - size // 2, 0, np.asarray(shape) - size)
        spans = (slice(int(a), int(a + s)) for a, s in zip(start, size, strict=True))
        window = (slice(None), *spans)
        crop = {key: value for key, value in data.items() if key not in (MINED_KEY, SAMPLING_KEY)}
        for key in self.key_iterator(crop):
            crop[key] = np.asarray(data[key][window], dtype=np.float32)
        return crop


def _voxels_by_lesion(label: np.ndarray) -> list[np.ndarray]:
    """The ``(k, j, i)`` voxels of each lesion, as ``[n, 3]`` arrays.

    Lesions are the label's instance numbers. A label holding one value for every lesion (a
    plain mask, as a segmentation-derived dataset gives) is split into its 26-connected
    components instead, so its lesions are still drawn one by one rather than by voxel.
    """
    boxes = ndimage.find_objects((label != 0).astype(np.uint8))
    if not boxes or boxes[0] is None:
        return []
    box = boxes[0]
    ids = np.asarray(label[box])
    if ids.max() == ids[ids != 0].min():
        ids, _ = ndimage.label(ids != 0, structure=np.ones((3, 3, 3), dtype=bool))
    coords = np.argwhere(ids)
    values = ids[tuple(coords.T)]
    order = np.argsort(values, kind="stable")
    coords, values = coords[order], values[order]
    coords += np.array([axis.start for axis in box])
    bounds = np.flatnonzero(np.diff(values)) + 1
    return list(np.split(coords, bounds))
