"""Tiny synthetic datasets shared by the synth tests (64 x 64 matrices, 5-6 mm pixels)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.datasets.manifest import Manifest
from pipelines.synth.config import SynthConfig
from pipelines.synth.dataset import generate_dataset
from pipelines.synth.study import SynthStudy, generate_study

SEED = 11
N_STUDIES = 6


@pytest.fixture(scope="session")
def tiny_config() -> SynthConfig:
    return SynthConfig(
        matrix_size=64,
        pixel_spacing_mm=(5.0, 6.0),
        slice_thickness_mm=(8.0, 12.0),
        slice_count=(20, 28),
        lesion_diameter_mm=(10.0, 30.0),
        feet_first_fraction=0.5,
    )


@pytest.fixture(scope="session")
def tiny_dataset(
    tiny_config: SynthConfig, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Manifest]:
    out = tmp_path_factory.mktemp("synth-w1")
    manifest = generate_dataset(tiny_config, out, n_studies=N_STUDIES, seed=SEED, workers=1)
    return out, manifest


@pytest.fixture(scope="session")
def tiny_studies(tiny_config: SynthConfig) -> list[SynthStudy]:
    return [generate_study(tiny_config, SEED, i) for i in range(N_STUDIES)]
