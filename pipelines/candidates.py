"""Nodule candidates on a preprocessed chest CT: stage 1 of the two-stage detector (issue 14).

Stage 1 proposes a few hundred places per scan that may hold a nodule; stage 2 (a small 3-D
classifier on patches around them) decides. Whatever stage 1 misses, stage 2 never sees, so
stage 1 is built for recall at a bounded candidate budget, on the CPU, with numpy and scipy only:

1. **Lung mask.** Air (below ``air_threshold_hu``) not connected to the in-plane border of the
   volume (the air around the body), in components of at least ``min_lung_ml``, on a grid of
   about ``mask_step_mm``. A morphological closing of ``closing_mm`` (two distance transforms)
   and a per-slice hole fill put vessels, interior nodules and most of a nodule on the pleura
   (which replaces lung air up to the chest wall) inside the mask.
2. **Blob response.** On the lung's bounding box only, HU clipped to ``clip_hu`` (denser than
   ``clip_hu[1]`` all look alike: a solid nodule and a ground-glass one differ less, and the
   chest wall and mediastinum are flat), smoothed by a Gaussian of ``sigma`` millimetres per
   axis (the spacing is read from the affine), and the Hessian's eigenvalues
   ``e1 >= e2 >= e3``. ``response="dot"`` is the dot enhancement filter of Li, Sone and Doi
   (Med. Phys. 30(8), 2003): ``e1**2 / |e3|`` where all three are negative (a bright blob),
   0 elsewhere; it is ``|e|`` for a sphere and falls with elongation, so a vessel answers
   weakly. ``"log"`` is the negative Laplacian ``-(e1 + e2 + e3)`` (a plain blob detector, the
   baseline). Either is scale-normalised (times ``sigma**2``), so the scales compare, and is in
   HU: the clipped contrast of a ball at its best scale. Scales of several voxels are computed
   on a grid coarsened by block means, which keeps the large scales as cheap as the small.
3. **Candidates.** The local maxima of each scale (26-neighbourhood) that also beat the
   neighbouring scales at their place, whose centre lies in the lung mask or within
   ``accept_radius_factor`` times their estimated radius of its air (a lesion on the pleura
   whose centre the closing did not reach), ranked by response. A greedy non-maximum
   suppression across scales drops a maximum whose centre lies within ``nms_factor`` times the
   larger of the two radii of a stronger one. The estimated diameter is ``2 * sqrt(3) * sigma``,
   where a solid ball's normalised response peaks.

Two options aimed at the weak groups are off by default, because on the benchmark set neither
raised recall overall (``benchmarks/RESULTS.md``, "Nodule candidates"): ``opening_mm``, a
grey-level opening before the filter, which removes thin vessels and frees a nodule touching one
but erodes the smallest nodules as well; and ``blank_outside``, which shows the filter lung air
outside the filled mask, so that a nodule on the pleura becomes a whole blob, at the price of new
maxima along the mask's edge.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from pipelines.errors import InputError
from pipelines.transforms import PreprocessConfig

#: a solid ball of radius ``r`` has its largest scale-normalised response at ``sigma = r / sqrt 3``
DIAMETER_PER_SIGMA = 2.0 * math.sqrt(3.0)

_IN_PLANE = np.zeros((3, 3, 3), bool)
_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)


def _default_sigmas() -> tuple[float, ...]:
    return tuple(float(s) for s in np.round(np.geomspace(0.9, 9.0, 8), 3))


@dataclass(frozen=True)
class CandidateConfig:
    """Every choice of :func:`find_candidates` (see the module docstring for the method)."""

    #: Gaussian scales in mm; the estimated diameter is ``DIAMETER_PER_SIGMA`` times the scale.
    sigmas_mm: tuple[float, ...] = field(default_factory=_default_sigmas)
    #: the HU range the blob filter sees: lung air up to the density of faint ground glass.
    clip_hu: tuple[float, float] = (-1000.0, -500.0)
    response: Literal["dot", "log"] = "dot"
    #: > 0: a grey-level opening by a box reaching this far (mm, at least one voxel) on each
    #: side first: it removes vessels too thin to hold the box, and the branchings of those,
    #: and frees a nodule touching one. 0: none.
    opening_mm: float = 0.0
    #: True: outside the filled lung mask the filter sees lung air, so a nodule on the pleura
    #: stands out as a blob instead of a bump on the chest wall.
    blank_outside: bool = False
    #: False: no lung mask, the filter runs on the whole volume and every maximum counts.
    lung_mask: bool = True
    air_threshold_hu: float = -400.0
    #: air components smaller than this (bowel gas, a sinus) are not lung.
    min_lung_ml: float = 20.0
    #: radius of the closing that takes nodules on the pleura into the lung mask.
    closing_mm: float = 10.0
    #: the lung mask's grid is about this coarse (mm); it needs no finer detail.
    mask_step_mm: float = 2.0
    #: a maximum outside the mask counts when the lung's air is within this many radii.
    accept_radius_factor: float = 1.0
    #: a maximum within this many (larger) radii of a stronger kept one is suppressed.
    nms_factor: float = 1.0
    #: maxima weaker than this (HU of clipped contrast) are dropped before ranking.
    min_response: float = 5.0
    max_candidates: int = 400
    #: a maximum must also beat the neighbouring scales at its place (a scale-space maximum).
    scale_maxima: bool = True
    #: a scale is computed on a grid coarsened until it is about this many voxels.
    min_sigma_voxels: float = 1.0

    def __post_init__(self) -> None:
        if not self.sigmas_mm or min(self.sigmas_mm) <= 0:
            raise ValueError("sigmas_mm must hold at least one positive scale")
        if self.clip_hu[0] >= self.clip_hu[1]:
            raise ValueError("clip_hu must be (lower, upper) with lower < upper")
        if self.min_response <= 0:
            raise ValueError("min_response must be positive")
        if self.max_candidates < 1:
            raise ValueError("max_candidates must be at least 1")


@dataclass(frozen=True)
class Candidate:
    """One place that may hold a nodule.

    ``rank`` is 1-based in descending ``score`` order. ``center_ijk`` is the fractional (i, j, k)
    voxel index in the array the candidate was found in; ``diameter_mm`` is estimated from the
    scale of the strongest response; ``score`` is that response (HU of clipped contrast, not a
    probability).
    """

    rank: int
    center_ijk: tuple[float, float, float]
    center_lps_mm: tuple[float, float, float]
    diameter_mm: float
    score: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (tuples become lists)."""
        data = asdict(self)
        data["center_ijk"] = list(self.center_ijk)
        data["center_lps_mm"] = list(self.center_lps_mm)
        return data


