"""``dvc repro synth prepare prepare_shifted stage2_evaluate`` runs the real dvc.yaml end to end on
a tiny params.yaml."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent

TINY_PARAMS = """
synth:
  matrix_size: 48
  pixel_spacing_mm: [6.0, 7.0]
  slice_thickness_mm: [5.0, 6.0]
  coverage_mm: [150.0, 180.0]
  slice_count: [20, 40]
  lesion_diameter_mm: [8.0, 20.0]
  vessel_max_segments: 50
synth_run: {n: 3, seed: 1, workers: 1}
prepare:
  split: {seed: 0, val_fraction: 0.34, test_fraction: 0.0}
  preprocess: {target_spacing_mm: [3.0, 3.0, 4.5], crop: body}
  cache_dtype: float16
synth_test_run: {n: 2, seed: 2, workers: 1}
prepare_test:
  split: test
  preprocess: {target_spacing_mm: [3.0, 3.0, 4.5], crop: body}
synth_shifted:
  matrix_size: 40
  pixel_spacing_mm: [7.0, 8.0]
  slice_thickness_mm: [6.0, 6.0]
  coverage_mm: [150.0, 160.0]
  slice_count: [20, 30]
  feet_first_fraction: 1.0
  lesion_diameter_mm: [8.0, 20.0]
  vessel_max_segments: 50
synth_shifted_run: {n: 2, seed: 3, workers: 1}
prepare_shifted:
  split: test
  preprocess: {target_spacing_mm: [3.0, 3.0, 4.5], crop: body}
train: {device: cpu, workers: 0, threads: 1}
calibrate: {method: temperature, target_sensitivity: 0.9, findings_thresholds: "0.5", threads: 1}
evaluate: {n_bootstrap: 10, seed: 0, threads: 1}
package: {trained_on: test}
stage2: {workers: 1, max_candidates: 50, steps: 2, threads: 1, seed: 0, budgets: "10,50"}
"""


@pytest.mark.slow
@pytest.mark.skipif(not (BIN / "dvc").exists(), reason="dvc is not installed in this environment")
def test_dvc_repro_synth_prepare_and_stage2_on_tiny_params(tmp_path: Path) -> None:
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copytree(
        ROOT / "pipelines", tmp_path / "pipelines", ignore=shutil.ignore_patterns("__pycache__")
    )
    (tmp_path / "params.yaml").write_text(TINY_PARAMS, encoding="utf-8")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env["PYTHONPATH"] = str(tmp_path)
    dvc = str(BIN / "dvc")
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=tmp_path, env=env, check=True)
    result = subprocess.run(
        [dvc, "repro", "synth", "prepare", "prepare_shifted", "stage2_evaluate"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    index = json.loads((tmp_path / "data/prepared/prepared.json").read_text())
    assert len(index["cases"]) == 3 and index["failures"] == []
    assert {c["split"] for c in index["cases"]} == {"train", "val"}
    assert all((tmp_path / "data/prepared" / c["cache"]).is_file() for c in index["cases"])
    # the two-stage detector's stages: candidates of every case, a run, its validation figures
    candidates = json.loads((tmp_path / "data/stage2/candidates.json").read_text())
    assert set(candidates) == {c["case_id"] for c in index["cases"]}
    assert (tmp_path / "runs/stage2/stage2_model.pt").is_file()
    figures = json.loads((tmp_path / "reports/stage2/val.json").read_text())
    assert set(figures) == {"10", "50"}
    assert (tmp_path / "dvc.lock").is_file()
    shifted = json.loads((tmp_path / "data/prepared_shifted/prepared.json").read_text())
    assert len(shifted["cases"]) == 2 and {c["split"] for c in shifted["cases"]} == {"test"}
    manifest = json.loads((tmp_path / "data/synth/shifted/manifest.json").read_text())
    assert {c["slice_thickness_mm"] for c in manifest["cases"]} == {6.0}  # its own settings
