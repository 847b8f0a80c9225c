"""Segmentation losses by name (the bundle's ``training.loss``), all on one sigmoid channel.

Dice handles the extreme class imbalance of small nodules in large patches; the focal or
cross-entropy term keeps gradients useful on background patches, where Dice alone is flat.

``dice_focal`` and ``dice_ce`` compute Dice per patch. On a patch without lesion voxels that Dice
is about 1 whatever the network predicts (the smoothing terms are 1e-5), so its gradient vanishes:
with half the patches background the loss sits on a floor near 0.5 and false positives on
background patches are left to the focal or cross-entropy term alone. ``dice_ce_batch`` pools
every patch of the step into one Dice (nnU-Net's "batch Dice"): a false-positive voxel on a
background patch weighs in the denominator exactly as one beside a lesion, and every lesion voxel
gets the same push, whatever its lesion's size, plus binary cross-entropy over every voxel.
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


def _dice_ce_batch() -> nn.Module:
    from monai.losses import DiceCELoss

    return DiceCELoss(sigmoid=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)


LOSSES: dict[LossName, Callable[[], nn.Module]] = {
    LossName.DICE_FOCAL: _dice_focal,
    LossName.DICE_CE: _dice_ce,
    LossName.DICE_CE_BATCH: _dice_ce_batch,
}


def build_loss(name: LossName) -> nn.Module:
    """The loss registered as ``name``: ``loss(logits [b,1,k,j,i], target [b,1,k,j,i])``."""
    return LOSSES[name]()
