"""Branching, tapering tubes: pulmonary arteries, veins and the bronchi that run beside them.

Trees grow outward from each hilum one generation at a time (all branches of a generation in one
vectorised step) by splitting territories: a branch heads for the centroid of the lung points it
feeds and divides them between two daughters, so the trees fill the lungs and their thinnest
(1 mm) branches are densest at the periphery, as in real lungs. Tubes are evaluated in batches
of equal-sized bounding boxes with partial-volume edges, so twelve thousand segments cost well
under a second."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.synth.anatomy import AIR_HU, Array, Phantom, lung_side
from pipelines.synth.grid import Grid
from pipelines.synth.render import CARINA_W

_AXIAL = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True)
class Tubes:
    """Tapered straight segments (conical capsules), one row per segment, LPS mm."""

    start_mm: Array  # (n, 3)
    end_mm: Array  # (n, 3)
    radius_start_mm: Array  # (n,)
    radius_end_mm: Array  # (n,)
    generation: Array  # (n,) int, 0 at the hilum

    def __len__(self) -> int:
        return int(self.start_mm.shape[0])

    def surface_distance_mm(self, point_mm: Array) -> Array:
        """Distance from ``point_mm`` to each segment's surface (negative inside), shape (n,)."""
        d = self.end_mm - self.start_mm
        length2 = np.maximum(np.einsum("ij,ij->i", d, d), 1e-9)
        t = np.clip(np.einsum("ij,ij->i", point_mm - self.start_mm, d) / length2, 0, 1)
        closest = self.start_mm + t[:, None] * d
        radius = self.radius_start_mm + t * (self.radius_end_mm - self.radius_start_mm)
        return np.linalg.norm(point_mm - closest, axis=1) - radius


def _concat(parts: list[Tubes]) -> Tubes:
    return Tubes(*(np.concatenate([getattr(t, f) for t in parts]) for f in Tubes.__annotations__))


def _unit(v: Array) -> Array:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def hilum_mm(p: Phantom, side: int, vein: bool) -> Array:
    """Where a lung's arterial (or venous) tree enters it."""
    sign = -1.0 if side == 1 else 1.0
    a, b = p.half_width_mm, p.half_depth_mm
    w = 0.47 if vein else 0.4
    y = p.center_y_mm + (-0.12 if vein else 0.02) * b
    return np.array([p.center_x_mm + sign * 0.22 * a, y, p.z_top_mm - w * p.coverage_mm])


def _lung_points(p: Phantom, side: int, n: int, rng: np.random.Generator) -> Array:
    """``n`` points drawn uniformly inside one lung (rejection sampling in its bounding box)."""
    a, b = p.cage_axes(np.array(1.0))
    x0 = p.center_x_mm - float(a) if side == 1 else p.center_x_mm
    low = np.array([x0, p.center_y_mm - float(b), p.z_top_mm - p.coverage_mm])
    high = low + np.array([float(a), 2 * float(b), p.coverage_mm * (1 - p.apex_w)])
    found: list[Array] = []
    count = 0
    while count < n:
        points = rng.uniform(low, high, size=(4 * n, 3))
        points = points[_inside(p, points, np.full(len(points), side))]
        found.append(points)
        count += len(points)
    return np.concatenate(found)[:n]


def _inside(p: Phantom, points: Array, sides: Array) -> Array:
    return lung_side(p, points[:, 0], points[:, 1], points[:, 2]) == sides