@dataclass(frozen=True)
class _LungMask:
    """The filled lung mask on a coarse grid, and the distance (mm) to the lungs' air there.

    Coarse voxel ``c`` of the box stands for full-grid voxel ``(start + c) * step`` (per axis,
    ``[k, j, i]``).
    """

    filled: np.ndarray
    air_distance_mm: np.ndarray
    start: tuple[int, int, int]
    step: tuple[int, int, int]

    def full_box(self, shape: tuple[int, ...], margin: tuple[int, int, int]) -> tuple[slice, ...]:
        """The full-grid box around the filled mask, widened by ``margin`` voxels, or ()."""
        found = ndimage.find_objects(self.filled.astype(np.uint8))
        if not found or found[0] is None:
            return ()
        return tuple(
            slice(
                max((self.start[a] + s.start) * self.step[a] - margin[a], 0),
                min((self.start[a] + s.stop - 1) * self.step[a] + self.step[a] + margin[a], n),
            )
            for a, (s, n) in enumerate(zip(found[0], shape, strict=True))
        )

    def on_grid(self, box: tuple[slice, ...]) -> np.ndarray:
        """The filled mask on the full grid's ``box`` (nearest coarse voxel; False outside)."""
        grids = [
            np.rint(np.arange(b.start, b.stop) / step).astype(np.int64) - start
            for b, step, start in zip(box, self.step, self.start, strict=True)
        ]
        valid = [(g >= 0) & (g < n) for g, n in zip(grids, self.filled.shape, strict=True)]
        k, j, i = (np.flatnonzero(v) for v in valid)
        out = np.zeros([b.stop - b.start for b in box], bool)
        out[np.ix_(k, j, i)] = self.filled[np.ix_(grids[0][k], grids[1][j], grids[2][i])]
        return out

    def accepts(self, kji: np.ndarray, radius_mm: np.ndarray, factor: float) -> np.ndarray:
        """Which full-grid points ``(n, 3)`` lie in the mask, or near enough the lungs' air."""
        index = np.rint(kji / np.asarray(self.step)).astype(np.int64) - np.asarray(self.start)
        inside = np.all((index >= 0) & (index < np.asarray(self.filled.shape)), axis=1)
        ok = np.zeros(len(kji), bool)
        k, j, i = index[inside].T
        ok[inside] = self.filled[k, j, i] | (
            self.air_distance_mm[k, j, i] <= factor * radius_mm[inside]
        )
        return ok


