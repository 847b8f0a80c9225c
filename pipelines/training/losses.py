"""Segmentation losses by name (the bundle's ``training.loss``), all on one sigmoid channel.

Dice handles the extreme class imbalance of small nodules in large patches; the focal or
cross-entropy term keeps gradients useful on background patches, where Dice alone is flat.

MONAI's Dice is computed per patch. On a patch without lesion voxels it is close to 1 whatever
the network predicts (the smoothing terms are 1e-5) and its gradient vanishes, so with half the
patches background, ``dice_focal`` sits on a floor near 0.5 and its Dice term learns from half
the batch. ``lesion_dice_focal`` averages Dice over the patches that hold lesion voxels only,
each patch counting once whatever its lesion's size (a 3 mm nodule weighs as much as a 30 mm
one), and leaves background patches to the focal term over every voxel.
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


class LesionDiceFocalLoss(nn.Module):
    """Dice over the patches holding lesion voxels plus focal loss over all (module docstring)."""

    def __init__(self) -> None:
        from monai.losses import DiceLoss, FocalLoss

        super().__init__()
        self.dice = DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5, reduction="none")
        self.focal = FocalLoss(reduction="mean")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``logits`` and ``target`` ``[b, 1, k, j, i]`` → a scalar."""
        focal = self.focal(logits, target)
        has_lesion = target.flatten(1).amax(dim=1) > 0
        if not bool(has_lesion.any()):
            return focal
        dice = self.dice(logits, target).flatten()
        return focal + dice[has_lesion].mean()


LOSSES: dict[LossName, Callable[[], nn.Module]] = {
    LossName.DICE_FOCAL: _dice_focal,
    LossName.DICE_CE: _dice_ce,
    LossName.LESION_DICE_FOCAL: LesionDiceFocalLoss,
}


def build_loss(name: LossName) -> nn.Module:
    """The loss registered as ``name``: ``loss(logits [b,1,k,j,i], target [b,1,k,j,i])``."""
    return LOSSES[name]()
