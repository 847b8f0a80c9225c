"""Training data from the ``prepare`` cache: balanced patches with augmentation.

Each item of :class:`PatchDataset` is one cached case, cut into ``patches_per_case`` patches of
the bundle's patch size, a ``positive_fraction`` share of them centred on a lesion, each lesion
as likely as any other, and the rest on background inside the region inference covers, a
``hard_negative_fraction`` of those on vessels, hila and pleura (:mod:`pipelines.training.sampling`;
a case without lesions gives background patches only). A loader batch of ``batch_size`` cases
therefore holds ``batch_size * patches_per_case`` patches.

Randomness is a pure function of ``(seed, epoch, case index)``: the transform chain is reseeded
for every item, so results do not depend on worker count or on where a run was resumed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pipelines.bundle import AugmentationConfig, Bundle
from pipelines.datasets.prepare import (
    PreparedCase,
    load_prepared_case,
    source_slice_thicknesses,
)
from pipelines.training.insertion import THICKNESS_KEY
from pipelines.training.mining import MINED_KEY
from pipelines.training.sampling import SAMPLING_KEY

_MAX_SEED = 2**31 - 1


def _augmentations(config: AugmentationConfig) -> list[Any]:
    from monai.transforms import RandAffined, RandFlipd, RandScaleIntensityd, RandShiftIntensityd

    keys = ["image", "label"]
    chain: list[Any] = [RandFlipd(keys, prob=config.flip_prob, spatial_axis=a) for a in range(3)]
    chain += [
        RandScaleIntensityd("image", factors=config.intensity_scale, prob=config.intensity_prob),
        RandShiftIntensityd("image", offsets=config.intensity_shift, prob=config.intensity_prob),
    ]
    if config.affine_prob > 0 and (config.rotate_deg > 0 or config.zoom > 0):
        chain.append(
            RandAffined(
                keys,
                prob=config.affine_prob,
                rotate_range=[np.deg2rad(config.rotate_deg)] * 3,
                scale_range=[config.zoom] * 3,
                mode=("bilinear", "nearest"),
                padding_mode="border",
            )
        )
    return chain


def build_train_transform(bundle: Bundle) -> Any:
    """The MONAI dictionary chain: pad, lesion-balanced crops, inserted synthetic lesions,
    augmentations, float32 tensors.

    Input: ``{"image": [1, k, j, i], "label": [1, k, j, i]}`` with the label's lesion instance
    numbers (and optionally the case's ``slice_thickness_mm``); output: a list of
    ``patches_per_case`` such dicts of the bundle's patch size, the label a 0/1 mask, each with
    the number of lesions inserted into it (:data:`~pipelines.training.insertion.INSERTED_KEY`).
    """
    from monai.transforms import AsDiscreted, Compose, EnsureTyped, SpatialPadd

    from pipelines.training.insertion import RandInsertLesionsd
    from pipelines.training.sampling import RandCropByLesiond

    keys = ["image", "label"]
    training = bundle.training
    return Compose(
        [
            SpatialPadd(keys, spatial_size=bundle.patch_size_kji),
            RandCropByLesiond(
                keys,
                spatial_size=bundle.patch_size_kji,
                num_samples=training.patches_per_case,
                pos_fraction=training.positive_fraction,
                preprocess=bundle.preprocess,
                lung_crop=bundle.inference.lung_crop,
                hard_negative_fraction=training.hard_negative_fraction,
                mined_fraction=training.mined_fraction,
            ),
            RandInsertLesionsd(bundle.augmentation.insertion, bundle.preprocess),
            AsDiscreted("label", threshold=0.5),
            *_augmentations(bundle.augmentation),
            EnsureTyped(keys, data_type="tensor", dtype=torch.float32, track_meta=False),
        ]
    )


class PatchDataset(Dataset[list[dict[str, torch.Tensor]]]):
    """Cached cases → lists of augmented patches (see module docstring)."""

    def __init__(
        self,
        data_dir: Path,
        cases: Sequence[PreparedCase],
        transform: Any,
        seed: int,
        patch_size_kji: Sequence[int] = (0, 0, 0),
    ):
        self.paths = [data_dir / case.cache for case in cases]
        thickness = source_slice_thicknesses(data_dir)
        self.thickness_mm = [thickness.get(case.case_id) for case in cases]
        self.shapes_kji = [case.shape_kji for case in cases]
        self.patch_size_kji = tuple(patch_size_kji)
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.mined: dict[str, list[list[int]]] = {}
        self._held: dict[int, dict[str, Any]] = {}

    def hold_in_memory(self, budget_bytes: int) -> int:
        """Keep cases in memory, as cached (float16), with where their patches may be drawn
        (:meth:`~pipelines.training.sampling.RandCropByLesiond.where`), while they fit in
        ``budget_bytes``; returns how many are held.

        Reading a case back and finding its lung box, lesions and hard-negative candidates
        cost seconds a case, every epoch, in the one loader process, so the loader, not the
        network, set the pace (docs/training.md). Held by the process that builds the loader,
        the cases are shared with the loader processes forked every epoch.
        """
        from pipelines.training.sampling import RandCropByLesiond

        sampler = next(
            (
                t
                for t in getattr(self.transform, "transforms", ())
                if isinstance(t, RandCropByLesiond)
            ),
            None,
        )
        used = 0
        for index, path in enumerate(self.paths):
            k, j, i = self.shapes_kji[index]
            size = k * j * i * (np.dtype(np.float16).itemsize + np.dtype(np.uint8).itemsize)
            if used + size > budget_bytes:
                break
            case = load_prepared_case(path)
            image, label = case["image"], case["label"]
            fits = all(n >= p for n, p in zip(image.shape, self.patch_size_kji, strict=True))
            where = sampler.where(image, label) if sampler is not None and fits else None
            self._held[index] = {"image": image, "label": label, SAMPLING_KEY: where}
            used += image.nbytes + label.nbytes
        return len(self._held)

    def set_mined(self, mined: dict[str, list[list[int]]]) -> None:
        """The last mining round's centres (case index as text → ``[[k, j, i], ...]`` on the
        cached volume), drawn from until the next round."""
        self.mined = mined

    def set_epoch(self, epoch: int) -> None:
        """Draw a new, reproducible set of patches for ``epoch``."""
        self.epoch = epoch

    def _mined_on_padded(self, index: int) -> np.ndarray:
        return _mined_on_padded_grid(
            self.mined.get(str(index), []), self.shapes_kji[index], self.patch_size_kji
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> list[dict[str, torch.Tensor]]:
        case = self._held.get(index) or load_prepared_case(self.paths[index])
        item: dict[str, Any] = {
            "image": case["image"][None],
            "label": case["label"][None],
            THICKNESS_KEY: self.thickness_mm[index] or 0.0,
            MINED_KEY: self._mined_on_padded(index),
        }
        if case.get(SAMPLING_KEY) is not None:
            item[SAMPLING_KEY] = case[SAMPLING_KEY]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        self.transform.set_random_state(seed=int(rng.integers(_MAX_SEED)))
        patches: list[dict[str, torch.Tensor]] = self.transform(item)
        return patches


def _mined_on_padded_grid(
    mined: list[list[int]], shape_kji: Sequence[int], patch_size_kji: Sequence[int]
) -> np.ndarray:
    """Mined centres moved by the symmetric padding the transform gives a volume smaller than
    a patch (MONAI ``SpatialPadd``), so they land on the voxels they were mined on."""
    offset = [max(p - s, 0) // 2 for s, p in zip(shape_kji, patch_size_kji, strict=True)]
    return np.asarray(mined, dtype=np.int64).reshape(-1, 3) + np.asarray(offset, dtype=np.int64)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % _MAX_SEED
    np.random.seed(seed)
    random.seed(seed)


def patch_loader(
    dataset: PatchDataset, batch_size: int, *, rank: int, world_size: int, workers: int
) -> tuple[DataLoader[Any], DistributedSampler[Any]]:
    """A loader of ``[b * patches_per_case, 1, k, j, i]`` batches and its (DDP-aware) sampler.

    The sampler shards cases across ``world_size`` processes; with one process it is a seeded
    shuffle. Call ``sampler.set_epoch`` and ``dataset.set_epoch`` before each epoch.
    """
    from monai.data import list_data_collate

    sampler: DistributedSampler[Any] = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=dataset.seed
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=list_data_collate,
        worker_init_fn=_seed_worker,
        persistent_workers=False,
    )
    return loader, sampler
