"""Dice per case (lesion-bearing cases only) and pooled over voxels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipelines.evaluation.segmentation import (
    DiceCounts,
    compute_dice_counts,
    compute_global_dice,
    compute_mean_dice,
)


def test_dice_counts_of_overlapping_boxes():
    pred = np.zeros((4, 4, 4), bool)
    true = np.zeros((4, 4, 4), bool)
    pred[0:2, 0:2, 0:2] = True  # 8 voxels
    true[1:3, 0:2, 0:2] = True  # 8 voxels, 4 shared
    counts = compute_dice_counts(pred, true)
    assert counts == DiceCounts(4, 8, 8)
    assert counts.dice == pytest.approx(0.5)


def test_mean_dice_skips_empty_truth_and_global_pools_voxels():
    counts = [DiceCounts(5, 10, 10), DiceCounts(0, 4, 0), DiceCounts(9, 10, 10)]
    assert compute_mean_dice(counts) == pytest.approx((0.5 + 0.9) / 2)
    assert compute_global_dice(counts) == pytest.approx(2 * 14 / 44)


def test_dice_of_nothing_is_nan():
    assert math.isnan(DiceCounts(0, 0, 0).dice)
    assert math.isnan(compute_mean_dice([DiceCounts(0, 3, 0)]))
    assert math.isnan(compute_global_dice([]))


def test_mask_shapes_must_match():
    with pytest.raises(ValueError, match="shapes"):
        compute_dice_counts(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))
