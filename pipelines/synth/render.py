"""Paint the phantom's slices: chest wall, table, mediastinum, abdomen, lungs, bones, trachea.

Each slice is painted back to front (later structures overwrite earlier ones) on a grid that may
be coarser than the output, then upsampled linearly; thin tubular structures (vessels, bronchi)
and lesions are added afterwards at full resolution by :mod:`pipelines.synth.vessels` and
:mod:`pipelines.synth.lesions`.
"""

from __future__ import annotations

import numpy as np

from pipelines.synth.anatomy import (
    AIR_HU,
    CARTILAGE_HU,
    CORTEX_HU,
    FAT_HU,
    MARROW_HU,
    MUSCLE_HU,
    SKIN_HU,
    Array,
    Phantom,
    _ellipse,
    heart_radius,
    lung_side,
)
from pipelines.synth.grid import Grid

CARINA_W = 0.3


def _paint_table(hu: Array, p: Phantom, x: Array, y: Array) -> None:
    """A curved carbon-fibre cradle under the patient: two bright shells around a foam core."""
    top = p.center_y_mm + p.half_depth_mm + 4.0 - 0.0012 * (x - p.center_x_mm) ** 2
    depth = y - top
    within = np.abs(x - p.center_x_mm) < 0.42 * p.fov_mm
    hu[within & (depth > 0) & (depth < 22 * p.scale)] = -900.0
    shell = (np.abs(depth - 1.5) < 1.5) | (np.abs(depth - 22 * p.scale) < 1.5)
    hu[within & shell] = 250.0


def _paint_wall(hu: Array, p: Phantom, x: Array, y: Array, w: Array) -> None:
    """Skin, subcutaneous fat, chest-wall muscle and the fatty space inside the rib cage."""
    a, b = p.body_axes(w)
    cx, cy = p.center_x_mm, p.center_y_mm
    hu[_ellipse(x, y, cx, cy, a, b) < 1] = SKIN_HU
    hu[_ellipse(x, y, cx, cy, a - 2, b - 2) < 1] = FAT_HU
    inner_a, inner_b = a - 2 - p.fat_mm, b - 2 - p.fat_mm * 0.8
    hu[_ellipse(x, y, cx, cy, inner_a, inner_b) < 1] = MUSCLE_HU
    ca, cb = p.cage_axes(w)
    hu[_ellipse(x, y, cx, cy, ca, cb) < 1] = FAT_HU + 10
    sx, sy, sr = p.spine_center
    for side in (-1, 1):
        muscle = _ellipse(x, y, sx + side * 2.0 * sr, sy + 2.3 * sr, 1.5 * sr, 1.6 * sr) < 1
        hu[muscle] = MUSCLE_HU


def _paint_abdomen(hu: Array, p: Phantom, x: Array, y: Array, w: Array) -> None:
    """Liver on the right, spleen and stomach (with its air bubble) on the left, under the domes."""
    ca, cb = p.cage_axes(w)
    cx, cy = p.center_x_mm, p.center_y_mm
    inside = _ellipse(x, y, cx, cy, ca, cb) < 1
    below = w > p.dome_right_w - 0.02
    hu[inside & below & (x < cx + 0.25 * ca)] = p.liver_hu
    left = inside & (w > p.dome_left_w - 0.02) & (x >= cx + 0.25 * ca)
    hu[left] = 40.0
    bubble = _ellipse(x, y, cx + 0.45 * ca, cy - 0.3 * cb, 0.22 * ca, 0.25 * cb)
    hu[left & (bubble + ((w - p.dome_left_w - 0.04) / 0.05) ** 2 < 1)] = AIR_HU