def grow_vessel_trees(
    p: Phantom, rng: np.random.Generator, *, min_radius_mm: float, max_segments: int
) -> Tubes:
    """Grow the arterial and venous trees of both lungs by splitting their territories.

    Each tree owns ``max_segments // 8`` points spread uniformly through its lung, each point the
    tip of one terminal branch. A branch heads for the centroid of its territory, stops part of
    the way there and splits its territory in two across the territory's widest extent
    perpendicular to the branch; a branch left with one point runs to it. Radii follow Murray's
    law, ``min_radius_mm * n ** (1/3)`` for a branch feeding ``n`` terminals, so every tree
    fills its lung and tapers to ``min_radius_mm`` at the periphery, where branches are densest.
    """
    n_tips = max(1, max_segments // 8)
    points: list[Array] = []
    starts: list[Array] = []
    ranges: list[tuple[int, int]] = []
    for side in (1, 2):
        for vein in (False, True):
            ranges.append((len(points) * n_tips, (len(points) + 1) * n_tips))
            points.append(_lung_points(p, side, n_tips, rng))
            starts.append(hilum_mm(p, side, vein))
    all_points = np.concatenate([*points, np.zeros((1, 3))])  # a pad row for reduceat
    lo, hi = (np.array(r) for r in zip(*ranges, strict=True))
    start = np.array(starts)
    parts: list[Tubes] = []
    generation = 0
    while True:
        n = hi - lo
        centroid = _range_sums(all_points, lo, hi) / n[:, None]
        terminal = n == 1
        reach = np.where(terminal, 1.0, rng.uniform(0.3, 0.5, len(n)))
        end = start + reach[:, None] * (centroid - start)
        radius = min_radius_mm * np.cbrt(n)
        parts.append(Tubes(start, end, 1.1 * radius, radius, np.full(len(n), generation)))
        keep = ~terminal
        if not np.any(keep):
            break
        lo, hi, end = lo[keep], hi[keep], end[keep]
        cut = _split_territories(all_points, lo, hi, end - start[keep], rng)
        start = np.repeat(end, 2, axis=0)
        lo, hi = np.column_stack([lo, cut]).ravel(), np.column_stack([cut, hi]).ravel()
        generation += 1
    return _concat(parts)


def _range_sums(values: Array, lo: Array, hi: Array) -> Array:
    """Sums of ``values[lo[m]:hi[m]]`` for every ``m`` (ranges sorted, disjoint, non-empty)."""
    return np.add.reduceat(values, np.column_stack([lo, hi]).ravel(), axis=0)[::2]


def _split_territories(
    points: Array, lo: Array, hi: Array, dirs: Array, rng: np.random.Generator
) -> Array:
    """Reorder each territory ``points[lo:hi]`` in place and return where to cut it in two.

    A territory is sorted along its principal axis perpendicular to its branch direction (the
    plane of the bifurcation) and cut at a random 35-65 % quantile, so sister branches differ.
    """
    n = hi - lo
    first = np.r_[0, np.cumsum(n)[:-1]]
    owner = np.repeat(np.arange(len(lo)), n)
    index = lo[owner] + np.arange(int(n.sum())) - first[owner]
    mean = _range_sums(points, lo, hi) / n[:, None]
    centred = points[index] - mean[owner]
    cov = np.add.reduceat(centred[:, :, None] * centred[:, None, :], first)
    d = _unit(dirs)
    project = np.eye(3) - d[:, :, None] * d[:, None, :]
    cov = project @ cov @ project + 1e-6 * np.eye(3)
    axis = np.linalg.eigh(cov)[1][:, :, 2]
    along = np.einsum("ij,ij->i", centred, axis[owner])
    order = np.lexsort((along, owner))
    points[index] = points[index[order]]
    quantile = rng.uniform(0.35, 0.65, len(n))
    return lo + np.clip(np.rint(quantile * n).astype(int), 1, n - 1)


def bronchi_beside(p: Phantom, arteries: Tubes, *, max_generation: int = 3) -> tuple[Tubes, Tubes]:
    """Airway walls and lumens: trachea-to-hilum main bronchi plus one bronchus per early artery."""
    near = arteries.generation <= max_generation
    a = Tubes(*(getattr(arteries, f)[near] for f in Tubes.__annotations__))
    d = _unit(a.end_mm - a.start_mm)
    normal = np.cross(d, _AXIAL)
    normal = np.where(np.linalg.norm(normal, axis=1, keepdims=True) < 0.1, [[1.0, 0, 0]], normal)
    offset = _unit(normal) * (1.3 * a.radius_start_mm + 1.5)[:, None]
    lumen_r0, lumen_r1 = 0.75 * a.radius_start_mm, 0.75 * a.radius_end_mm
    lumen = Tubes(a.start_mm + offset, a.end_mm + offset, lumen_r0, lumen_r1, a.generation + 1)
    sx, sy, sr = p.spine_center
    r = 0.055 * p.half_width_mm
    carina = np.array([sx, sy - sr - 1.3 * r - 0.3 * sr, p.z_top_mm - CARINA_W * p.coverage_mm])
    hila = np.stack([hilum_mm(p, 1, False), hilum_mm(p, 2, False)]) + [[0, 0, 4.0]] * 2
    main = Tubes(
        np.stack([carina, carina]), hila, np.full(2, 0.8 * r), np.full(2, 0.6 * r), np.zeros(2, int)
    )
    lumen = _concat([main, lumen])
    wall = Tubes(
        lumen.start_mm,
        lumen.end_mm,
        lumen.radius_start_mm * 1.25 + 0.6,
        lumen.radius_end_mm * 1.25 + 0.6,
        lumen.generation,
    )
    return wall, lumen


def paint_tubes(volume: Array, grid: Grid, tubes: Tubes, value_hu: float, *, darken: bool) -> None:
    """Blend ``value_hu`` into ``volume`` (``[k, j, i]``) inside every tube, with soft edges.

    Brightening tubes only raise voxels towards ``value_hu`` and darkening ones only lower them,
    so a vessel never paints over bone and a bronchus lumen never over air. Tubes are evaluated
    in batches of equal-sized bounding boxes (one array operation per batch, not per tube) and
    blended one box at a time; the blend ``v - (v - hu) * (1 - occupancy)`` commutes, so the
    order does not matter.
    """
    first, size = _tube_boxes(grid, tubes)
    for members, shape in _batches(size, grid.shape):
        start = np.minimum(first[members], np.array(grid.shape) - shape)
        x, y, z = _batch_coords(grid, start, shape)
        depth_mm, weight = _tube_field(grid, tubes, members, x, y, z)
        h = min(grid.spacing_mm[:2])
        occupancy = np.clip(depth_mm / h + 0.5, 0, 1) * weight
        for (k, j, i), occ in zip(start, occupancy, strict=True):
            target = volume[k : k + shape[0], j : j + shape[1], i : i + shape[2]]
            delta = value_hu - target
            delta = np.minimum(delta, 0) if darken else np.maximum(delta, 0)
            target += occ * delta


def tube_mask(grid: Grid, box: tuple[slice, slice, slice], tubes: Tubes) -> Array:
    """Voxels of ``box`` (``[k, j, i]`` slices) whose centre, or thick slice, lies in a tube.

    This is the tubes' binary mask as painted (the centre line of the soft edge), evaluated only
    inside ``box`` for the tubes whose bounding boxes reach it.
    """
    x, y, z = grid.box_coords(box)
    mask = np.zeros((z.shape[0], y.shape[1], x.shape[2]), bool)
    first, size = _tube_boxes(grid, tubes)
    low = np.array([box[0].start, box[1].start, box[2].start])
    high = low + mask.shape
    near = np.flatnonzero(np.all((first < high) & (first + size > low), axis=1))
    chunk = max(1, _BATCH_VOXELS // max(mask.size, 1))
    for n in range(0, len(near), chunk):
        depth_mm, _ = _tube_field(grid, tubes, near[n : n + chunk], x[None], y[None], z[None])
        mask |= np.any(depth_mm >= 0, axis=0)
    return mask


#: Voxels evaluated per batch of tubes (bounds the temporary arrays to tens of MB).
_BATCH_VOXELS = 1 << 20
#: Box edge lengths batches are rounded up to (steps of about 20 %).
_BOX_SIZES = np.unique(np.rint(1.2 ** np.arange(45)).astype(int))


def _tube_boxes(grid: Grid, tubes: Tubes) -> tuple[Array, Array]:
    """First index and size ``(k, j, i)`` of each tube's bounding box on ``grid`` (size 0: off it).

    The box is padded by the radius, one pixel and half a slice, the reach of the soft edge.
    """
    h, thickness = min(grid.spacing_mm[:2]), grid.spacing_mm[2]
    pad = np.maximum(tubes.radius_start_mm, tubes.radius_end_mm) + h + thickness / 2
    low_mm = np.minimum(tubes.start_mm, tubes.end_mm) - pad[:, None]
    high_mm = np.maximum(tubes.start_mm, tubes.end_mm) + pad[:, None]
    first = np.empty((len(tubes), 3), int)
    size = np.empty((len(tubes), 3), int)
    for axis in range(3):
        n = grid.shape[2 - axis]
        step, origin = grid.affine_lps[axis, axis], grid.affine_lps[axis, 3]
        a, b = (low_mm[:, axis] - origin) / step, (high_mm[:, axis] - origin) / step
        lo = np.clip(np.ceil(np.minimum(a, b)).astype(int), 0, n)
        hi = np.clip(np.floor(np.maximum(a, b)).astype(int), -1, n - 1)
        first[:, 2 - axis], size[:, 2 - axis] = lo, np.maximum(hi - lo + 1, 0)
    size[np.any(size == 0, axis=1)] = 0
    return first, size


def _batches(size: Array, shape: tuple[int, int, int]) -> list[tuple[Array, Array]]:
    """Groups of tube indices sharing one (rounded-up, grid-clipped) box shape, tube order kept."""
    on_grid = np.flatnonzero(np.all(size > 0, axis=1))
    rounded = np.minimum(_BOX_SIZES[np.searchsorted(_BOX_SIZES, size[on_grid])], shape)
    shapes, group = np.unique(rounded, axis=0, return_inverse=True)
    batches = []
    for g, box_shape in enumerate(shapes):
        members = on_grid[group.ravel() == g]
        chunk = max(1, _BATCH_VOXELS // int(np.prod(box_shape)))
        batches += [(members[n : n + chunk], box_shape) for n in range(0, len(members), chunk)]
    return batches


def _batch_coords(grid: Grid, start: Array, shape: Array) -> tuple[Array, Array, Array]:
    """LPS coordinates of a batch of boxes, shaped ``(tube, k, j, i)`` for broadcasting."""
    axes = [grid.axis_mm(a).astype(np.float32) for a in range(3)]
    x = axes[0][start[:, 2, None] + np.arange(shape[2])][:, None, None, :]
    y = axes[1][start[:, 1, None] + np.arange(shape[1])][:, None, :, None]
    z = axes[2][start[:, 0, None] + np.arange(shape[0])][:, :, None, None]
    return x, y, z


def _tube_field(
    grid: Grid, tubes: Tubes, members: Array, x: Array, y: Array, z: Array
) -> tuple[Array, Array]:
    """Depth inside each of ``tubes[members]`` (mm, negative outside) and its partial-volume weight.

    ``x``, ``y``, ``z`` broadcast to ``(tube, k, j, i)``. Thick slices see through their whole
    slab. The weight dims tubes thinner than a pixel, and tubes lying in the plane of a slice
    thicker than them, by the share of the voxel they fill.
    """
    h, thickness = min(grid.spacing_mm[:2]), grid.spacing_mm[2]
    p0 = tubes.start_mm[members].astype(np.float32)[:, :, None, None, None]
    d = (tubes.end_mm[members] - tubes.start_mm[members]).astype(np.float32)[:, :, None, None, None]
    r0 = tubes.radius_start_mm[members].astype(np.float32)[:, None, None, None]
    r1 = tubes.radius_end_mm[members].astype(np.float32)[:, None, None, None]
    length2 = np.maximum(np.sum(d**2, axis=1), 1e-9)
    t = ((x - p0[:, 0]) * d[:, 0] + (y - p0[:, 1]) * d[:, 1] + (z - p0[:, 2]) * d[:, 2]) / length2
    t = np.clip(t, 0, 1)
    slab = max(thickness - h, 0.0) / 2
    dz = np.maximum(np.abs(z - (p0[:, 2] + t * d[:, 2])) - slab, 0)
    dist = np.sqrt(
        (x - (p0[:, 0] + t * d[:, 0])) ** 2 + (y - (p0[:, 1] + t * d[:, 1])) ** 2 + dz**2
    )
    in_plane = 1.0 - np.abs(d[:, 2]) / np.sqrt(length2)
    calibre = r0 + r1
    weight = (1.0 - in_plane * (1.0 - np.minimum(1.0, calibre / max(thickness, h)))) * np.minimum(
        1.0, calibre / h
    )
    return r0 + t * (r1 - r0) - dist, weight


__all__ = ["AIR_HU", "Tubes", "bronchi_beside", "grow_vessel_trees", "paint_tubes", "tube_mask"]
