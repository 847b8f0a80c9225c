"""Vessel trees (tapering, connected, peripheral) and lesion attachments read from the masks."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.datasets.manifest import LesionType
from pipelines.synth.anatomy import Phantom, sample_phantom
from pipelines.synth.config import Attachment, LesionShape
from pipelines.synth.grid import Grid
from pipelines.synth.lesions import attachments, build_model, lung_depth_map
from pipelines.synth.protocol import LesionPlan
from pipelines.synth.vessels import Tubes, grow_vessel_trees, paint_tubes, tube_mask


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return sample_phantom(np.random.default_rng(3), 360.0, 0.0, 300.0)


@pytest.fixture(scope="module")
def trees(phantom: Phantom) -> Tubes:
    rng = np.random.default_rng(5)
    return grow_vessel_trees(phantom, rng, min_radius_mm=0.5, max_segments=4000)


def test_trees_taper_by_murray_law_down_to_the_minimum_radius(trees: Tubes) -> None:
    assert len(trees) <= 4000
    assert trees.radius_end_mm.min() == pytest.approx(0.5)
    assert np.all(trees.radius_end_mm <= trees.radius_start_mm)
    roots = trees.generation == 0
    assert roots.sum() == 4 and trees.radius_start_mm[roots].min() > 4.0


def test_every_branch_starts_where_its_parent_ends(trees: Tubes) -> None:
    ends = {tuple(np.round(e, 6)) for e in trees.end_mm}
    children = trees.generation > 0
    assert all(tuple(np.round(s, 6)) in ends for s in trees.start_mm[children])


def test_thin_vessels_fill_the_periphery(phantom: Phantom, trees: Tubes) -> None:
    grid = Grid(np.diag([2.0, 2.0, -2.0, 1.0]) + _origin(-180.0, -180.0, 0.0), (150, 180, 180))
    depth = lung_depth_map(phantom, grid)
    thin = trees.radius_end_mm < 1.0
    thick = trees.radius_start_mm > 2.0
    tip_depth = np.array([depth.at(e) for e in trees.end_mm[thin]])
    thick_depth = np.array([depth.at(e) for e in trees.end_mm[thick]])
    assert np.percentile(tip_depth, 10) < 6.0  # thin branches reach the pleura
    assert np.median(tip_depth) < np.median(thick_depth)
    hila = trees.start_mm[trees.generation == 0][:, None, :]
    reach = np.linalg.norm(trees.end_mm[None] - hila, axis=2).min(axis=0)
    assert np.median(reach[thin]) > 1.5 * np.median(reach[thick])
    assert thin.sum() > 0.8 * len(trees)


def _origin(x: float, y: float, z: float) -> np.ndarray:
    out = np.zeros((4, 4))
    out[:3, 3] = (x, y, z)
    return out


WHOLE = (slice(0, 41), slice(0, 41), slice(0, 41))


def _grid() -> Grid:
    """40 mm cube at 1 mm voxels, centred on the origin."""
    return Grid(np.diag([1.0, 1.0, 1.0, 1.0]) + _origin(-20.0, -20.0, -20.0), (41, 41, 41))


def _attached(center: tuple[float, float, float], lungs: np.ndarray, vessels: Tubes) -> list[str]:
    """Attachments of an 8 mm sphere at ``center`` labelled on :func:`_grid`."""
    grid = _grid()
    plan = LesionPlan(LesionType.SOLID, LesionShape.SPHERICAL, 8.0, Attachment.NONE)
    model = build_model(plan, np.array(center), np.random.default_rng(0))
    x, y, z = grid.box_coords(WHOLE)
    label = (model.signed_distance_mm(x, y, z) >= 0).astype(np.uint8)
    return attachments(model, 1, label, lungs, grid, vessels)


def _tube(x_mm: float) -> Tubes:
    """A 2 mm-wide vessel along z at ``x_mm``."""
    return Tubes(
        np.array([[x_mm, 0.0, -20.0]]),
        np.array([[x_mm, 0.0, 20.0]]),
        np.array([1.0]),
        np.array([1.0]),
        np.array([3]),
    )


def test_attached_to_follows_the_masks() -> None:
    lungs = np.ones((41, 41, 41), np.uint8)
    no_vessel = _tube(19.0)
    assert _attached((0.0, 0.0, 0.0), lungs, no_vessel) == []
    # the lesion (radius 4) ends at x = 4; a vessel of radius 1 at x = 5.5 covers x = 5: adjacent
    assert _attached((0.0, 0.0, 0.0), lungs, _tube(5.5)) == ["vessel"]
    # one clear voxel between them (vessel from x = 6) is not attached
    assert _attached((0.0, 0.0, 0.0), lungs, _tube(7.0)) == []
    wall = lungs.copy()
    wall[:, :, 26:] = 0  # chest wall from x = 6 mm: the pleura is one voxel from the lesion's edge
    assert _attached((1.0, 0.0, 0.0), wall, no_vessel) == ["pleura"]
    assert _attached((-1.0, 0.0, 0.0), wall, no_vessel) == []
    assert _attached((1.0, 0.0, 0.0), wall, _tube(6.5)) == ["pleura", "vessel"]


def test_vessel_mask_is_what_paint_tubes_brightens() -> None:
    grid = _grid()
    volume = np.full(grid.shape, -850.0, np.float32)
    vessel = _tube(0.0)
    paint_tubes(volume, grid, vessel, 40.0, darken=False)
    mask = tube_mask(grid, WHOLE, vessel)
    assert np.all(mask.sum(axis=(1, 2)) > 0)  # continuous through every slice, unlike a nodule
    assert np.all(volume[mask] >= -406)  # at least half way from lung (-850) to blood (40)
    assert np.all(volume[~mask] < -200)