def _paint_mediastinum(hu: Array, p: Phantom, x: Array, y: Array, w: Array) -> None:
    """Heart (myocardium, septum, blood pool) and the great vessels."""
    heart = heart_radius(p, x, y, w)
    hx, hy = p.heart[0], p.heart[1]
    hu[heart < 1] = MUSCLE_HU - 5
    septum = np.abs((x - hx) * 0.7 + (y - hy) * 0.7) < 0.035 * p.half_width_mm
    hu[(heart < 0.62) & ~septum] = p.blood_hu
    a, b = p.half_width_mm, p.half_depth_mm
    sx, sy, sr = p.spine_center
    vessels = [  # centre x, centre y, radius, w range
        (sx + 1.35 * sr, sy - 1.25 * sr, 0.8 * sr, 0.2, 1.01),  # descending aorta
        (p.center_x_mm - 0.02 * a, p.center_y_mm - 0.3 * b, 0.08 * a, 0.2, 0.5),  # ascending
        (p.center_x_mm + 0.07 * a, p.center_y_mm - 0.28 * b, 0.075 * a, 0.3, 0.42),  # PA
        (p.center_x_mm - 0.12 * a, p.center_y_mm - 0.2 * b, 0.045 * a, 0.05, 0.45),  # SVC
    ]
    for vx, vy, vr, w0, w1 in vessels:
        hu[(_ellipse(x, y, vx, vy, vr, vr) < 1) & (w >= w0) & (w < w1)] = p.blood_hu
    arch = (w > 0.17) & (w < 0.21)
    if np.any(arch):
        t = np.clip((x - p.center_x_mm + 0.02 * a) / (sx + 1.35 * sr - p.center_x_mm), 0, 1)
        ay = (p.center_y_mm - 0.3 * b) * (1 - t) + (sy - 1.25 * sr) * t
        hu[arch & (np.abs(y - ay) < 0.07 * a) & (t > 0) & (t < 1)] = p.blood_hu


def _paint_airway(hu: Array, p: Phantom, x: Array, y: Array, w: Array) -> None:
    """Trachea (air with a soft-tissue wall) above the carina, oesophagus behind it."""
    sx, sy, sr = p.spine_center
    r = 0.055 * p.half_width_mm
    ty = sy - sr - 1.3 * r - 0.3 * sr
    if float(np.max(w)) >= 0 and float(np.min(w)) < CARINA_W:
        above = w < CARINA_W
        hu[above & (_ellipse(x, y, sx, ty, r + 1.5, r + 1.5) < 1)] = MUSCLE_HU
        hu[above & (_ellipse(x, y, sx, ty, r, r * 0.9) < 1)] = AIR_HU
    oes = _ellipse(x, y, sx + 0.3 * r, sy - sr - 0.35 * r, 0.6 * r, 0.45 * r) < 1
    hu[oes & (w < p.dome_left_w)] = MUSCLE_HU - 10


def _paint_lungs(hu: Array, lung: Array, p: Phantom, y: Array) -> None:
    """Aerated parenchyma, denser posteriorly (gravity)."""
    gradient = 45.0 * np.clip((y - p.center_y_mm) / p.half_depth_mm, -1, 1)
    hu[:] = np.where(lung > 0, p.lung_hu + gradient, hu)


def _bone(hu: Array, inside: Array, rim: Array) -> None:
    hu[inside] = MARROW_HU
    hu[inside & rim] = CORTEX_HU


def _paint_spine_sternum(hu: Array, p: Phantom, x: Array, y: Array, w: Array) -> None:
    """Vertebral body (discs between), neural arch, spinous process and sternum."""
    sx, sy, sr = p.spine_center
    phase = (w * p.coverage_mm / p.rib_pitch_mm) % 1.0
    body = _ellipse(x, y, sx, sy, sr, sr * 0.9)
    if np.all(phase > 0.15):
        _bone(hu, body < 1, body > 0.72)
    else:
        hu[body < 1] = 90.0
    canal_y, canal_r = sy + 1.45 * sr, 0.5 * sr
    arch = _ellipse(x, y, sx, canal_y, canal_r + 0.35 * sr, canal_r + 0.3 * sr)
    _bone(hu, arch < 1, arch > 0.6)
    spinous = _ellipse(x, y, sx, canal_y + 1.1 * sr, 0.22 * sr, 0.7 * sr)
    _bone(hu, spinous < 1, spinous > 0.45)
    hu[_ellipse(x, y, sx, canal_y, canal_r, canal_r) < 1] = 25.0
    a, b = p.body_axes(w)
    st_y = p.center_y_mm - b + 2 + p.fat_mm + 0.55 * p.muscle_mm
    if p.apex_w < float(np.max(w)) and float(np.min(w)) < p.dome_right_w:
        sternum = _ellipse(x, y, p.center_x_mm, st_y, 0.085 * a, 0.28 * p.muscle_mm + 2)
        _bone(hu, sternum < 1, sternum > 0.5)


