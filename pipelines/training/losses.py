"""Segmentation losses by name (the bundle's ``training.loss``), all on one sigmoid channel.

Dice handles the extreme class imbalance of small nodules in large patches; the focal or
cross-entropy term keeps gradients useful on background patches, where Dice alone is flat.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from pipelines.bundle import LossName


def _dice_focal() -> nn.Module:
    from monai.losses import DiceFocalLoss

    return DiceFocalLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)


def _dice_ce() -> nn.Module:
    from monai.losses import DiceCELoss

    return DiceCELoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)


LOSSES: dict[LossName, Callable[[], nn.Module]] = {
    LossName.DICE_FOCAL: _dice_focal,
    LossName.DICE_CE: _dice_ce,
}


def build_loss(name: LossName) -> nn.Module:
    """The loss registered as ``name``: ``loss(logits [b,1,k,j,i], target [b,1,k,j,i])``."""
    return LOSSES[name]()
