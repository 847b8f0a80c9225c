"""The one preprocessing definition shared by training, validation, inference and export.

A CT :class:`~pipelines.volume.Volume` goes through four steps, always in this order:

1. **Reorient** (no interpolation): permute and flip the array axes so that voxel axis ``i``, ``j``
   and ``k`` increase toward the directions named by ``config.orientation`` (default ``"LPS"``:
   i toward the patient's left, j posterior, k superior, which is how a head-first supine axial
   series is already stored, so the common case costs nothing). Feet-first and mirrored series
   become indistinguishable from head-first ones.
2. **Resample** the HU values to ``config.target_spacing_mm``: trilinear, exactly as
   :func:`torch.nn.functional.interpolate` with ``align_corners=False`` and a fixed scale factor
   computes it, done in numpy one axis at a time so that inference needs no torch. Voxel *edges*
   of the output grid line up with the input's: output index ``o`` samples input index
   ``(o + 0.5) * r - 0.5`` with ``r = target / source spacing``, so the output spacing is exactly
   the configured one. Labels use ``nearest-exact``, which picks the input voxel that contains
   that same point, so image and label stay aligned.
3. **Crop** to the body: the largest connected region above ``body_threshold_hu`` (the table and
   air outside are dropped) plus ``crop_margin_mm``.
4. **Window**: clip to ``window_hu`` and scale linearly to ``[0, 1]``.

Every step is an affine change of voxel index, so :class:`PreprocessGeometry` records one
output affine (output voxel ``(i, j, k, 1)`` → LPS mm) and can map any finding back to source
voxels and to LPS millimetres exactly.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from scipy import ndimage

from pipelines.volume import Volume

#: Anatomical direction letter → (LPS world axis, sign).
_DIRECTIONS: dict[str, tuple[int, int]] = {
    "L": (0, 1),
    "R": (0, -1),
    "P": (1, 1),
    "A": (1, -1),
    "S": (2, 1),
    "I": (2, -1),
}


class CropMode(StrEnum):
    """How the resampled volume is cropped before windowing."""

    NONE = "none"
    BODY = "body"


class PreprocessConfig(BaseModel):
    """Every choice that turns a HU volume into network input; stored in the model bundle.

    ``target_spacing_mm`` is ``(i, j, k)``. The default 1.0 x 1.0 x 1.5 mm keeps a 3 mm nodule at
    three voxels in-plane and two along z, matches the 1-1.5 mm reconstructions chest CT is read
    at, and holds a 512 x 512 x 250 study at 0.7 mm to about 360 x 360 x 210 voxels: a third
    fewer than isotropic 1 mm with no loss for lesions of the sizes screening reports.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.5)
    #: three letters from L/R, P/A, S/I: the direction voxel axes i, j, k increase toward.
    orientation: str = "LPS"
    window_hu: tuple[float, float] = (-1000.0, 400.0)
    crop: CropMode = CropMode.BODY
    body_threshold_hu: float = -500.0
    crop_margin_mm: float = Field(default=10.0, ge=0)

    @field_validator("target_spacing_mm")
    @classmethod
    def _positive_spacing(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(value) <= 0:
            raise ValueError("target_spacing_mm values must be positive")
        return value

    @field_validator("orientation")
    @classmethod
    def _valid_orientation(cls, value: str) -> str:
        code = value.upper()
        axes = sorted(_DIRECTIONS[c][0] for c in code if c in _DIRECTIONS)
        if len(code) != 3 or axes != [0, 1, 2]:
            raise ValueError("orientation must name one of L/R, P/A and S/I each, e.g. 'LPS'")
        return code

    @model_validator(mode="after")
    def _valid_window(self) -> PreprocessConfig:
        if self.window_hu[0] >= self.window_hu[1]:
            raise ValueError("window_hu must be (lower, upper) with lower < upper")
        return self


class LungCropConfig(BaseModel):
    """Where inference runs inside the preprocessed volume: the box around the lungs.

    An inference-time choice, not part of the network's input contract: it decides which
    windows run, not what a window holds (see :func:`lung_box`; the bundle keeps it in
    ``inference.lung_crop``). ``margin_mm`` is added on every side of the air box, so a lesion
    attached to the pleura, which replaces lung air up to the chest wall, stays inside with the
    wall behind it as context.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    #: voxels below this are air (lung parenchyma is about -900 to -700 HU, soft tissue above -200).
    air_threshold_hu: float = -400.0
    margin_mm: float = Field(default=10.0, ge=0)
    #: enclosed air regions smaller than this (gas in the bowel, a sinus) do not widen the box.
    min_volume_ml: float = Field(default=20.0, ge=0)


@dataclass(frozen=True)
class PreprocessGeometry:
    """How the output grid relates to the source volume; enough to map results back.

    Shapes are array order ``(k, j, i)``; ``axes[n]`` is the source voxel axis that output voxel
    axis ``n`` (0 = i, 1 = j, 2 = k) was taken from, reversed where ``flips[n]``. The crop box is
    ``[crop_start_ijk, crop_stop_ijk)`` in the resampled, uncropped grid.
    """

    source_shape: tuple[int, int, int]
    source_affine_lps: np.ndarray
    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    resampled_shape: tuple[int, int, int]
    crop_start_ijk: tuple[int, int, int]
    crop_stop_ijk: tuple[int, int, int]
    affine_lps: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        """Output array shape ``(k, j, i)``."""
        start, stop = self.crop_start_ijk, self.crop_stop_ijk
        return stop[2] - start[2], stop[1] - start[1], stop[0] - start[0]

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Output voxel size along ``(i, j, k)``."""
        norms = np.linalg.norm(self.affine_lps[:3, :3], axis=0)
        return float(norms[0]), float(norms[1]), float(norms[2])

    def output_ijk_to_lps(self, ijk: np.ndarray) -> np.ndarray:
        """Output voxel indices ``(..., 3)`` in (i, j, k) order → LPS millimetres."""
        return _apply(self.affine_lps, ijk)

    def lps_to_output_ijk(self, lps_mm: np.ndarray) -> np.ndarray:
        """LPS millimetres ``(..., 3)`` → fractional output voxel indices (i, j, k)."""
        return _apply(np.linalg.inv(self.affine_lps), lps_mm)

    def output_to_source_ijk(self, ijk: np.ndarray) -> np.ndarray:
        """Output voxel indices → fractional source voxel indices, both (i, j, k)."""
        return _apply(np.linalg.inv(self.source_affine_lps) @ self.affine_lps, ijk)

    def source_to_output_ijk(self, ijk: np.ndarray) -> np.ndarray:
        """Source voxel indices → fractional output voxel indices, both (i, j, k)."""
        return _apply(np.linalg.inv(self.affine_lps) @ self.source_affine_lps, ijk)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe form, for caches and result files."""
        return {
            "source_shape": list(self.source_shape),
            "source_affine_lps": self.source_affine_lps.tolist(),
            "axes": list(self.axes),
            "flips": list(self.flips),
            "resampled_shape": list(self.resampled_shape),
            "crop_start_ijk": list(self.crop_start_ijk),
            "crop_stop_ijk": list(self.crop_stop_ijk),
            "affine_lps": self.affine_lps.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessGeometry:
        """Inverse of :meth:`to_dict`."""

        def triple(key: str) -> Any:
            return tuple(data[key])

        return cls(
            source_shape=triple("source_shape"),
            source_affine_lps=np.asarray(data["source_affine_lps"], float),
            axes=triple("axes"),
            flips=tuple(bool(f) for f in data["flips"]),  # type: ignore[arg-type]
            resampled_shape=triple("resampled_shape"),
            crop_start_ijk=triple("crop_start_ijk"),
            crop_stop_ijk=triple("crop_stop_ijk"),
            affine_lps=np.asarray(data["affine_lps"], float),
        )


@dataclass(frozen=True)
class PreprocessedVolume:
    """Network input (windowed to ``[0, 1]``, float32 ``(k, j, i)``) and its geometry."""

    array: np.ndarray
    geometry: PreprocessGeometry

    @property
    def affine_lps(self) -> np.ndarray:
        """Output voxel ``(i, j, k, 1)`` → LPS mm."""
        return self.geometry.affine_lps


def preprocess_volume(volume: Volume, config: PreprocessConfig) -> PreprocessedVolume:
    """Reorient, resample, crop and window ``volume`` as ``config`` says (see module docstring).

    With the body crop, only the part of the output grid around the body is resampled: the air
    outside it would be cropped anyway (:func:`_body_window`). The result is the same, voxel for
    voxel, as resampling everything and cropping afterwards.
    """
    axes, flips = plan_reorientation(volume.affine_lps, config.orientation)
    array = reorient_array(volume.array_hu.astype(np.float32, copy=False), axes, flips)
    affine = volume.affine_lps @ _reorientation_matrix(volume.shape, axes, flips)
    ratios = _spacing_ratios(affine, config.target_spacing_mm)
    affine = affine @ _resampling_matrix(ratios)
    shape = _resampled_shape(_shape3(array.shape), ratios)
    if config.crop is CropMode.BODY:
        start, stop, cropped = _body_crop(array, ratios, shape, config)
    else:
        start, stop = (0, 0, 0), (shape[2], shape[1], shape[0])
        cropped = _resample(array, ratios, mode="trilinear")
    geometry = PreprocessGeometry(
        source_shape=volume.shape,
        source_affine_lps=np.asarray(volume.affine_lps, float),
        axes=axes,
        flips=flips,
        resampled_shape=shape,
        crop_start_ijk=start,
        crop_stop_ijk=stop,
        affine_lps=affine @ _translation(start),
    )
    return PreprocessedVolume(window(cropped, config.window_hu), geometry)


def _body_crop(
    array: np.ndarray,
    ratios: tuple[float, float, float],
    shape: tuple[int, int, int],
    config: PreprocessConfig,
) -> tuple[tuple[int, int, int], tuple[int, int, int], np.ndarray]:
    """The body box with its margin on the resampled grid ``shape`` (``start_ijk``,
    ``stop_ijk``) and the resampled HU inside it.

    The box is :func:`body_box` of the whole resampled grid plus the margin. It is found on the
    window :func:`_body_window` estimates from the source; when the box it finds there is not
    enclosed by that window (the estimate missed part of the body), the whole grid is resampled
    instead, so the answer never depends on the estimate.
    """
    estimate = _body_window(array, ratios, shape, config)
    if estimate is not None:
        part = _resample(array, ratios, mode="trilinear", window=estimate)
        found = body_box(part, config.body_threshold_hu)
        origin = (estimate[2][0], estimate[1][0], estimate[0][0])
        inner_start = tuple(found[0][n] + origin[n] for n in range(3))
        inner_stop = tuple(found[1][n] + origin[n] for n in range(3))
        start, stop = _add_margin(_ijk(inner_start), _ijk(inner_stop), shape, config)
        if _encloses(estimate, inner_start, inner_stop, start, stop, shape):
            return start, stop, part[_box_slices(start, stop, origin)]
    resampled = _resample(array, ratios, mode="trilinear")
    start, stop = _add_margin(*body_box(resampled, config.body_threshold_hu), shape, config)
    return start, stop, resampled[_box_slices(start, stop, (0, 0, 0))]


def _body_window(
    array: np.ndarray,
    ratios: tuple[float, float, float],
    shape: tuple[int, int, int],
    config: PreprocessConfig,
) -> tuple[tuple[int, int], ...] | None:
    """Output ranges ``[(start, stop)]`` per ``(k, j, i)`` axis that hold the body, its crop
    margin and a few voxels more; starts are even, so that :func:`body_box`'s every-second-voxel
    grid on the window is the whole grid's. None when no voxel is above the body threshold (the
    whole grid is then resampled).

    Estimated on every fourth source voxel of every axis (a sixteenth of the rows to read).
    Sampled so coarsely, the body and a table or an arm under it may swap ranks, so the window
    holds every region at least an eighth the size of the largest; :func:`body_box` then picks
    the body on the finer grid, and :func:`_body_crop` checks that it lies whole in the window.
    """
    step = _BODY_ESTIMATE_STEP
    coarse = np.asarray(array[::step, ::step, ::step]) > config.body_threshold_hu
    labels, count = ndimage.label(coarse)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    regions = [
        found
        for label, found in enumerate(ndimage.find_objects(labels), start=1)
        if found is not None and sizes[label] * 8 >= sizes.max()
    ]
    box = [
        slice(min(r[axis].start for r in regions), max(r[axis].stop for r in regions))
        for axis in range(3)
    ]
    ratios_kji = (ratios[2], ratios[1], ratios[0])
    spacing_kji = tuple(reversed(config.target_spacing_mm))
    ranges = []
    for axis in range(3):
        ratio, size = ratios_kji[axis], shape[axis]
        # source voxels the body may reach, one sample step either side, and one for the
        # interpolation's neighbour; then the output voxels whose samples fall among them.
        first_source = box[axis].start * step - step
        last_source = box[axis].stop * step + 1
        pad = math.ceil(config.crop_margin_mm / spacing_kji[axis]) + 3
        first = math.floor((first_source + 0.5) / ratio - 0.5) - pad
        last = math.ceil((last_source + 0.5) / ratio - 0.5) + pad
        first = max(0, first - first % 2)
        ranges.append((first, min(size, last + 1)))
    if any(first >= stop for first, stop in ranges):
        return None  # no output voxel samples the estimated body: resample the whole grid
    return tuple(ranges)


#: every how many source voxels :func:`_body_window` looks.
_BODY_ESTIMATE_STEP = 4


def _encloses(
    window_kji: tuple[tuple[int, int], ...],
    inner_start: tuple[int, ...],
    inner_stop: tuple[int, ...],
    start: tuple[int, int, int],
    stop: tuple[int, int, int],
    shape: tuple[int, int, int],
) -> bool:
    """Whether the body found in the window is whole there (it stops short of every window side
    that is not the grid's own) and its crop, margin included, lies inside the window."""
    for n in range(3):
        lo, hi = window_kji[2 - n]
        size = shape[2 - n]
        if (lo > 0 and inner_start[n] <= lo) or (hi < size and inner_stop[n] >= hi):
            return False
        if start[n] < lo or stop[n] > hi:
            return False
    return True


def _box_slices(
    start: tuple[int, int, int], stop: tuple[int, int, int], origin: tuple[int, int, int]
) -> tuple[slice, slice, slice]:
    """Array slices ``[k, j, i]`` of the ``(i, j, k)`` box ``[start, stop)`` in an array whose
    first voxel is ``origin``."""
    return (
        slice(start[2] - origin[2], stop[2] - origin[2]),
        slice(start[1] - origin[1], stop[1] - origin[1]),
        slice(start[0] - origin[0], stop[0] - origin[0]),
    )


def _ijk(values: tuple[int, ...]) -> tuple[int, int, int]:
    return int(values[0]), int(values[1]), int(values[2])


def preprocess_label(label: np.ndarray, geometry: PreprocessGeometry) -> np.ndarray:
    """Bring a label aligned to the source volume onto the output grid of ``geometry``.

    ``label`` is ``(k, j, i)`` with the source volume's shape; values are kept (nearest
    neighbour). Returns uint8 of shape ``geometry.shape``.
    """
    if tuple(label.shape) != geometry.source_shape:
        raise ValueError(f"label shape {label.shape} != source shape {geometry.source_shape}")
    array = reorient_array(np.asarray(label, np.uint8), geometry.axes, geometry.flips)
    source_affine = geometry.source_affine_lps
    affine = source_affine @ _reorientation_matrix(
        geometry.source_shape, geometry.axes, geometry.flips
    )
    ratios = _spacing_ratios(affine, geometry.spacing_mm)
    resampled = _resample(array, ratios, mode="nearest-exact")
    start, stop = geometry.crop_start_ijk, geometry.crop_stop_ijk
    return np.ascontiguousarray(
        resampled[start[2] : stop[2], start[1] : stop[1], start[0] : stop[0]]
    )


def label_to_source(label: np.ndarray, geometry: PreprocessGeometry) -> np.ndarray:
    """Map an output-grid label ``(k, j, i)`` back onto the source grid (nearest neighbour).

    Each source voxel takes the value of the output voxel containing its centre; voxels outside
    the crop box are 0. Used to write masks in the source geometry (DICOM SEG). Only the source
    voxels that fall in the bounding box of the labelled voxels are looked up, so a few findings
    cost milliseconds, not a pass over the whole series.
    """
    if tuple(label.shape) != geometry.shape:
        raise ValueError(f"label shape {label.shape} != output shape {geometry.shape}")
    out = np.zeros(geometry.source_shape, dtype=np.uint8)
    labelled = ndimage.find_objects((label != 0).astype(np.uint8))
    if not labelled:
        return out
    box_kji = labelled[0]
    # Reorientation, resampling and crop are per-axis, so this matrix is a signed permutation
    # with scales and offsets: each output axis n depends on source axis axes[n] only, and
    # monotonically, so the source voxels landing in the box form one run per axis.
    to_output = np.linalg.inv(geometry.affine_lps) @ geometry.source_affine_lps
    index, source_box = [], [slice(0, 0)] * 3
    for n in range(3):
        axis = geometry.axes[n]
        centres = np.arange(geometry.source_shape[2 - axis], dtype=float)
        nearest = np.floor(to_output[n, axis] * centres + to_output[n, 3] + 0.5).astype(np.int64)
        span = box_kji[2 - n]
        run = np.flatnonzero((nearest >= span.start) & (nearest < span.stop))
        if run.size == 0:
            return out
        index.append(nearest[run[0] : run[-1] + 1])
        source_box[2 - axis] = slice(int(run[0]), int(run[-1]) + 1)
    gathered = label[np.ix_(index[2], index[1], index[0])].astype(np.uint8)
    # gathered axis m holds source voxel axis axes[2 - m], whose source array axis is 2 - that.
    order = [0, 0, 0]
    for m in range(3):
        order[2 - geometry.axes[2 - m]] = m
    out[tuple(source_box)] = np.transpose(gathered, order)
    return out


def window(array_hu: np.ndarray, window_hu: tuple[float, float]) -> np.ndarray:
    """Clip HU to ``window_hu`` and scale linearly so that the window maps to ``[0, 1]``."""
    lower, upper = window_hu
    scaled = (np.asarray(array_hu, np.float32) - np.float32(lower)) / np.float32(upper - lower)
    return np.clip(scaled, 0.0, 1.0, out=scaled)


def plan_reorientation(
    affine_lps: np.ndarray, orientation: str
) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """Choose the axis permutation and flips closest to ``orientation`` for ``affine_lps``.

    Returns ``(axes, flips)``: output voxel axis ``n`` is source axis ``axes[n]``, reversed where
    ``flips[n]``. Oblique directions go to the nearest axis; the residual rotation stays in the
    affine, so no accuracy is lost.
    """
    cosines = affine_lps[:3, :3] / np.linalg.norm(affine_lps[:3, :3], axis=0)
    targets = [_DIRECTIONS[c] for c in orientation.upper()]
    best: tuple[float, tuple[int, ...]] = (-1.0, (0, 1, 2))
    for perm in itertools.permutations(range(3)):
        score = sum(abs(cosines[targets[n][0], perm[n]]) for n in range(3))
        if score > best[0] + 1e-9:
            best = (score, perm)
    axes = best[1]
    flips = tuple(bool(np.sign(cosines[targets[n][0], axes[n]]) != targets[n][1]) for n in range(3))
    return (axes[0], axes[1], axes[2]), (flips[0], flips[1], flips[2])


def reorient_array(
    array: np.ndarray, axes: tuple[int, int, int], flips: tuple[bool, bool, bool]
) -> np.ndarray:
    """Permute and flip a ``(k, j, i)`` array as :func:`plan_reorientation` planned (a view)."""
    # array axis of voxel axis a is 2 - a; output array order is (k', j', i').
    out = np.transpose(array, (2 - axes[2], 2 - axes[1], 2 - axes[0]))
    for n in range(3):
        if flips[n]:
            out = np.flip(out, axis=2 - n)
    return out


def body_box(
    array_hu: np.ndarray, threshold_hu: float
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Bounding box ``(start_ijk, stop_ijk)`` of the largest region above ``threshold_hu``.

    The mask is labelled on every second voxel (the margin added afterwards is far larger than the
    2-voxel uncertainty this introduces); an all-air volume gives the full box.
    """
    coarse = np.asarray(array_hu[::2, ::2, ::2]) > threshold_hu
    labels, count = ndimage.label(coarse)
    shape = array_hu.shape
    if count == 0:
        return (0, 0, 0), (shape[2], shape[1], shape[0])
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    box = ndimage.find_objects(labels)[int(np.argmax(sizes)) - 1]
    start_kji = [s.start * 2 for s in box]
    stop_kji = [min(s.stop * 2, n) for s, n in zip(box, shape, strict=True)]
    return (start_kji[2], start_kji[1], start_kji[0]), (stop_kji[2], stop_kji[1], stop_kji[0])


def lung_box(
    image_kji: np.ndarray,
    preprocess: PreprocessConfig,
    config: LungCropConfig,
    *,
    min_size_kji: tuple[int, int, int] = (1, 1, 1),
) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """Box ``(start_ijk, stop_ijk)`` around the lungs of a preprocessed image, or ``None``.

    ``image_kji`` is network input (windowed to ``[0, 1]`` by ``preprocess``, at its target
    spacing). The lungs are the air regions (below ``config.air_threshold_hu``) that do not reach
    the sides of the image: the air around the body does, since the body crop leaves a margin.
    Found on every second voxel, like :func:`body_box`. The box is then made symmetric left to
    right about the image centre (the body's midline), so a lung that holds no air (collapsed, or
    filled by a tumour) is still covered by the mirror of the other; ``config.margin_mm`` is added
    on every side and each side grown to at least ``min_size_kji`` (one window).

    ``None`` (run on the whole image) when no enclosed air of ``config.min_volume_ml`` is found,
    or when the body itself reaches a side of the image (a field of view that cuts the body may
    cut a lung, which would then look like outside air).
    """
    coarse = np.asarray(image_kji[::2, ::2, ::2])
    air_level = _window_level(config.air_threshold_hu, preprocess.window_hu)
    body_level = _window_level(preprocess.body_threshold_hu, preprocess.window_hu)
    if not 0.0 < air_level < 1.0 or _touches_sides(_largest_region(coarse > body_level)):
        return None
    labels, _ = ndimage.label(coarse < air_level)
    sizes = np.bincount(labels.ravel())
    voxel_ml = math.prod(2.0 * s for s in preprocess.target_spacing_mm) / 1000.0
    keep = (sizes > 0) & (sizes * voxel_ml >= config.min_volume_ml)
    keep[0] = False
    keep[_sides(labels)] = False  # the air around the body
    if not keep.any():
        return None
    found = ndimage.find_objects(keep[labels].astype(np.uint8))[0]
    shape = _shape3(image_kji.shape)
    start = [min(found[a].start * 2, shape[a] - 1) for a in range(3)]
    stop = [min(found[a].stop * 2, shape[a]) for a in range(3)]
    start[2], stop[2] = min(start[2], shape[2] - stop[2]), max(stop[2], shape[2] - start[2])
    margin = [math.ceil(config.margin_mm / s) for s in reversed(preprocess.target_spacing_mm)]
    box = [
        _grow(
            max(0, start[a] - margin[a]),
            min(shape[a], stop[a] + margin[a]),
            min_size_kji[a],
            shape[a],
        )
        for a in range(3)
    ]
    return (box[2][0], box[1][0], box[0][0]), (box[2][1], box[1][1], box[0][1])


def _window_level(hu: float, window_hu: tuple[float, float]) -> float:
    """Where ``hu`` lands on the ``[0, 1]`` scale of :func:`window`."""
    return (hu - window_hu[0]) / (window_hu[1] - window_hu[0])


def _largest_region(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _sides(array_kji: np.ndarray) -> np.ndarray:
    """The voxels on the four in-plane faces (first and last row and column of every slice)."""
    return np.concatenate([array_kji[:, [0, -1], :].ravel(), array_kji[:, :, [0, -1]].ravel()])


def _touches_sides(mask_kji: np.ndarray) -> bool:
    return bool(_sides(mask_kji).any())


def _grow(start: int, stop: int, min_size: int, size: int) -> tuple[int, int]:
    """``[start, stop)`` widened about its centre to at least ``min_size`` within ``[0, size)``."""
    need = min(min_size, size)
    if stop - start >= need:
        return start, stop
    start = max(0, min(start - (need - (stop - start)) // 2, size - need))
    return start, start + need


def _add_margin(
    start: tuple[int, int, int],
    stop: tuple[int, int, int],
    shape_kji: tuple[int, int, int],
    config: PreprocessConfig,
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    sizes = (shape_kji[2], shape_kji[1], shape_kji[0])
    margin = [math.ceil(config.crop_margin_mm / s) for s in config.target_spacing_mm]
    lo = tuple(max(0, start[n] - margin[n]) for n in range(3))
    hi = tuple(min(sizes[n], stop[n] + margin[n]) for n in range(3))
    return (lo[0], lo[1], lo[2]), (hi[0], hi[1], hi[2])


def _resampled_shape(
    shape_kji: tuple[int, int, int], ratios: tuple[float, float, float]
) -> tuple[int, int, int]:
    """The ``(k, j, i)`` shape :func:`_resample` gives: torch's ``floor(n * scale_factor)``, in
    double, with ``scale_factor = 1 / r``."""
    ratios_kji = (ratios[2], ratios[1], ratios[0])
    sizes = [math.floor(float(n) * (1.0 / r)) for n, r in zip(shape_kji, ratios_kji, strict=True)]
    if min(sizes) < 1:
        raise ValueError(f"volume {shape_kji} is too small for the target spacing")
    return sizes[0], sizes[1], sizes[2]


def _resample(
    array: np.ndarray,
    ratios: tuple[float, float, float],
    *,
    mode: str,
    window: tuple[tuple[int, int], ...] | None = None,
) -> np.ndarray:
    """Resample a ``(k, j, i)`` array so output voxel o samples input ``(o + 0.5) * r - 0.5``.

    ``ratios`` are ``(i, j, k)``. ``mode`` is ``"trilinear"`` or ``"nearest-exact"``, computed
    as :func:`torch.nn.functional.interpolate` does (``align_corners=False``, a fixed scale
    factor, positions in float32; a test keeps the two equal) but in numpy, one axis at a time,
    so that inference never imports torch. ``window`` (output ranges ``[(start, stop)]`` per
    ``(k, j, i)`` axis) computes that part of the output only, with the same values; only the
    input voxels it samples are read.
    """
    shape = _shape3(array.shape)
    sizes = _resampled_shape(shape, ratios)
    ratios_kji = (ratios[2], ratios[1], ratios[0])
    if window is None:
        if all(abs(r - 1.0) < 1e-9 for r in ratios):
            return np.ascontiguousarray(array)
        window = tuple((0, n) for n in sizes)
    plans = [_axis_plan(shape[axis], window[axis], ratios_kji[axis], mode) for axis in range(3)]
    reads = tuple(
        slice(lower[0], min(int(lower[-1]) + 2, n))
        for (lower, _), n in zip(plans, shape, strict=True)
    )
    source = array[reads]
    lower = [plan[0] - read.start for plan, read in zip(plans, reads, strict=True)]
    weight = [plan[1] for plan in plans]
    # In slabs of slices: in-plane first, then across slices. The temporaries stay a few MB, so
    # a study does not fault in a gigabyte of fresh pages (most of the cost, measured).
    planes = np.empty((source.shape[0], len(lower[1]), len(lower[2])), source.dtype)
    for k in range(0, source.shape[0], _RESAMPLE_SLAB):
        slab = np.ascontiguousarray(source[k : k + _RESAMPLE_SLAB])
        slab = _resample_axis(slab, 2, lower[2], weight[2])
        planes[k : k + _RESAMPLE_SLAB] = _resample_axis(slab, 1, lower[1], weight[1])
    out = np.empty((len(lower[0]), planes.shape[1], planes.shape[2]), source.dtype)
    for o in range(0, len(lower[0]), _RESAMPLE_SLAB):
        part = slice(o, o + _RESAMPLE_SLAB)
        slab_weight = None if weight[0] is None else weight[0][part]
        out[part] = _resample_axis(planes, 0, lower[0][part], slab_weight)
    return out


#: slices resampled at once (see :func:`_resample`).
_RESAMPLE_SLAB = 16


def _axis_plan(
    n: int, window: tuple[int, int], ratio: float, mode: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """The input voxel below each output voxel of ``window`` along one axis of ``n`` voxels, and
    the weight of the one above it (None: take the voxel below as it is)."""
    first, stop = window
    if abs(ratio - 1.0) < 1e-9:
        return np.arange(first, stop, dtype=np.int64), None
    scale = np.float32(1.0 / (1.0 / ratio))  # torch keeps 1 / scale_factor as float32
    index = np.arange(first, stop, dtype=np.float32) + np.float32(0.5)
    if mode == "nearest-exact":
        nearest = np.floor((index.astype(np.float64) * scale).astype(np.float32))
        return np.minimum(nearest.astype(np.int64), n - 1), None
    # scale * index - 0.5 with one rounding to float32, as torch's compiled (fused) kernel does
    position = (np.float64(scale) * index.astype(np.float64) - 0.5).astype(np.float32)
    position = np.maximum(position, np.float32(0.0))
    lower = np.minimum(np.floor(position).astype(np.int64), n - 1)
    weight = np.clip(position - lower, 0.0, 1.0).astype(np.float32)
    return lower, weight


def _resample_axis(
    array: np.ndarray, axis: int, lower: np.ndarray, weight: np.ndarray | None
) -> np.ndarray:
    """One axis of :func:`_resample`: output voxel o is ``array[lower[o]]`` plus ``weight[o]``
    of the step to the next input voxel (the last one repeats at the end)."""
    low = np.take(array, lower, axis=axis)
    if weight is None:
        return low
    shape = [1, 1, 1]
    shape[axis] = len(lower)
    high = np.take(array, np.minimum(lower + 1, array.shape[axis] - 1), axis=axis)
    high -= low
    high *= weight.reshape(shape)
    low += high
    return low


def _spacing_ratios(
    affine: np.ndarray, target_spacing_mm: tuple[float, float, float]
) -> tuple[float, float, float]:
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    ratios = [target_spacing_mm[n] / float(spacing[n]) for n in range(3)]
    return ratios[0], ratios[1], ratios[2]


def _reorientation_matrix(
    source_shape_kji: tuple[int, int, int],
    axes: tuple[int, int, int],
    flips: tuple[bool, bool, bool],
) -> np.ndarray:
    """4x4 mapping reoriented voxel indices to source voxel indices (both (i, j, k))."""
    sizes = (source_shape_kji[2], source_shape_kji[1], source_shape_kji[0])
    matrix = np.zeros((4, 4))
    matrix[3, 3] = 1.0
    for n in range(3):
        axis = axes[n]
        if flips[n]:
            matrix[axis, n] = -1.0
            matrix[axis, 3] = sizes[axis] - 1
        else:
            matrix[axis, n] = 1.0
    return matrix


def _resampling_matrix(ratios: tuple[float, float, float]) -> np.ndarray:
    """4x4 mapping resampled voxel indices ``o`` to input indices ``(o + 0.5) * r - 0.5``."""
    matrix = np.eye(4)
    for n, r in enumerate(ratios):
        matrix[n, n] = r
        matrix[n, 3] = 0.5 * r - 0.5
    return matrix


def _translation(start_ijk: tuple[int, int, int]) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = start_ijk
    return matrix


def _shape3(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return int(shape[0]), int(shape[1]), int(shape[2])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, float)
    return pts @ matrix[:3, :3].T + matrix[:3, 3]
