"""Training data: balanced, reproducible patches; refusals for caches that cannot train."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.bundle import load_bundle
from pipelines.datasets.manifest import Split
from pipelines.datasets.prepare import (
    PreparedIndex,
    cases_of_split,
    check_preprocess,
    read_prepared_index,
)
from pipelines.errors import (
    ConfigError,
    EmptySplitError,
    InputNotFoundError,
    PreprocessMismatchError,
)
from pipelines.training.data import PatchDataset, build_train_transform, patch_loader
from pipelines.transforms import PreprocessConfig
from tests.pipelines.training.conftest import tiny_bundle

ROOT = Path(__file__).resolve().parents[3]


def _lesion_cases(index: PreparedIndex) -> list:
    return [c for c in index.cases if c.n_lesions > 0]


def _share_with_lesion(data_dir: Path, index: PreparedIndex, fraction: float) -> float:
    bundle = tiny_bundle(positive_fraction=fraction, patches_per_case=8)
    dataset = PatchDataset(data_dir, _lesion_cases(index), build_train_transform(bundle), seed=0)
    patches = [p for epoch in range(3) for p in _epoch(dataset, epoch)]
    assert all(p["image"].shape == (1, 32, 32, 32) for p in patches)
    assert all(p["image"].dtype == torch.float32 for p in patches)
    return float(np.mean([bool(p["label"].any()) for p in patches]))


def test_patches_are_balanced_between_lesion_and_background(
    prepared: tuple[Path, PreparedIndex],
) -> None:
    data_dir, index = prepared
    shares = {f: _share_with_lesion(data_dir, index, f) for f in (0.0, 0.5, 1.0)}
    assert shares[1.0] == 1.0
    assert shares[0.0] < shares[0.5] < 1.0
    assert shares[0.5] >= 0.5


def _epoch(dataset: PatchDataset, epoch: int) -> list[dict[str, torch.Tensor]]:
    dataset.set_epoch(epoch)
    return [p for index in range(len(dataset)) for p in dataset[index]]


def test_patches_depend_only_on_seed_epoch_and_case(prepared: tuple[Path, PreparedIndex]) -> None:
    data_dir, index = prepared
    cases = cases_of_split(index, Split.TRAIN)
    first = PatchDataset(data_dir, cases, build_train_transform(tiny_bundle()), seed=5)
    second = PatchDataset(data_dir, cases, build_train_transform(tiny_bundle()), seed=5)
    second.set_epoch(1)
    second[0]  # consuming other items first must not change what an item gives
    for a, b in zip(_epoch(first, 1), _epoch(second, 1), strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    other_epoch = _epoch(first, 2)
    assert not all(
        torch.equal(a["image"], b["image"])
        for a, b in zip(_epoch(second, 1), other_epoch, strict=True)
    )


def test_loader_batches_cases_times_patches(prepared: tuple[Path, PreparedIndex]) -> None:
    data_dir, index = prepared
    bundle = tiny_bundle(batch_size=2, patches_per_case=3)
    dataset = PatchDataset(
        data_dir, cases_of_split(index, Split.TRAIN), build_train_transform(bundle), seed=0
    )
    loader, sampler = patch_loader(dataset, 2, rank=0, world_size=1, workers=0)
    sampler.set_epoch(0)
    batch = next(iter(loader))
    assert batch["image"].shape == (6, 1, 32, 32, 32)
    assert set(torch.unique(batch["label"]).tolist()) <= {0.0, 1.0}


def test_cache_prepared_with_other_preprocessing_raises_preprocess_mismatch(
    prepared: tuple[Path, PreparedIndex],
) -> None:
    _, index = prepared
    bundle = tiny_bundle().model_copy(
        update={"preprocess": PreprocessConfig(target_spacing_mm=(1.0, 1.0, 1.5))}
    )
    with pytest.raises(PreprocessMismatchError, match="target_spacing_mm") as info:
        check_preprocess(index, bundle.preprocess, bundle.name)
    assert info.value.code == "dataset.preprocess_mismatch"


def test_split_without_cases_raises_empty_split(prepared: tuple[Path, PreparedIndex]) -> None:
    with pytest.raises(EmptySplitError) as info:
        cases_of_split(prepared[1], Split.TEST)
    assert info.value.code == "dataset.empty_split"


def test_missing_or_invalid_prepared_index_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="basira prepare"):
        read_prepared_index(tmp_path)
    (tmp_path / "prepared.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(ConfigError):
        read_prepared_index(tmp_path)


def test_worker_processes_give_the_same_batches(prepared: tuple[Path, PreparedIndex]) -> None:
    data_dir, index = prepared
    batches = []
    for workers in (0, 1):
        dataset = PatchDataset(
            data_dir,
            cases_of_split(index, Split.TRAIN),
            build_train_transform(tiny_bundle()),
            seed=0,
        )
        loader, sampler = patch_loader(dataset, 1, rank=0, world_size=1, workers=workers)
        sampler.set_epoch(1)
        dataset.set_epoch(1)
        batches.append([batch["image"] for batch in loader])
    assert all(torch.equal(a, b) for a, b in zip(*batches, strict=True))


def test_shipped_bundle_transform_with_rotation_and_zoom_keeps_binary_labels() -> None:
    bundle = load_bundle(ROOT / "models" / "lung-nodule-unet" / "bundle.yaml")
    bundle = bundle.model_copy(
        update={"augmentation": bundle.augmentation.model_copy(update={"affine_prob": 1.0})}
    )
    transform = build_train_transform(bundle)
    transform.set_random_state(seed=0)
    label = np.zeros((1, 40, 72, 70), np.float32)
    label[0, 15:25, 30:40, 30:40] = 1
    image = np.random.default_rng(0).random(label.shape).astype(np.float32)
    patches = transform({"image": image, "label": label})
    assert len(patches) == bundle.training.patches_per_case
    for patch in patches:
        assert patch["image"].shape == (1, *bundle.patch_size_kji)
        assert set(torch.unique(patch["label"]).tolist()) <= {0.0, 1.0}


def test_cases_held_in_memory_give_the_same_patches_as_cases_read_back(
    prepared: tuple[Path, PreparedIndex],
) -> None:
    data_dir, index = prepared
    cases = cases_of_split(index, Split.TRAIN)
    bundle = tiny_bundle(patches_per_case=4)
    read = PatchDataset(data_dir, cases, build_train_transform(bundle), 3, bundle.patch_size_kji)
    held = PatchDataset(data_dir, cases, build_train_transform(bundle), 3, bundle.patch_size_kji)
    assert held.hold_in_memory(2**30) == len(cases)
    for a, b in zip(_epoch(read, 2), _epoch(held, 2), strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    partly = PatchDataset(data_dir, cases, build_train_transform(bundle), 3, bundle.patch_size_kji)
    assert partly.hold_in_memory(1) == 0  # nothing fits a one-byte budget: read every time
