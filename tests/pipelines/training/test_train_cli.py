"""``basira train`` as a user runs it: one process, and two under torchrun (DDP, gloo on CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.bundle import write_bundle
from pipelines.datasets.prepare import PreparedIndex
from tests.cli import Basira
from tests.pipelines.training.conftest import tiny_bundle

BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_bad_bundle_exits_3_with_one_line_naming_the_field(
    basira: Basira, prepared: tuple[Path, PreparedIndex], tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle.yaml"
    bundle.write_text("name: x\nversion: '1'\ntraining: {lr: 0}\n")
    result = basira.run(
        "train", "--bundle", str(bundle), "--data", str(prepared[0]), "--out", str(tmp_path)
    )
    assert result.returncode == 3
    assert result.stderr.startswith("error[config.invalid]:") and "training.lr" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_resume_without_checkpoint_exits_3(
    basira: Basira, prepared: tuple[Path, PreparedIndex], tmp_path: Path
) -> None:
    write_bundle(tiny_bundle(), tmp_path / "bundle.yaml")
    result = basira.run(
        "train",
        "--bundle",
        str(tmp_path / "bundle.yaml"),
        "--data",
        str(prepared[0]),
        "--out",
        str(tmp_path / "run"),
        "--resume",
        "--no-track",
    )
    assert result.returncode == 3
    assert result.stderr.startswith("error[training.no_checkpoint]:")


@pytest.mark.slow
def test_torchrun_two_processes_with_gloo_train_and_only_rank_0_writes(
    prepared: tuple[Path, PreparedIndex], tmp_path: Path
) -> None:
    write_bundle(tiny_bundle(epochs=2, validate_every=2), tmp_path / "bundle.yaml")
    command = [
        str(BIN / "torchrun"),
        "--standalone",
        "--nproc_per_node=2",
        "--no-python",
        str(BIN / "basira"),
        "train",
        "--bundle",
        str(tmp_path / "bundle.yaml"),
        "--data",
        str(prepared[0]),
        "--out",
        str(tmp_path / "run"),
        "--epochs",
        "2",
        "--threads",
        "1",
        "--workers",
        "0",
        "--no-track",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, check=False, env=ENV
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("2 epochs, best CPM") == 1  # rank 0 reports, rank 1 is silent
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [entry["epoch"] for entry in history] == [1.0, 2.0]
    assert "cpm" in history[-1]
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    assert (tmp_path / "run" / "best_model.pt").is_file()
