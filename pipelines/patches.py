"""Two-scale patches around points of a preprocessed volume: what stage 2 of the detector sees.

Stage 1 (:mod:`pipelines.candidates`) proposes places; stage 2 classifies a patch around each.
A patch has two channels of the same array shape centred on the same point: the preprocessed
image itself (fine detail: is this 4 mm bright spot round?) and the image averaged over
``context_factor``-sided blocks (context: does the bright spot continue as a vessel, is it on the
chest wall?). Training and inference both cut patches with :func:`extract_patches`, so the two
never drift apart. Outside the volume a patch holds 0, the window's lower end (air), which is what
lies beyond a body-cropped volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.errors import InputError


@dataclass(frozen=True)
class PatchSpec:
    """Patch geometry in voxels of the preprocessed grid.

    ``shape_kji`` is the array shape of each channel; the context channel covers
    ``context_factor`` times the extent of the fine one.
    """

    shape_kji: tuple[int, int, int] = (24, 32, 32)
    context_factor: int = 2

    def __post_init__(self) -> None:
        if any(n < 2 for n in self.shape_kji):
            raise ValueError("every patch side must be at least 2 voxels")
        if self.context_factor < 1:
            raise ValueError("context_factor must be at least 1")


def coarsen(image_kji: np.ndarray, factor: int) -> np.ndarray:
    """Block means of ``factor``-sided blocks (float32); the last partial block of each axis is
    averaged with zeros (air), as the patches are padded."""
    image = np.asarray(image_kji, dtype=np.float32)
    if factor == 1:
        return image
    padded_shape = [-(-n // factor) * factor for n in image.shape]
    padded = np.zeros(padded_shape, np.float32)
    padded[tuple(slice(0, n) for n in image.shape)] = image
    k, j, i = (n // factor for n in padded_shape)
    blocks = padded.reshape(k, factor, j, factor, i, factor)
    return np.asarray(blocks.mean(axis=(1, 3, 5)), dtype=np.float32)


def crop(
    volume: np.ndarray,
    centre: np.ndarray,
    shape: tuple[int, ...],
    dtype: np.typing.DTypeLike = np.float32,
) -> np.ndarray:
    """A copy of the ``shape`` box of ``volume`` whose middle voxel is ``centre`` (integers), as
    ``dtype``, 0 outside the volume."""
    start = np.asarray(centre) - np.asarray(shape) // 2
    out = np.zeros(shape, dtype)
    src, dst = [], []
    for a, n, m in zip(start, shape, volume.shape, strict=True):
        lo, hi = max(int(a), 0), min(int(a) + n, m)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - int(a), hi - int(a)))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def extract_patches(
    image_kji: np.ndarray,
    centres_kji: np.ndarray,
    spec: PatchSpec,
    coarse_kji: np.ndarray | None = None,
) -> np.ndarray:
    """``[n, 2, *spec.shape_kji]`` float32 patches centred on ``centres_kji`` (``[n, 3]``
    fractional ``k, j, i`` voxel indices; each centre is rounded to its nearest voxel).

    ``coarse_kji`` is ``coarsen(image_kji, spec.context_factor)``, passed in when several calls
    cut patches from the same volume.

    Raises:
        InputError: the image is not 3-D, or the centres are not finite ``[n, 3]``.
    """
    image = np.asarray(image_kji)
    centres = np.asarray(centres_kji, dtype=np.float64)
    if image.ndim != 3:
        raise InputError(f"patches need a 3-D image; got shape {image.shape}.")
    if centres.ndim != 2 or centres.shape[1] != 3 or not np.all(np.isfinite(centres)):
        raise InputError(f"patch centres must be finite [n, 3]; got shape {centres.shape}.")
    if coarse_kji is None:
        coarse_kji = coarsen(image, spec.context_factor)
    out = np.empty((len(centres), 2, *spec.shape_kji), np.float32)
    for n, centre in enumerate(centres):
        fine = np.rint(centre).astype(np.int64)
        out[n, 0] = crop(image, fine, spec.shape_kji)
        coarse = np.floor(centre / spec.context_factor).astype(np.int64)
        out[n, 1] = crop(coarse_kji, coarse, spec.shape_kji)
    return out
