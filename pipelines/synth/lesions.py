"""Lung lesions: placement against the anatomy, shapes, HU, and the exact ground-truth mask.

A lesion is a signed-distance function in LPS mm (positive inside). Its voxels are those whose
centre lies inside it and inside a lung; the painted HU fade over one pixel at the edge and never
darken a voxel, so vessels crossing a ground-glass lesion stay visible, as in real scans.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from pipelines.datasets.manifest import Lesion, LesionType
from pipelines.synth.anatomy import Array, Phantom, lung_side
from pipelines.synth.config import Attachment, LesionShape
from pipelines.synth.grid import Grid
from pipelines.synth.protocol import LesionPlan
from pipelines.synth.vessels import Tubes, tube_mask


@dataclass(frozen=True)
class DepthMap:
    """Distance (mm) to the lung boundary on a coarse grid, zero outside the lungs."""

    depth_mm: Array  # [k, j, i]
    origin_mm: Array  # (3,) x, y, z of the first cell
    spacing_mm: float

    def at(self, point_mm: Array) -> float:
        """Depth of the cell nearest ``point_mm`` (0 outside the grid)."""
        idx = np.rint((point_mm - self.origin_mm) / self.spacing_mm).astype(int)[::-1]
        if np.any(idx < 0) or np.any(idx >= self.depth_mm.shape):
            return 0.0
        return float(self.depth_mm[tuple(idx)])


@dataclass(frozen=True)
class LesionModel:
    """A placed lesion: its plan, centre and the parts its outline is the union of."""

    plan: LesionPlan
    center_mm: Array  # (3,) LPS
    spheres: Array  # (m, 4): centre x, y, z and radius, mm
    axes_mm: Array | None  # ellipsoid half-axes, with ``rotation``
    rotation: Array | None  # (3, 3) lesion frame to LPS
    spikes: Tubes | None
    solid_hu: float
    ggo_hu: float

    @property
    def radius_mm(self) -> float:
        return self.plan.diameter_mm / 2

    def signed_distance_mm(self, x: Array, y: Array, z: Array) -> Array:
        """Approximate distance to the outline, positive inside (broadcasts)."""
        if self.axes_mm is not None and self.rotation is not None:
            local = [x - self.center_mm[0], y - self.center_mm[1], z - self.center_mm[2]]
            q2 = sum(
                (sum(self.rotation[r, c] * local[r] for r in range(3)) / self.axes_mm[c]) ** 2
                for c in range(3)
            )
            return (1 - np.sqrt(q2)) * float(self.axes_mm.min())
        sd = np.full(np.broadcast_shapes(x.shape, y.shape, z.shape), -np.inf, np.float32)
        for cx, cy, cz, r in self.spheres:
            sd = np.maximum(sd, r - np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2))
        if self.spikes is not None:
            sd = np.maximum(sd, _spike_distance(self.spikes, x, y, z))
        return sd


def _spike_distance(spikes: Tubes, x: Array, y: Array, z: Array) -> Array:
    best = None
    for n in range(len(spikes)):
        p0, d = spikes.start_mm[n], spikes.end_mm[n] - spikes.start_mm[n]
        t = ((x - p0[0]) * d[0] + (y - p0[1]) * d[1] + (z - p0[2]) * d[2]) / float(d @ d)
        t = np.clip(t, 0, 1)
        dist = np.sqrt(
            (x - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2 + (z - p0[2] - t * d[2]) ** 2
        )
        r = spikes.radius_start_mm[n] + t * (spikes.radius_end_mm[n] - spikes.radius_start_mm[n])
        sd = r - dist
        best = sd if best is None else np.maximum(best, sd)
    if best is None:
        return np.full(np.broadcast_shapes(x.shape, y.shape, z.shape), -np.inf, np.float32)
    return best


def lung_depth_map(p: Phantom, grid: Grid) -> DepthMap:
    """The lungs' depth map on a grid of at least 2 mm (coarser for coarse scans)."""
    step = max(2.0, min(grid.spacing_mm))
    corners = [grid.axis_mm(a)[[0, -1]] for a in range(3)]
    axes = [np.arange(min(c), max(c) + step, step, dtype=np.float32) for c in corners]
    side = lung_side(p, axes[0][None, None, :], axes[1][None, :, None], axes[2][:, None, None])
    depth = np.zeros(side.shape, np.float32)
    lungs = ndimage.find_objects((side > 0).astype(np.uint8))
    if lungs and lungs[0] is not None:  # the transform runs on the lungs' box plus one cell
        box = tuple(
            slice(max(s.start - 1, 0), min(s.stop + 1, n))
            for s, n in zip(lungs[0], side.shape, strict=True)
        )
        depth[box] = ndimage.distance_transform_edt(side[box] > 0, sampling=step)
    return DepthMap(depth, np.array([axes[0][0], axes[1][0], axes[2][0]]), step)