def find_candidates(
    image_kji: np.ndarray,
    affine_lps: np.ndarray,
    config: CandidateConfig | None = None,
    *,
    window_hu: tuple[float, float] = PreprocessConfig().window_hu,
) -> list[Candidate]:
    """Nodule candidates of a preprocessed volume, best first (see the module docstring).

    Args:
        image_kji: the preprocessed image ``[k, j, i]``, HU windowed to ``window_hu`` and scaled
            to ``[0, 1]`` (as :func:`pipelines.transforms.preprocess_volume` and the prepared
            cache hold it; float16 is accepted).
        affine_lps: ``[4, 4]`` map from voxel ``(i, j, k, 1)`` to LPS mm; the spacing is read
            from it.
        config: the method's choices; defaults when None.
        window_hu: the window the image was scaled from (the preprocessing's ``window_hu``).

    Returns:
        At most ``config.max_candidates`` candidates in descending score order, ranks ``1..n``;
        empty when the volume holds no lung.

    Raises:
        InputError: the image is not a 3-D array of finite numbers, or the affine is not a
            finite, invertible 4 x 4 matrix.
    """
    config = config or CandidateConfig()
    hu, affine, spacing = _hu_volume(image_kji, affine_lps, window_hu)
    if config.lung_mask:
        lungs = _lung_mask(hu, spacing, config)
        if lungs is None:
            return []
        margin = tuple(math.ceil(config.closing_mm / s) for s in spacing)
        box = lungs.full_box(hu.shape, (margin[0], margin[1], margin[2]))
        if not box:
            return []
    else:
        lungs = None
        box = tuple(slice(0, n) for n in hu.shape)
    region = hu[box]
    if config.opening_mm > 0:
        size = [2 * max(1, round(config.opening_mm / s)) + 1 for s in spacing]
        region = ndimage.grey_opening(region, size=size)
    clipped = np.clip(region, *config.clip_hu)
    if lungs is not None and config.blank_outside:
        inside = lungs.on_grid(box)
        clipped[~inside] = np.median(clipped[inside]) if inside.any() else config.clip_hu[0]
    offset = np.array([s.start for s in box], np.float64)
    points, sigmas, scores = _maxima(clipped, spacing, config)
    points += offset
    radius = sigmas * (DIAMETER_PER_SIGMA / 2.0)
    if lungs is not None:
        keep = lungs.accepts(points, radius, config.accept_radius_factor)
        points, sigmas, scores, radius = points[keep], sigmas[keep], scores[keep], radius[keep]
    chosen = _suppress(points * np.asarray(spacing), radius, scores, config)
    ijk = points[chosen][:, ::-1]
    lps = ijk @ affine[:3, :3].T + affine[:3, 3]
    return [
        Candidate(
            rank=rank,
            center_ijk=_triple(ijk[n]),
            center_lps_mm=_triple(lps[n]),
            diameter_mm=float(2.0 * radius[c]),
            score=float(scores[c]),
        )
        for rank, (n, c) in enumerate(enumerate(chosen), start=1)
    ]


def lung_mask(
    image_kji: np.ndarray,
    affine_lps: np.ndarray,
    config: CandidateConfig | None = None,
    *,
    window_hu: tuple[float, float] = PreprocessConfig().window_hu,
) -> np.ndarray:
    """The filled lung mask :func:`find_candidates` uses, on the image's own grid (bool
    ``[k, j, i]``; nearest neighbour from the mask's coarser grid): to look at, and to test.

    Raises:
        InputError: as :func:`find_candidates`.
    """
    config = config or CandidateConfig()
    hu, _, spacing = _hu_volume(image_kji, affine_lps, window_hu)
    lungs = _lung_mask(hu, spacing, config)
    if lungs is None:
        return np.zeros(hu.shape, bool)
    return lungs.on_grid(tuple(slice(0, n) for n in hu.shape))


