"""Determinism and layout of generated datasets."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pipelines.datasets.manifest import Manifest, read_manifest
from pipelines.synth.config import SynthConfig
from pipelines.synth.dataset import generate_dataset

from .conftest import N_STUDIES, SEED


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_dataset_layout_and_manifest(tiny_dataset: tuple[Path, Manifest]) -> None:
    out, manifest = tiny_dataset
    assert read_manifest(out / "manifest.json") == manifest
    assert [c.case_id for c in manifest.cases] == [f"SYN-{i:06d}" for i in range(N_STUDIES)]
    for case in manifest.cases:
        assert case.source == "synthetic" and case.split is None
        assert case.patient_id == case.case_id
        assert (out / case.image).is_dir() and (out / str(case.label)).is_file()
        assert (out / case.case_id / "seg.dcm").is_file()
        assert (out / case.case_id / "lesions.json").is_file()


def test_same_seed_is_byte_identical_whatever_the_workers(
    tiny_config: SynthConfig, tiny_dataset: tuple[Path, Manifest], tmp_path: Path
) -> None:
    out, _ = tiny_dataset
    generate_dataset(tiny_config, tmp_path, n_studies=N_STUDIES, seed=SEED, workers=2)
    assert _hashes(tmp_path) == _hashes(out)


def test_different_seed_gives_different_studies(
    tiny_config: SynthConfig, tiny_dataset: tuple[Path, Manifest], tmp_path: Path
) -> None:
    out, _ = tiny_dataset
    generate_dataset(tiny_config, tmp_path, n_studies=1, seed=SEED + 1, workers=1)
    first = "SYN-000000/dicom/CT00001.dcm"
    assert (tmp_path / first).read_bytes() != (out / first).read_bytes()
