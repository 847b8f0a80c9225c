"""Training runs on tiny data: loss falls, resume is exact, early stopping, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipelines.bundle import Bundle
from pipelines.datasets.prepare import PreparedIndex
from pipelines.errors import (
    CheckpointMismatchError,
    CheckpointNotFoundError,
    DeviceUnavailableError,
)
from pipelines.training.checkpoint import BEST_WEIGHTS_NAME, CHECKPOINT_NAME
from pipelines.training.loop import TrainOptions, TrainResult, train
from tests.pipelines.training.conftest import tiny_bundle


class Interrupted(Exception):
    """Stands for a killed process in the resume test."""


def _interrupted_then_resumed(bundle: Bundle, data_dir: Path, out: Path) -> TrainResult:
    """Train ``bundle`` into ``out``, stopped after its first epoch, then resumed to the end."""

    def stop_after_first(epoch: int, metrics: dict[str, float]) -> None:
        if epoch == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(bundle, _options(data_dir, out, on_epoch_end=stop_after_first))
    return train(bundle, _options(data_dir, out, resume=True))


def _without_timings(history: list[dict[str, float]]) -> list[dict[str, float]]:
    timings = {"epoch_seconds", "train_seconds", "patches_per_s"}
    return [{k: v for k, v in entry.items() if k not in timings} for entry in history]


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
    resumed = _interrupted_then_resumed(bundle, prepared[0], tmp_path / "resumed")
    assert _without_timings(resumed.history) == _without_timings(straight.history)
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


def test_inserted_lesions_are_counted_and_a_run_with_them_is_reproducible(
    prepared: tuple[Path, PreparedIndex], tmp_path: Path
) -> None:
    bundle = tiny_bundle(epochs=2, validate_every=2, patches_per_case=4)
    insertion = {"probability": 1.0, "max_per_patch": 2, "diameter_mm": (8.0, 16.0)}
    augmentation = bundle.augmentation.model_copy(
        update={"insertion": bundle.augmentation.insertion.model_copy(update=insertion)}
    )
    bundle = bundle.model_copy(update={"augmentation": augmentation})
    runs = [train(bundle, _options(prepared[0], tmp_path / f"run{n}")) for n in range(2)]
    inserted = [entry["inserted_lesions"] for entry in runs[0].history]
    # 4 train cases x 4 patches an epoch, each given 1-2 lesions where its lung has room
    assert all(count > 0 for count in inserted) and all(count <= 32 for count in inserted)
    assert inserted == [entry["inserted_lesions"] for entry in runs[1].history]
    assert runs[0].history[-1]["loss"] == runs[1].history[-1]["loss"]


def test_mined_negatives_are_drawn_and_a_resumed_run_draws_the_same(
    prepared: tuple[Path, PreparedIndex], tmp_path: Path
) -> None:
    # a threshold under the output prior: every case yields false findings to mine
    bundle = tiny_bundle(
        epochs=3, validate_every=3, mine_every=1, mined_fraction=0.5, mine_threshold=0.001
    )
    straight = train(bundle, _options(prepared[0], tmp_path / "straight"))
    mined = [entry.get("mined_negatives") for entry in straight.history]
    assert mined[0] and mined[1] and mined[2] is None  # after epochs 1 and 2, not after the last
    state = torch.load(tmp_path / "straight" / CHECKPOINT_NAME, weights_only=True)["state"]
    assert sum(len(centres) for centres in state["mined"].values()) == mined[1]
    resumed = _interrupted_then_resumed(bundle, prepared[0], tmp_path / "resumed")
    assert _without_timings(resumed.history) == _without_timings(straight.history)