def _paint_ribs(hu: Array, p: Phantom, x: Array, y: Array, w: Array) -> None:
    """Ribs: flat bony bands sloping down from the spine round to costal cartilage in front."""
    ca, cb = p.cage_axes(w)
    rho = np.sqrt(_ellipse(x, y, p.center_x_mm, p.center_y_mm, ca, cb))
    thickness_mm = 6.0 * p.scale
    radial_mm = (rho - 1.0) * (ca + cb) / 2 - thickness_mm / 2 - 0.5
    near = np.abs(radial_mm) < thickness_mm / 2
    if not np.any(near) or float(np.max(w)) < p.apex_w - 0.03:
        return
    xx = np.broadcast_to(x, near.shape)[near]
    yy = np.broadcast_to(y, near.shape)[near]
    ww = np.broadcast_to(w, near.shape)[near]
    angle = np.abs(np.arctan2(xx - p.center_x_mm, yy - p.center_y_mm))  # 0 at the back
    slope = 1.7 * (1 - np.cos(angle)) / 2
    phase = (ww * p.coverage_mm / p.rib_pitch_mm + slope) % 1.0
    height = 8.0 * p.scale / p.rib_pitch_mm
    e = (radial_mm[near] / (thickness_mm / 2)) ** 2 + ((phase - 0.5) / (height / 2)) ** 2
    rib = (e < 1) & (angle < np.radians(150)) & (ww < p.dome_left_w + 0.2)
    values = np.where(angle > np.radians(118), CARTILAGE_HU, np.where(e > 0.4, CORTEX_HU, 300.0))
    target = hu[near]
    target[rib] = values[rib]
    hu[near] = target


def paint_slice(p: Phantom, x: Array, y: Array, z_mm: float) -> tuple[Array, Array]:
    """HU image and lung side map (0/1/2) of one axial slice; ``x`` is (1, n), ``y`` (m, 1)."""
    shape = (y.shape[0], x.shape[1])
    hu = np.full(shape, AIR_HU, np.float32)
    w = np.full(shape, p.w_of(z_mm), np.float32)
    _paint_table(hu, p, x, y)
    _paint_wall(hu, p, x, y, w)
    _paint_abdomen(hu, p, x, y, w)
    lung = lung_side(p, x, y, np.float32(z_mm))
    lung = np.broadcast_to(lung, shape)
    _paint_lungs(hu, lung, p, y)
    _paint_mediastinum(hu, p, x, y, w)
    _paint_airway(hu, p, x, y, w)
    _paint_spine_sternum(hu, p, x, y, w)
    _paint_ribs(hu, p, x, y, w)
    return hu, lung


def render_anatomy(p: Phantom, grid: Grid, oversample: int) -> tuple[Array, Array]:
    """The phantom on ``grid``: HU volume (float32) and lung side map (uint8), both ``[k, j, i]``.

    Slices are painted on a grid ``oversample`` times coarser in-plane and upsampled linearly.
    """
    n_k = grid.shape[0]
    x_full, y_full, z = grid.axis_mm(0), grid.axis_mm(1), grid.axis_mm(2)
    x = _coarse_axis(x_full, oversample)[None, :].astype(np.float32)
    y = _coarse_axis(y_full, oversample)[:, None].astype(np.float32)
    volume = np.empty(grid.shape, np.float32)
    lungs = np.empty(grid.shape, np.uint8)
    rows = _linear_weights(y.shape[0], oversample)
    columns = _linear_weights(x.shape[1], oversample)
    for k in range(n_k):
        hu, lung = paint_slice(p, x, y, float(z[k]))
        if oversample > 1:
            hu = hu[rows[0]] * rows[2][:, None] + hu[rows[1]] * rows[3][:, None]
            volume[k] = hu[:, columns[0]] * columns[2] + hu[:, columns[1]] * columns[3]
            lungs[k] = lung.repeat(oversample, 0).repeat(oversample, 1)
        else:
            volume[k], lungs[k] = hu, lung
    return volume, lungs


def _linear_weights(n: int, factor: int) -> tuple[Array, Array, Array, Array]:
    """Linear upsampling of an axis of ``n`` samples by ``factor``: indices and weights.

    Output sample ``o`` sits at input position ``(o + 0.5) / factor - 0.5`` (samples are cell
    centres, as ``ndimage.zoom(grid_mode=True)``), clamped at the edges; it is
    ``a[lo] * w_lo + a[hi] * w_hi``. Two gathers per axis cost a fraction of ``ndimage.zoom``.
    """
    position = np.clip((np.arange(n * factor) + 0.5) / factor - 0.5, 0, n - 1)
    lo = np.floor(position).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    w_hi = (position - lo).astype(np.float32)
    return lo, hi, 1 - w_hi, w_hi


def _coarse_axis(axis_mm: Array, factor: int) -> Array:
    """Centres of ``factor``-wide groups of voxel centres."""
    return axis_mm.reshape(-1, factor).mean(axis=1) if factor > 1 else axis_mm