def _hu_volume(
    image_kji: np.ndarray, affine_lps: np.ndarray, window_hu: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """The checked input back in HU (float32), its affine (float64) and ``[k, j, i]`` spacing."""
    image = np.asarray(image_kji)
    affine = np.asarray(affine_lps, dtype=np.float64)
    spacing = _check_input(image, affine)
    lower, upper = window_hu
    hu = image.astype(np.float32) * np.float32(upper - lower) + np.float32(lower)
    return hu, affine, spacing


def _check_input(image: np.ndarray, affine: np.ndarray) -> tuple[float, float, float]:
    """The ``[k, j, i]`` spacing in mm, after refusing what the filter cannot use."""
    if image.ndim != 3 or min(image.shape) < 1:
        raise InputError(
            f"Candidates need a 3-D image [k, j, i]; got shape {image.shape}.",
            shape=list(image.shape),
        )
    if not np.issubdtype(image.dtype, np.number) or not np.all(np.isfinite(image)):
        raise InputError("The image holds values that are not finite numbers.", field="image")
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise InputError("The affine must be a finite 4 x 4 matrix.", field="affine_lps")
    norms = np.linalg.norm(affine[:3, :3], axis=0)
    if abs(float(np.linalg.det(affine[:3, :3]))) < 1e-9 or np.any(norms <= 0):
        raise InputError("The affine is not invertible (a zero voxel size).", field="affine_lps")
    return float(norms[2]), float(norms[1]), float(norms[0])


def _lung_mask(
    hu: np.ndarray, spacing: tuple[float, float, float], config: CandidateConfig
) -> _LungMask | None:
    """The filled lungs on a grid of about ``config.mask_step_mm`` (None: no lung found)."""
    step = tuple(max(1, round(config.mask_step_mm / s)) for s in spacing)
    coarse_mm = tuple(s * n for s, n in zip(spacing, step, strict=True))
    air = hu[:: step[0], :: step[1], :: step[2]] < config.air_threshold_hu
    labels, count = ndimage.label(air)
    if count == 0:
        return None
    faces = (labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1])
    border = np.unique(np.concatenate([face.ravel() for face in faces]))
    sizes = np.bincount(labels.ravel(), minlength=count + 1).astype(np.float64)
    sizes[0] = 0
    sizes[border] = 0
    voxel_ml = float(np.prod(coarse_mm)) / 1000.0
    biggest = float(sizes.max())
    if biggest * voxel_ml < config.min_lung_ml:
        return None
    keep = sizes >= max(config.min_lung_ml / voxel_ml, 0.1 * biggest)
    lungs = keep[labels]
    found = ndimage.find_objects(lungs.astype(np.uint8))[0]
    pad = [math.ceil(config.closing_mm / mm) + 1 for mm in coarse_mm]
    box = tuple(
        slice(max(s.start - p, 0), min(s.stop + p, n))
        for s, p, n in zip(found, pad, lungs.shape, strict=True)
    )
    inner = lungs[box]
    air_distance = ndimage.distance_transform_edt(~inner, sampling=coarse_mm).astype(np.float32)
    filled = inner.copy()
    if config.closing_mm > 0:
        grown = air_distance <= config.closing_mm
        filled |= ndimage.distance_transform_edt(grown, sampling=coarse_mm) > config.closing_mm
    filled = ndimage.binary_fill_holes(filled, structure=_IN_PLANE)
    return _LungMask(
        filled=filled,
        air_distance_mm=air_distance,
        start=(box[0].start, box[1].start, box[2].start),
        step=(step[0], step[1], step[2]),
    )


