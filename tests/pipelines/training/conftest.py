"""A tiny prepared dataset (synthetic generator → prepare) and a tiny bundle for training tests.

Six 48 x 48 studies at 6-7 mm pixels, prepared at 4 mm isotropic: about 40 x 54 x 70 voxels per
case, four train and two val cases, lesions in both splits. Generating and preparing takes ~3 s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.bundle import Bundle
from pipelines.datasets.prepare import PrepareConfig, PreparedIndex, prepare_manifest
from pipelines.datasets.splits import SplitConfig
from pipelines.synth.config import SynthConfig
from pipelines.synth.dataset import generate_dataset
from pipelines.transforms import PreprocessConfig

PREPROCESS = PreprocessConfig(target_spacing_mm=(4.0, 4.0, 4.0))


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PreparedIndex]:
    """``(folder holding prepared.json, its index)``."""
    root = tmp_path_factory.mktemp("training-data")
    synth = SynthConfig(
        matrix_size=48,
        pixel_spacing_mm=(6.0, 7.0),
        slice_thickness_mm=(5.0, 6.0),
        coverage_mm=(150.0, 180.0),
        slice_count=(20, 40),
        lesion_diameter_mm=(10.0, 20.0),
        lesion_count_weights=[0.3, 0.4, 0.3],
        vessel_max_segments=50,
    )
    generate_dataset(synth, root / "synth", n_studies=6, seed=3, workers=1)
    config = PrepareConfig(
        preprocess=PREPROCESS, split=SplitConfig(seed=0, val_fraction=0.34, test_fraction=0.0)
    )
    index = prepare_manifest(root / "synth" / "manifest.json", root / "prepared", config)
    return root / "prepared", index


def tiny_bundle(**training: Any) -> Bundle:
    """A bundle that trains in about a second per epoch on the tiny dataset, with the reference
    recipe's loss, output prior and batch norm."""
    return Bundle.model_validate(
        {
            "name": "tiny",
            "version": "0",
            "preprocess": PREPROCESS.model_dump(mode="json"),
            "network": {
                "name": "unet_small",
                "kwargs": {"channels": [4, 8, 16, 32], "norm": "batch"},
            },
            "patch_size_kji": [32, 32, 32],
            "training": {
                "epochs": 2,
                "batch_size": 1,
                "patches_per_case": 2,
                "lr": 0.01,
                "loss": "lesion_dice_ce",
                "hard_negative_fraction": 0.5,
                "output_prior": 0.01,
                "validate_every": 1,
                **training,
            },
            "inference": {"roi_size_kji": [32, 32, 32], "sw_batch_size": 2},
        }
    )
