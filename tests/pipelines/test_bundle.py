"""Bundle config: the shipped bundle loads, bad fields are named, the contract hash is stable."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.bundle import (
    Bundle,
    flatten_bundle,
    load_bundle,
    preprocessing_hash,
    write_bundle,
)
from pipelines.errors import ConfigError, InputNotFoundError
from pipelines.transforms import LungCropConfig, PreprocessConfig

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "models" / "lung-nodule-unet" / "bundle.yaml"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bundle.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_bundle_loads_and_matches_the_prepare_params() -> None:
    import yaml

    bundle = load_bundle(SHIPPED)
    assert bundle.name == "lung-nodule-unet"
    assert bundle.network.name == "unet"
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    assert bundle.preprocess == PreprocessConfig.model_validate(params["prepare"]["preprocess"])


def test_bundle_round_trips_through_yaml(tmp_path: Path) -> None:
    bundle = load_bundle(SHIPPED)
    write_bundle(bundle, tmp_path / "again.yaml")
    assert load_bundle(tmp_path / "again.yaml") == bundle


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("name: x\nversion: '1'\ntraining: {lr: -1}\n", "training.lr"),
        ("name: x\nversion: '1'\ntraining: {epochz: 3}\n", "training.epochz"),
        ("name: x\nversion: '1'\ntraining: {output_prior: 1.0}\n", "training.output_prior"),
        ("name: x\nversion: '1'\nnetwork: {name: resnet9}\n", "network"),
        ("name: x\nversion: '1'\npatch_size_kji: [60, 64, 64]\n", "multiples of 16"),
        ("name: x\nversion: '1'\npreprocess: {window_hu: [400, -1000]}\n", "preprocess"),
        ("name: x\nversion: '1'\nfindings: {threshold: 2}\n", "findings.threshold"),
        ("version: '1'\n", "name"),
    ],
)
def test_bad_bundle_raises_config_error_naming_the_field(
    tmp_path: Path, text: str, field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_bundle(_write(tmp_path, text))
    assert field in info.value.message


@pytest.mark.parametrize("text", [": [", "- a list\n"])
def test_unparsable_bundle_raises_config_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        load_bundle(_write(tmp_path, text))


def test_missing_bundle_raises_input_not_found(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        load_bundle(tmp_path / "nope.yaml")


def test_preprocessing_hash_changes_only_with_the_contract() -> None:
    bundle = Bundle(name="a", version="1")
    same = bundle.model_copy(update={"description": "other words", "version": "2"})
    assert preprocessing_hash(same) == preprocessing_hash(bundle)
    assert len(preprocessing_hash(bundle)) == 64
    other_patch = Bundle(name="a", version="1", patch_size_kji=(32, 64, 64))
    other_spacing = Bundle(
        name="a", version="1", preprocess=PreprocessConfig(target_spacing_mm=(2.0, 2.0, 2.0))
    )
    assert preprocessing_hash(other_patch) != preprocessing_hash(bundle)
    assert preprocessing_hash(other_spacing) != preprocessing_hash(bundle)


def test_lung_crop_is_not_part_of_the_preprocessing_contract() -> None:
    """It picks which windows run, not what a window holds: exported models keep fitting."""
    bundle = Bundle(name="a", version="1")
    for crop in (LungCropConfig(enabled=False), LungCropConfig(margin_mm=25.0)):
        inference = bundle.inference.model_copy(update={"lung_crop": crop})
        other = bundle.model_copy(update={"inference": inference})
        assert preprocessing_hash(other) == preprocessing_hash(bundle)
    overlap = bundle.model_copy(
        update={"inference": bundle.inference.model_copy(update={"overlap": 0.5})}
    )
    assert preprocessing_hash(overlap) != preprocessing_hash(bundle)


def test_flattened_bundle_has_dotted_string_params() -> None:
    flat = flatten_bundle(Bundle(name="a", version="1"))
    assert flat["training.lr"] == "0.001"
    assert flat["network.name"] == "unet"
    assert flat["patch_size_kji"] == "[64, 64, 64]"