def _maxima(
    clipped: np.ndarray, spacing: tuple[float, float, float], config: CandidateConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local maxima of every scale: positions ``(n, 3)`` (fractional ``[k, j, i]`` voxels of
    ``clipped``), their scale (mm) and their response.

    With ``config.scale_maxima`` a maximum must also be at least the response of the scales
    next to its own at the same place, so that the rim of a large blob, a maximum at a small
    scale, does not come back as a candidate of its own.
    """
    maps: list[tuple[np.ndarray, np.ndarray]] = []
    for sigma in config.sigmas_mm:
        step = tuple(max(1, math.floor(sigma / (s * config.min_sigma_voxels))) for s in spacing)
        coarse = _block_mean(clipped, (step[0], step[1], step[2]))
        widths = [
            max(math.sqrt(max((sigma / s) ** 2 - (n * n - 1) / 12.0, 0.0)) / n, _MIN_WIDTH_VOXELS)
            for s, n in zip(spacing, step, strict=True)
        ]
        smooth = ndimage.gaussian_filter(coarse, widths, mode="nearest", truncate=3.0)
        h = tuple(s * n for s, n in zip(spacing, step, strict=True))
        response = _response(smooth, (h[0], h[1], h[2]), config) * np.float32(sigma**2)
        maps.append((response, np.asarray(step, np.float64)))
    points, sigmas, scores = [], [], []
    for index, (sigma, (response, scale)) in enumerate(zip(config.sigmas_mm, maps, strict=True)):
        where, value = _local_maxima(response, config.min_response)
        place = where * scale + (scale - 1.0) / 2.0
        if config.scale_maxima:
            keep = np.ones(len(value), bool)
            for other in (index - 1, index + 1):
                if 0 <= other < len(maps):
                    keep &= value >= _sample(*maps[other], place)
            place, value = place[keep], value[keep]
        points.append(place)
        sigmas.append(np.full(len(value), sigma))
        scores.append(value)
    return np.concatenate(points), np.concatenate(sigmas), np.concatenate(scores)


def _sample(response: np.ndarray, scale: np.ndarray, place: np.ndarray) -> np.ndarray:
    """``response`` (on a grid ``scale`` times coarser) at the nearest voxel to each of the
    full-grid points ``place`` ``(n, 3)``."""
    index = np.rint((place - (scale - 1.0) / 2.0) / scale).astype(np.int64)
    index = np.clip(index, 0, np.asarray(response.shape) - 1)
    return response[tuple(index.T)].astype(np.float64)


def _block_mean(array: np.ndarray, step: tuple[int, int, int]) -> np.ndarray:
    """Means of ``step``-sized blocks (the last, partial block padded by its edge values)."""
    if step == (1, 1, 1):
        return array
    pads = [(0, (-n) % s) for n, s in zip(array.shape, step, strict=True)]
    padded = np.pad(array, pads, mode="edge")
    k, j, i = (n // s for n, s in zip(padded.shape, step, strict=True))
    blocks = padded.reshape(k, step[0], j, step[1], i, step[2])
    return blocks.mean(axis=(1, 3, 5), dtype=np.float32)


#: a narrower Gaussian (in voxels of the grid it runs on) hardly smooths: aliasing would pass
_MIN_WIDTH_VOXELS = 0.5

#: slices of the response computed at once: bounds the temporaries of the Hessian.
_SLAB = 24


def _response(
    smooth: np.ndarray, h: tuple[float, float, float], config: CandidateConfig
) -> np.ndarray:
    """The (not yet scale-normalised) blob response of a smoothed array, 0 at its faces."""
    out = np.zeros(smooth.shape, np.float32)
    n = smooth.shape[0]
    if min(smooth.shape) < 3:
        return out
    for k0 in range(1, n - 1, _SLAB):
        k1 = min(k0 + _SLAB, n - 1)
        out[k0:k1, 1:-1, 1:-1] = _slab_response(smooth[k0 - 1 : k1 + 1], h, config)
    return out


def _slab_response(
    f: np.ndarray, h: tuple[float, float, float], config: CandidateConfig
) -> np.ndarray:
    """The response on the interior of slab ``f`` (central differences of spacing ``h``)."""
    c = f[1:-1, 1:-1, 1:-1]
    hkk = (f[2:, 1:-1, 1:-1] + f[:-2, 1:-1, 1:-1] - 2 * c) / np.float32(h[0] ** 2)
    hjj = (f[1:-1, 2:, 1:-1] + f[1:-1, :-2, 1:-1] - 2 * c) / np.float32(h[1] ** 2)
    hii = (f[1:-1, 1:-1, 2:] + f[1:-1, 1:-1, :-2] - 2 * c) / np.float32(h[2] ** 2)
    if config.response == "log":
        return np.maximum(-(hkk + hjj + hii), 0.0)
    hkj = (f[2:, 2:, 1:-1] - f[2:, :-2, 1:-1] - f[:-2, 2:, 1:-1] + f[:-2, :-2, 1:-1]) / np.float32(
        4.0 * h[0] * h[1]
    )
    hki = (f[2:, 1:-1, 2:] - f[2:, 1:-1, :-2] - f[:-2, 1:-1, 2:] + f[:-2, 1:-1, :-2]) / np.float32(
        4.0 * h[0] * h[2]
    )
    hji = (f[1:-1, 2:, 2:] - f[1:-1, 2:, :-2] - f[1:-1, :-2, 2:] + f[1:-1, :-2, :-2]) / np.float32(
        4.0 * h[1] * h[2]
    )
    # the Hessian is negative definite (a bright blob) where its leading minors alternate in sign
    det2 = hkk * hjj - hkj * hkj
    det3 = hkk * (hjj * hii - hji * hji) - hkj * (hkj * hii - hji * hki)
    det3 += hki * (hkj * hji - hjj * hki)
    blob = (hkk < 0) & (det2 > 0) & (det3 < 0)
    out = np.zeros(c.shape, np.float32)
    if not blob.any():
        return out
    parts = [a[blob].astype(np.float64) for a in (hkk, hjj, hii, hkj, hki, hji)]
    largest, smallest = _extreme_eigenvalues(*parts)
    out[blob] = (largest * largest / np.maximum(-smallest, 1e-12)).astype(np.float32)
    return out


def _extreme_eigenvalues(
    a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, e: np.ndarray, f: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Largest and smallest eigenvalue of the symmetric matrices ``[[a, d, e], [d, b, f],
    [e, f, c]]``, in closed form (the trigonometric solution of the characteristic cubic)."""
    q = (a + b + c) / 3.0
    off = d * d + e * e + f * f
    p = np.sqrt(((a - q) ** 2 + (b - q) ** 2 + (c - q) ** 2 + 2.0 * off) / 6.0)
    safe = np.where(p > 0, p, 1.0)
    ba, bb, bc = (a - q) / safe, (b - q) / safe, (c - q) / safe
    bd, be, bf = d / safe, e / safe, f / safe
    r = (ba * (bb * bc - bf * bf) - bd * (bd * bc - bf * be) + be * (bd * bf - bb * be)) / 2.0
    phi = np.arccos(np.clip(r, -1.0, 1.0)) / 3.0
    largest = q + 2.0 * p * np.cos(phi)
    smallest = q + 2.0 * p * np.cos(phi + 2.0 * np.pi / 3.0)
    return largest, smallest


def _local_maxima(response: np.ndarray, minimum: float) -> tuple[np.ndarray, np.ndarray]:
    """Voxels ``(n, 3)`` at least ``minimum`` (> 0) and not below any 26-neighbour, refined to
    sub-voxel positions by a parabola per axis, and their values.

    Only the voxels at least ``minimum`` are compared with their neighbours (a few percent of
    the volume), which costs far less than a maximum filter over it. The response is 0 on the
    array's faces, so every voxel compared is interior and its neighbours exist.
    """
    flat = response.ravel()
    index = np.flatnonzero(flat >= minimum)
    values = flat[index]
    strides = np.array(response.strides) // response.itemsize
    for offset in itertools.product((-1, 0, 1), repeat=3):
        if offset != (0, 0, 0):
            shift = int(np.dot(offset, strides))
            keep = values >= flat[index + shift]
            index, values = index[keep], values[keep]
    where = np.column_stack(np.unravel_index(index, response.shape))
    refined = where.astype(np.float64)
    for axis in range(3):
        low = flat[index - strides[axis]].astype(np.float64)
        high = flat[index + strides[axis]].astype(np.float64)
        curve = low - 2.0 * values + high
        vertex = np.where(curve < 0, 0.5 * (low - high) / np.where(curve < 0, curve, -1.0), 0.0)
        refined[:, axis] += np.clip(vertex, -0.5, 0.5)
    return refined, values.astype(np.float64)


def _suppress(
    points_mm: np.ndarray, radius_mm: np.ndarray, scores: np.ndarray, config: CandidateConfig
) -> list[int]:
    """Greedy non-maximum suppression: indices of the kept maxima, strongest first."""
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    kept_points = np.empty((config.max_candidates, 3))
    kept_radius = np.empty(config.max_candidates)
    for index in order:
        n = len(kept)
        if n:
            gap = np.linalg.norm(kept_points[:n] - points_mm[index], axis=1)
            reach = config.nms_factor * np.maximum(kept_radius[:n], radius_mm[index])
            if np.any(gap < reach):
                continue
        kept_points[n], kept_radius[n] = points_mm[index], radius_mm[index]
        kept.append(int(index))
        if len(kept) == config.max_candidates:
            break
    return kept


def _triple(values: np.ndarray) -> tuple[float, float, float]:
    return (float(values[0]), float(values[1]), float(values[2]))
