"""Segmentation overlap: Dice per case and pooled over all voxels.

Masks are reduced to three voxel counts as soon as they are compared (:func:`compute_dice_counts`),
so an evaluation over many full-size volumes never holds more than one pair of masks at a time.

- **Per-case Dice** ``2|P∩T| / (|P| + |T|)`` is averaged over the cases whose ground truth is not
  empty (as MONAI's ``DiceMetric(ignore_empty=True)``): on a lesion-free case every prediction
  is a false positive and Dice says nothing useful; detection metrics cover those cases.
- **Global Dice** pools the counts of every case: ``2 Σ|P∩T| / Σ(|P| + |T|)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DiceCounts:
    """Voxel counts of one case: predicted ∩ true, predicted, true."""

    intersection_voxels: int
    pred_voxels: int
    true_voxels: int

    @property
    def dice(self) -> float:
        """This case's Dice; NaN when both masks are empty."""
        total = self.pred_voxels + self.true_voxels
        return 2.0 * self.intersection_voxels / total if total else float("nan")


def compute_dice_counts(pred_mask_kji: np.ndarray, true_mask_kji: np.ndarray) -> DiceCounts:
    """Counts of two boolean (or 0/1) masks of equal shape ``[k, j, i]``."""
    pred = np.asarray(pred_mask_kji).astype(bool, copy=False)
    true = np.asarray(true_mask_kji).astype(bool, copy=False)
    if pred.shape != true.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {true.shape}")
    return DiceCounts(
        intersection_voxels=int(np.count_nonzero(pred & true)),
        pred_voxels=int(np.count_nonzero(pred)),
        true_voxels=int(np.count_nonzero(true)),
    )


def _as_array(counts: list[DiceCounts]) -> np.ndarray:
    """``[n, 3]`` float array of (intersection, pred, true)."""
    return np.array(
        [(c.intersection_voxels, c.pred_voxels, c.true_voxels) for c in counts], dtype=np.float64
    ).reshape(-1, 3)


def weighted_mean_dice(counts: list[DiceCounts], weights: np.ndarray) -> np.ndarray:
    """Mean per-case Dice over cases with a non-empty truth, under ``[r, n]`` weights → ``[r]``."""
    table = _as_array(counts)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    scored = table[:, 2] > 0
    dice = np.zeros(len(counts))
    dice[scored] = 2 * table[scored, 0] / (table[scored, 1] + table[scored, 2])
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ dice) / (w @ scored)


def weighted_global_dice(counts: list[DiceCounts], weights: np.ndarray) -> np.ndarray:
    """Dice of the pooled voxel counts under ``[r, n]`` weights → ``[r]``."""
    table = _as_array(counts)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return 2 * (w @ table[:, 0]) / (w @ (table[:, 1] + table[:, 2]))


def compute_mean_dice(counts: list[DiceCounts]) -> float:
    """Mean Dice over the cases whose truth is not empty; NaN when there are none."""
    return float(weighted_mean_dice(counts, np.ones((1, len(counts))))[0])


def compute_global_dice(counts: list[DiceCounts]) -> float:
    """Dice of all cases' voxels pooled; NaN when every mask is empty."""
    return float(weighted_global_dice(counts, np.ones((1, len(counts))))[0])