def _candidate(
    plan: LesionPlan,
    rng: np.random.Generator,
    depth_map: DepthMap,
    vessels: Tubes,
) -> Array | None:
    """A centre for ``plan`` (or None): deep enough, against the pleura or beside a vessel."""
    depth, step = depth_map.depth_mm, depth_map.spacing_mm
    r = plan.diameter_mm / 2
    if plan.attachment == Attachment.VESSEL:
        usable = np.flatnonzero((vessels.radius_end_mm > 0.8) & (vessels.generation >= 2))
        if usable.size == 0:
            return None
        n = int(rng.choice(usable))
        t = rng.uniform(0.2, 0.8)
        axis_point = vessels.start_mm[n] + t * (vessels.end_mm[n] - vessels.start_mm[n])
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        return axis_point + (float(vessels.radius_end_mm[n]) + 0.8 * r) * direction
    if plan.attachment == Attachment.PLEURA:
        cells = np.argwhere((depth >= 0.5 * r) & (depth <= max(r, step)))
    else:
        cells = np.argwhere(depth >= r + 3.0)
    if cells.size == 0:
        return None
    k, j, i = cells[int(rng.integers(len(cells)))]
    jitter = rng.uniform(-0.5, 0.5, 3) * step * (plan.attachment != Attachment.PLEURA)
    return depth_map.origin_mm + np.array([i, j, k]) * step + jitter


def place_lesion(
    p: Phantom,
    plan: LesionPlan,
    rng: np.random.Generator,
    depth_map: DepthMap,
    vessels: Tubes,
    taken: list[LesionModel],
) -> LesionModel | None:
    """Try a few centres for ``plan``; None when none fits (the lesion is then dropped)."""
    r = plan.diameter_mm / 2
    for _ in range(40):
        center = _candidate(plan, rng, depth_map, vessels)
        if center is None:
            return None
        if lung_side(p, float(center[0]), float(center[1]), float(center[2])) == 0:
            continue
        if plan.attachment != Attachment.PLEURA and depth_map.at(center) < 0.7 * r:
            continue
        if any(np.linalg.norm(center - o.center_mm) < r + o.radius_mm + 2 for o in taken):
            continue
        return build_model(plan, center, rng)
    return None


