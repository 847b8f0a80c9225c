"""The losses by name: what each one rewards on lesion and background patches."""

from __future__ import annotations

import pytest
import torch

from pipelines.bundle import LossName
from pipelines.training.losses import build_loss


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 16^3 patches: the first holds a small lesion, the second is background only."""
    target = torch.zeros(2, 1, 16, 16, 16)
    target[0, 0, 6:9, 6:9, 6:9] = 1.0
    logits = torch.full_like(target, -8.0)
    logits[0, 0, 6:9, 6:9, 6:9] = 4.0
    return logits, target


def _background_gradient(name: LossName) -> float:
    """Gradient norm of the loss on the background patch's logits when it holds a false positive."""
    logits, target = _batch()
    logits[1, 0, 2:5, 2:5, 2:5] = 0.0  # an uncertain false positive on the background patch
    logits.requires_grad_(True)
    build_loss(name)(logits, target).backward()
    assert logits.grad is not None
    return float(logits.grad[1].norm())


@pytest.mark.parametrize("name", list(LossName))
def test_every_loss_is_lower_for_the_right_answer(name: LossName) -> None:
    logits, target = _batch()
    loss = build_loss(name)
    wrong = logits.clone()
    wrong[0, 0, 6:9, 6:9, 6:9] = -4.0  # the lesion missed
    assert float(loss(logits, target)) < float(loss(wrong, target))


def test_batch_dice_penalises_a_false_positive_on_a_background_patch_far_more() -> None:
    batch = _background_gradient(LossName.DICE_CE_BATCH)
    per_patch = _background_gradient(LossName.DICE_CE)
    # Per-patch Dice is ~1 on a background patch whatever it predicts: only BCE pushes back.
    assert batch > 20 * per_patch


def _lesion_push(name: LossName) -> tuple[float, float]:
    """Mean gradient magnitude on the logits of a 2-voxel-wide lesion (patch 0) and of a
    12-voxel-wide one (patch 1), both only weakly seen (p ~ 0.12) on a clean background."""
    target = torch.zeros(2, 1, 24, 24, 24)
    target[0, 0, 11:13, 11:13, 11:13] = 1.0
    target[1, 0, 6:18, 6:18, 6:18] = 1.0
    logits = torch.where(target > 0, -2.0, -9.0).requires_grad_(True)
    build_loss(name)(logits, target).backward()
    assert logits.grad is not None
    grad = logits.grad.abs()
    return float(grad[0][target[0] > 0].mean()), float(grad[1][target[1] > 0].mean())


def test_lesion_dice_pushes_a_missed_small_lesion_as_hard_as_its_size_deserves() -> None:
    small_batch, large_batch = _lesion_push(LossName.DICE_CE_BATCH)
    small, large = _lesion_push(LossName.LESION_DICE_CE)
    # pooled Dice gives every lesion voxel the same push: the small lesion's 8 voxels barely count
    assert small_batch == pytest.approx(large_batch, rel=0.05)
    # per-lesion Dice gives each lesion the same total push: per voxel, the small one far more
    assert small > 20 * large
    assert small > 20 * small_batch
