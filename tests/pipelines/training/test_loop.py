"""Training runs on tiny data: loss falls, resume is exact, early stopping, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipelines.errors import (
    CheckpointMismatchError,
    CheckpointNotFoundError,
    DeviceUnavailableError,
)
from pipelines.prepare import PreparedIndex
from pipelines.training.checkpoint import BEST_WEIGHTS_NAME, CHECKPOINT_NAME
from pipelines.training.loop import TrainOptions, train
from tests.pipelines.training.conftest import tiny_bundle


class Interrupted(Exception):
    """Stands for a killed process in the resume test."""


def _options(data_dir: Path, out: Path, **kwargs: object) -> TrainOptions:
    return TrainOptions(data_dir=data_dir, out_dir=out, progress=False, threads=1, **kwargs)  # type: ignore[arg-type]


def test_tiny_run_reduces_loss_and_writes_the_run_folder(
    prepared: tuple[Path, PreparedIndex], tmp_path: Path
) -> None:
    bundle = tiny_bundle(epochs=4, validate_every=2, patches_per_case=4)
    result = train(bundle, _options(prepared[0], tmp_path / "run"))
    losses = [entry["loss"] for entry in result.history]
    assert result.epochs_completed == 4 and len(losses) == 4
    assert losses[-1] < losses[0]
    assert [("cpm" in entry) for entry in result.history] == [False, True, False, True]
    assert {"cpm", "dice", "auc", "sens@1"} <= set(result.history[-1])
    assert all(entry["patches_per_s"] > 0 for entry in result.history)
    for name in ("bundle.yaml", "history.json", CHECKPOINT_NAME, BEST_WEIGHTS_NAME):
        assert (tmp_path / "run" / name).is_file()
    assert json.loads((tmp_path / "run" / "history.json").read_text()) == result.history


def test_resume_continues_exactly_like_an_uninterrupted_run(
    prepared: tuple[Path, PreparedIndex], tmp_path: Path
) -> None:
    bundle = tiny_bundle(epochs=3, validate_every=2)
    straight = train(bundle, _options(prepared[0], tmp_path / "straight"))

    def stop_after_first(epoch: int, metrics: dict[str, float]) -> None:
        if epoch == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(bundle, _options(prepared[0], tmp_path / "resumed", on_epoch_end=stop_after_first))
    resumed = train(bundle, _options(prepared[0], tmp_path / "resumed", resume=True))

    timings = {"epoch_seconds", "train_seconds", "patches_per_s"}
    strip = [{k: v for k, v in e.items() if k not in timings} for e in straight.history]
    again = [{k: v for k, v in e.items() if k not in timings} for e in resumed.history]
    assert again == strip
    a = torch.load(tmp_path / "straight" / CHECKPOINT_NAME, weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / CHECKPOINT_NAME, weights_only=True)["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_early_stopping_after_patience_validations_without_better_cpm(
    prepared: tuple[Path, PreparedIndex], tmp_path: Path
) -> None:
    # a learning rate this small cannot change the detections: CPM stays where it started
    bundle = tiny_bundle(epochs=6, lr=1e-9, early_stopping_patience=2)
    result = train(bundle, _options(prepared[0], tmp_path / "run"))
    assert result.stopped_early and result.epochs_completed == 3
    assert result.best_epoch == 1


def test_resume_without_checkpoint_raises_no_checkpoint(
    prepared: tuple[Path, PreparedIndex], tmp_path: Path
) -> None:
    with pytest.raises(CheckpointNotFoundError) as info:
        train(tiny_bundle(), _options(prepared[0], tmp_path / "empty", resume=True))
    assert info.value.code == "training.no_checkpoint"


def test_resume_with_another_network_raises_checkpoint_mismatch(
    prepared: tuple[Path, PreparedIndex], tmp_path: Path
) -> None:
    train(tiny_bundle(epochs=1), _options(prepared[0], tmp_path / "run"))
    other = tiny_bundle(epochs=2).model_copy(
        update={"network": tiny_bundle().network.model_copy(update={"kwargs": {}})}
    )
    with pytest.raises(CheckpointMismatchError) as info:
        train(other, _options(prepared[0], tmp_path / "run", resume=True))
    assert info.value.code == "training.checkpoint_mismatch"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cpu_machine_raises_device_unavailable(
    prepared: tuple[Path, PreparedIndex], tmp_path: Path
) -> None:
    with pytest.raises(DeviceUnavailableError) as info:
        train(tiny_bundle(), _options(prepared[0], tmp_path / "run", device="cuda"))
    assert info.value.code == "training.device_unavailable"
