"""Sliding-window inference over a ``[k, j, i]`` volume, with Gaussian blending, in numpy.

Both engines run their network through :class:`SlidingWindow`, so the window grid, the blending,
the stitching and the lung crop are one piece of code whatever the backend.

The grid, the importance map and the stitching are MONAI's (``sliding_window_inference`` with
``compute_importance_map``, MONAI 1.6): windows of ``roi_size_kji`` every
``int(roi * (1 - overlap))`` voxels, the last one flush with the far edge; a volume smaller than
a window is zero-padded around it; each window's logits are weighted by a Gaussian of sigma
``roi / 8`` (clamped below at 1e-3) and the weighted sum is divided by the summed weights. They
are written again here because ``import monai`` loads every MONAI subpackage, whose optional
imports pull in mlflow and pandas, seconds of a fresh ``basira predict`` process spent on the one
function inference needs (``docs/predict.md``). ``tests/pipelines/engine/test_sliding_window.py``
keeps the two equal.

Memory stays bounded: besides the input, one float32 sum and one weight map of the region the
windows cover, and one batch of ``sw_batch_size`` windows.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from pipelines.bundle import BlendMode, InferenceConfig
from pipelines.transforms import PreprocessConfig, lung_box

__all__ = ["Predictor", "SlidingWindow", "importance_map", "sigmoid", "window_starts"]

#: A network on a window batch: ``[b, 1, k, j, i]`` float32 in, logits of the same shape out.
Predictor = Callable[[np.ndarray], np.ndarray]
#: MONAI's default: sigma of the Gaussian weight, as a fraction of the window size.
SIGMA_SCALE = 0.125
_MIN_WEIGHT = 1e-3


@dataclass(frozen=True)
class SlidingWindow:
    """Runs a predictor over a volume window by window, as the bundle's ``inference`` says.

    Args:
        inference: window size, overlap, blending, window batch and the lung crop.
        preprocess: the bundle's preprocessing (window and spacing), needed to find the lungs;
            ``None`` runs the windows over the whole volume.
    """

    inference: InferenceConfig
    preprocess: PreprocessConfig | None = None

    def region(self, image_kji: np.ndarray) -> tuple[slice, slice, slice]:
        """The ``[k, j, i]`` slices the windows cover: the lung box when the crop is on and
        lungs are found (:func:`~pipelines.transforms.lung_box`), else the whole volume."""
        crop = self.inference.lung_crop
        box = None
        if crop.enabled and self.preprocess is not None:
            roi = self.inference.roi_size_kji
            box = lung_box(image_kji, self.preprocess, crop, min_size_kji=roi)
        if box is None:
            return slice(None), slice(None), slice(None)
        start, stop = box
        return slice(start[2], stop[2]), slice(start[1], stop[1]), slice(start[0], stop[0])

    def probabilities(
        self, image_kji: np.ndarray, predictor: Predictor, *, batch_size: int | None = None
    ) -> np.ndarray:
        """Probability ``[k, j, i]`` float32 for a ``[k, j, i]`` image: the sigmoid of the
        blended logits inside :meth:`region`, 0 outside it.

        ``batch_size`` overrides the bundle's ``sw_batch_size`` (how many windows go to the
        predictor at once; the result does not depend on it).
        """
        if image_kji.ndim != 3:
            raise ValueError(f"expected a [k, j, i] volume, got shape {image_kji.shape}")
        region = self.region(image_kji)
        logits = blended_logits(
            np.asarray(image_kji[region], dtype=np.float32),
            predictor,
            roi_size_kji=self.inference.roi_size_kji,
            overlap=self.inference.overlap,
            blend=self.inference.blend,
            batch_size=batch_size or self.inference.sw_batch_size,
        )
        prob = np.zeros(image_kji.shape, dtype=np.float32)
        prob[region] = sigmoid(logits)
        return prob


def blended_logits(
    image_kji: np.ndarray,
    predictor: Predictor,
    *,
    roi_size_kji: Sequence[int],
    overlap: float,
    blend: BlendMode,
    batch_size: int,
) -> np.ndarray:
    """MONAI's ``sliding_window_inference`` on one single-channel ``[k, j, i]`` float32 volume:
    the blended logits, ``[k, j, i]`` float32."""
    roi = tuple(int(n) for n in roi_size_kji)
    padded, unpad = _pad_to_window(image_kji, roi)
    weight = importance_map(roi, blend)
    total = np.zeros(padded.shape, dtype=np.float32)
    weights = np.zeros(padded.shape, dtype=np.float32)
    batch = np.empty((batch_size, 1, *roi), dtype=np.float32)
    for chunk in _chunks(_window_slices(padded.shape, roi, overlap), batch_size):
        for n, window in enumerate(chunk):
            batch[n, 0] = padded[window]
        logits = predictor(batch[: len(chunk)])
        for n, window in enumerate(chunk):
            total[window] += logits[n, 0] * weight
            weights[window] += weight
    total /= weights
    return total[unpad]


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Start indices of the windows along one axis of ``size`` voxels (``size >= roi``)."""
    if roi >= size:
        return [0]
    interval = max(int(roi * (1 - overlap)), 1)
    starts = []
    for start in range(0, size, interval):
        if start + roi >= size:
            starts.append(size - roi)
            break
        starts.append(start)
    return starts


def importance_map(roi_size_kji: Sequence[int], blend: BlendMode) -> np.ndarray:
    """Weight of each voxel of a window: 1 (constant) or a Gaussian of sigma ``roi / 8`` per axis,
    clamped below at 1e-3 (float32, MONAI's ``compute_importance_map``)."""
    if blend is BlendMode.CONSTANT:
        return np.ones(tuple(roi_size_kji), dtype=np.float32)
    weight = np.ones((), dtype=np.float32)
    for size in roi_size_kji:
        x = np.arange(-(size - 1) / 2.0, (size - 1) / 2.0 + 1, dtype=np.float32)
        sigma = size * SIGMA_SCALE
        weight = weight[..., None] * np.exp(x**2 / np.float32(-2 * sigma**2))
    return np.maximum(weight, max(float(weight.min()), _MIN_WEIGHT)).astype(np.float32)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Logistic function, float32, without overflow for large negative logits."""
    e = np.exp(-np.abs(logits, dtype=np.float32))
    return np.where(logits >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)


def _pad_to_window(
    image_kji: np.ndarray, roi: tuple[int, ...]
) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Zero-pad axes shorter than the window (half before, the rest after, as MONAI does)."""
    before = [max(r - n, 0) // 2 for r, n in zip(roi, image_kji.shape, strict=True)]
    after = [max(r - n, 0) - b for r, n, b in zip(roi, image_kji.shape, before, strict=True)]
    if not any(before) and not any(after):
        return image_kji, (slice(None),) * 3
    padded = np.pad(image_kji, list(zip(before, after, strict=True)))
    unpad = tuple(slice(b, b + n) for b, n in zip(before, image_kji.shape, strict=True))
    return padded, unpad


def _window_slices(
    shape_kji: tuple[int, ...], roi: tuple[int, ...], overlap: float
) -> list[tuple[slice, ...]]:
    """Every window, the first axis varying slowest (MONAI's order)."""
    starts = [window_starts(n, r, overlap) for n, r in zip(shape_kji, roi, strict=True)]
    return [
        tuple(slice(s, s + r) for s, r in zip(corner, roi, strict=True))
        for corner in itertools.product(*starts)
    ]


def _chunks(windows: list[tuple[slice, ...]], size: int) -> Iterator[list[tuple[slice, ...]]]:
    for start in range(0, len(windows), size):
        yield windows[start : start + size]