def build_model(plan: LesionPlan, center: Array, rng: np.random.Generator) -> LesionModel:
    """The outline parts of a lesion of ``plan.shape`` centred on ``center``."""
    r = plan.diameter_mm / 2
    spheres = np.array([[*center, r]])
    axes = rotation = None
    spikes = None
    if plan.shape == LesionShape.ELLIPSOIDAL:
        ratios = rng.uniform(0.6, 1.0, 3)
        axes = r * ratios / np.cbrt(ratios.prod())
        rotation = Rotation.random(random_state=rng).as_matrix()
    elif plan.shape == LesionShape.LOBULATED:
        n = int(rng.integers(3, 7))
        offsets = rng.normal(size=(n, 3))
        offsets *= (r * rng.uniform(0.3, 0.55, n) / np.linalg.norm(offsets, axis=1))[:, None]
        lobes = np.column_stack([center + offsets, r * rng.uniform(0.4, 0.6, n)])
        spheres = np.vstack([[*center, 0.7 * r], lobes])
    elif plan.shape == LesionShape.SPICULATED:
        spheres = np.array([[*center, 0.8 * r]])
        n = int(rng.integers(6, 14))
        dirs = rng.normal(size=(n, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        lengths = r * rng.uniform(0.5, 1.0, n) + 1.0
        spikes = Tubes(
            center + 0.6 * r * dirs,
            center + (0.8 * r + lengths)[:, None] * dirs,
            np.full(n, max(0.25 * r, 0.6)),
            np.full(n, 0.2),
            np.zeros(n, int),
        )
    solid = rng.uniform(30, 60)
    ggo = rng.uniform(-650, -450)
    return LesionModel(plan, np.asarray(center, float), spheres, axes, rotation, spikes, solid, ggo)


def lesion_hu(model: LesionModel, sd: Array) -> Array | float:
    """HU inside the lesion at signed distance ``sd`` (mm): its type's density, a solid core
    fading into ground glass for a part-solid lesion."""
    if model.plan.type == LesionType.SOLID:
        return model.solid_hu
    if model.plan.type == LesionType.GROUND_GLASS:
        return model.ggo_hu
    core = np.clip((sd - 0.5 * model.radius_mm) / 1.0 + 0.5, 0, 1)
    return model.ggo_hu + core * (model.solid_hu - model.ggo_hu)


def lesion_box(grid: Grid, model: LesionModel) -> tuple[slice, slice, slice] | None:
    """Slices ``[k, j, i]`` of a box holding the whole lesion with a margin (None: off grid)."""
    pad = 2.0 * model.radius_mm + 2 * max(grid.spacing_mm)
    return grid.box(model.center_mm - pad, model.center_mm + pad)


def paint_lesion(
    volume: Array, label: Array, grid: Grid, p: Phantom, model: LesionModel, lesion_id: int
) -> int:
    """Blend the lesion into ``volume`` and mark its voxels ``lesion_id`` in ``label``.

    Returns the number of voxels labelled. The voxel nearest the centre is always labelled, so a
    lesion thinner than a slice still has a mask.
    """
    h = min(grid.spacing_mm[:2])
    box = lesion_box(grid, model)
    if box is None:
        return 0
    x, y, z = grid.box_coords(box)
    sd = model.signed_distance_mm(x, y, z)
    in_lung = lung_side(p, x, y, z) > 0
    occupancy = np.clip(sd / h + 0.5, 0, 1) * in_lung
    target = volume[box]
    target += occupancy * np.maximum(lesion_hu(model, sd) - target, 0)
    labels = label[box]
    labels[(sd >= 0) & in_lung & (labels == 0)] = lesion_id
    i, j, k = grid.to_index(model.center_mm)
    if label[k, j, i] == 0:
        label[k, j, i] = lesion_id
    return int(np.count_nonzero(labels == lesion_id))


def attachments(
    model: LesionModel, lesion_id: int, label: Array, lungs: Array, grid: Grid, vessels: Tubes
) -> list[str]:
    """What the painted lesion touches, read from the masks: the pleura, a vessel, both or nothing.

    The lesion's mask (``label == lesion_id``), dilated by one voxel (26-neighbourhood), touches
    the pleura when it reaches a voxel outside the lungs (``lungs == 0``: chest wall, mediastinum,
    diaphragm) and a vessel when it overlaps the vessel mask (a vessel running into the lesion
    counts). ``label`` and ``lungs`` are ``[k, j, i]`` volumes on ``grid``.
    """
    outer = lesion_box(grid, model)
    if outer is None:
        return []
    where = np.nonzero(label[outer] == lesion_id)
    if where[0].size == 0:
        return []
    k, j, i = (
        slice(max(o.start + int(w.min()) - 1, 0), min(o.start + int(w.max()) + 2, n))
        for o, w, n in zip(outer, where, label.shape, strict=True)
    )
    box = (k, j, i)
    mask = label[box] == lesion_id
    grown = ndimage.binary_dilation(mask, structure=np.ones((3, 3, 3), bool))
    found = []
    if np.any(grown & (lungs[box] == 0)):
        found.append("pleura")
    if len(vessels) and np.any(grown & tube_mask(grid, box, vessels)):
        found.append("vessel")
    return found


def to_manifest_lesion(
    model: LesionModel, lesion_id: int, n_voxels: int, voxel_ml: float, attached: list[str]
) -> Lesion:
    """The ground-truth record of a painted lesion."""
    return Lesion(
        id=lesion_id,
        center_lps_mm=tuple(round(float(v), 3) for v in model.center_mm),  # type: ignore[arg-type]
        diameter_mm=model.plan.diameter_mm,
        volume_ml=round(n_voxels * voxel_ml, 5),
        type=model.plan.type,
        shape=str(model.plan.shape),
        attached_to=attached,
    )
