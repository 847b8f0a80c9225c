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

That same push per *voxel* still leaves small lesions behind: a 3 mm nodule holds a hundred
times fewer voxels than a 15 mm one, and far fewer than the vessel cross-sections it resembles,
so a ``dice_ce_batch`` model scored 9-11 mm nodules below 0.01 while finding every nodule over
15 mm. ``lesion_dice_ce`` adds Dice computed per patch and averaged over the patches that hold
a lesion (each patch is centred on one lesion drawn by lesion, so every lesion weighs the
same, whatever its size), and keeps the batch Dice and cross-entropy for the background.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
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


class LesionDiceCELoss(nn.Module):
    """Batch Dice + BCE over every patch, plus Dice averaged over the patches that hold lesion
    voxels (module docstring)."""

    def __init__(self) -> None:
        from monai.losses import DiceCELoss, DiceLoss

        super().__init__()
        self.batch = DiceCELoss(sigmoid=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)
        self.per_patch = DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5, reduction="none")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits`` and ``target`` ``[b, 1, k, j, i]`` → a scalar."""
        loss = self.batch(logits, target)
        has_lesion = target.flatten(1).amax(dim=1) > 0
        if bool(has_lesion.any()):
            loss = loss + self.per_patch(logits, target).flatten()[has_lesion].mean()
        return loss


LOSSES: dict[LossName, Callable[[], nn.Module]] = {
    LossName.DICE_FOCAL: _dice_focal,
    LossName.DICE_CE: _dice_ce,
    LossName.DICE_CE_BATCH: _dice_ce_batch,
    LossName.LESION_DICE_CE: LesionDiceCELoss,
}


def build_loss(name: LossName) -> nn.Module:
    """The loss registered as ``name``: ``loss(logits [b,1,k,j,i], target [b,1,k,j,i])``."""
    return LOSSES[name]()
