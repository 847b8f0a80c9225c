"""Branching, tapering tubes: pulmonary arteries, veins and the bronchi that run beside them.

Trees grow outward from each hilum one generation at a time (all branches of a generation in one
vectorised step): a branch continues with a slightly narrower child and sends off a thinner side
branch at 35-70 degrees, until its radius falls below the configured minimum or it would leave
its lung. Tubes are painted segment by segment into their own bounding boxes, with partial-volume
edges, so a tree of thousands of segments costs well under a second.
"""

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


def _perpendicular(dirs: Array, rng: np.random.Generator) -> Array:
    """A random unit vector perpendicular to each row of ``dirs``."""
    v = rng.normal(size=dirs.shape)
    return _unit(v - np.einsum("ij,ij->i", v, dirs)[:, None] * dirs)


def hilum_mm(p: Phantom, side: int, vein: bool) -> Array:
    """Where a lung's arterial (or venous) tree enters it."""
    sign = -1.0 if side == 1 else 1.0
    a, b = p.half_width_mm, p.half_depth_mm
    w = 0.47 if vein else 0.4
    y = p.center_y_mm + (-0.12 if vein else 0.02) * b
    return np.array([p.center_x_mm + sign * 0.22 * a, y, p.z_top_mm - w * p.coverage_mm])


def _roots(p: Phantom) -> tuple[Array, Array, Array, Array]:
    """Trunk starts, directions, radii and lung sides of all four trees."""
    trunks = np.array(
        [[0.4, 0.0, 1.0], [1.0, -0.3, 0.15], [0.6, -0.8, -0.2], [0.5, 0.7, -0.5], [0.35, 0.2, -1]]
    )
    radii = np.array([0.8, 0.85, 0.8, 0.9, 1.0]) * 0.027 * p.half_width_mm
    starts, dirs, rads, sides = [], [], [], []
    for side, sign in ((1, -1.0), (2, 1.0)):
        for vein in (False, True):
            d = trunks * np.array([sign, 1.0, 1.0])
            starts.append(np.repeat(hilum_mm(p, side, vein)[None], len(d), 0))
            dirs.append(_unit(d))
            rads.append(radii * (0.85 if vein else 1.0))
            sides.append(np.full(len(d), side))
    return np.concatenate(starts), np.concatenate(dirs), np.concatenate(rads), np.concatenate(sides)


def _inside(p: Phantom, points: Array, sides: Array) -> Array:
    return lung_side(p, points[:, 0], points[:, 1], points[:, 2]) == sides


def grow_vessel_trees(
    p: Phantom, rng: np.random.Generator, *, min_radius_mm: float, max_segments: int
) -> Tubes:
    """Grow the arterial and venous trees of both lungs."""
    starts, dirs, radii, sides = _roots(p)
    hila = starts.copy()
    parts: list[Tubes] = []
    total, generation = 0, 0
    while len(starts) and total < max_segments:
        length = radii * rng.uniform(4.5, 7.5, len(radii)) + 1.5
        ends = starts + length[:, None] * dirs
        inside = _inside(p, ends, sides)
        halves = starts + 0.5 * length[:, None] * dirs
        ends = np.where(inside[:, None], ends, halves)
        ok = inside | _inside(p, halves, sides) | (generation == 0)
        radii_end = radii * 0.95
        seg = Tubes(starts[ok], ends[ok], radii[ok], radii_end[ok], np.full(ok.sum(), generation))
        parts.append(seg)
        total += len(seg)
        grow = ok & (inside | (generation < 2)) & (radii_end >= min_radius_mm)
        starts, dirs, radii, sides, hila = _branch(
            rng, ends[grow], dirs[grow], radii_end[grow], sides[grow], hila[grow]
        )
        generation += 1
    return _concat(parts)


def _branch(
    rng: np.random.Generator, ends: Array, dirs: Array, radii: Array, sides: Array, hila: Array
) -> tuple[Array, Array, Array, Array, Array]:
    """Each growing tip continues and (usually) sends off a thinner side branch."""
    outward = _unit(ends - hila)
    keep_dirs = _unit(dirs + 0.3 * rng.normal(size=dirs.shape) + 0.25 * outward)
    angle = rng.uniform(np.radians(35), np.radians(70), len(dirs))[:, None]
    side_dirs = _unit(np.cos(angle) * dirs + np.sin(angle) * _perpendicular(dirs, rng))
    side_dirs = _unit(side_dirs + 0.2 * outward)
    has_side = rng.uniform(size=len(dirs)) < 0.9
    keep_r = radii * rng.uniform(0.84, 0.92, len(radii))
    side_r = radii * rng.uniform(0.6, 0.78, len(radii))
    return (
        np.concatenate([ends, ends[has_side]]),
        np.concatenate([keep_dirs, side_dirs[has_side]]),
        np.concatenate([keep_r, side_r[has_side]]),
        np.concatenate([sides, sides[has_side]]),
        np.concatenate([hila, hila[has_side]]),
    )


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
    so a vessel never paints over bone and a bronchus lumen never over air.
    """
    h = min(grid.spacing_mm[:2])
    thickness = grid.spacing_mm[2]
    for n in range(len(tubes)):
        p0, p1 = tubes.start_mm[n], tubes.end_mm[n]
        r0, r1 = float(tubes.radius_start_mm[n]), float(tubes.radius_end_mm[n])
        pad = max(r0, r1) + h + thickness / 2
        box = grid.box(np.minimum(p0, p1) - pad, np.maximum(p0, p1) + pad)
        if box is None:
            continue
        occupancy = _tube_occupancy(grid, box, p0, p1, (r0, r1), h)
        target = volume[box]
        delta = value_hu - target
        delta = np.minimum(delta, 0) if darken else np.maximum(delta, 0)
        target += occupancy * delta


def _tube_occupancy(
    grid: Grid,
    box: tuple[slice, slice, slice],
    p0: Array,
    p1: Array,
    radii: tuple[float, float],
    h: float,
) -> Array:
    """Fraction of each voxel inside the tube, thick slices seeing through their whole slab."""
    x, y, z = grid.box_coords(box)
    d = (p1 - p0).astype(np.float32)
    length2 = max(float(d @ d), 1e-9)
    t = ((x - p0[0]) * d[0] + (y - p0[1]) * d[1] + (z - p0[2]) * d[2]) / length2
    t = np.clip(t, 0, 1)
    thickness = grid.spacing_mm[2]
    slab = max(thickness - h, 0.0) / 2
    dz = np.maximum(np.abs(z - (p0[2] + t * d[2])) - slab, 0)
    dist = np.sqrt((x - (p0[0] + t * d[0])) ** 2 + (y - (p0[1] + t * d[1])) ** 2 + dz**2)
    radius = radii[0] + t * (radii[1] - radii[0])
    in_plane = 1.0 - abs(float(d[2])) / np.sqrt(length2)
    weight = 1.0 - in_plane * (1.0 - min(1.0, (radii[0] + radii[1]) / max(thickness, h)))
    return np.clip((radius - dist) / h + 0.5, 0, 1) * weight


__all__ = ["AIR_HU", "Tubes", "bronchi_beside", "grow_vessel_trees", "paint_tubes"]
