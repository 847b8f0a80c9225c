"""Lesions and masks, both ways: lesions from a label's components, sphere masks from lesions.

Public datasets describe lesions either as masks (MSD, DICOM SEG) or as points with a diameter
(LUNA16). The manifest wants both kinds as :class:`~pipelines.datasets.manifest.Lesion` (centre
in LPS mm, diameter, volume); training wants masks. These two functions convert between them on
a volume's grid (array ``(k, j, i)``, affine voxel ``(i, j, k, 1)`` → LPS mm).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from pipelines.datasets.manifest import Lesion


def lesions_from_mask(
    mask: np.ndarray, affine_lps: np.ndarray, *, min_voxels: int = 1
) -> list[Lesion]:
    """One lesion per 26-connected component of ``mask > 0`` (``(k, j, i)``).

    The centre is the component's centroid in LPS mm; ``volume_ml`` counts its voxels; the
    diameter is that of the sphere with the same volume. Components smaller than ``min_voxels``
    (annotation specks) are dropped. Lesions are numbered from 1 in scan order.
    """
    foreground = np.asarray(mask) > 0
    labels, count = ndimage.label(foreground, structure=np.ones((3, 3, 3), bool))
    if count == 0:
        return []
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    centres_kji = ndimage.center_of_mass(foreground, labels, np.arange(1, count + 1))
    voxel_ml = abs(float(np.linalg.det(affine_lps[:3, :3]))) / 1000.0
    lesions: list[Lesion] = []
    for index, centre in enumerate(centres_kji, start=1):
        if sizes[index] < min_voxels:
            continue
        ijk = np.array([centre[2], centre[1], centre[0]], float)
        lps = affine_lps[:3, :3] @ ijk + affine_lps[:3, 3]
        volume_ml = float(sizes[index]) * voxel_ml
        diameter_mm = (6.0 * volume_ml * 1000.0 / math.pi) ** (1.0 / 3.0)
        lesions.append(
            Lesion(
                id=len(lesions) + 1,
                center_lps_mm=(round(lps[0], 3), round(lps[1], 3), round(lps[2], 3)),
                diameter_mm=round(diameter_mm, 3),
                volume_ml=round(volume_ml, 5),
            )
        )
    return lesions


def sphere_volume_ml(diameter_mm: float) -> float:
    """Volume of a sphere of ``diameter_mm``, in millilitres."""
    return math.pi * diameter_mm**3 / 6.0 / 1000.0


def rasterise_spheres(
    lesions: Sequence[Lesion], shape: tuple[int, int, int], affine_lps: np.ndarray
) -> np.ndarray:
    """A uint8 ``(k, j, i)`` label: voxels whose centre lies in the n-th lesion's sphere are n.

    Used where a dataset gives lesions as points and diameters (LUNA16, review feedback). Each
    lesion keeps its own instance number (1-based in the order given, wrapping after 255), as
    the synthetic generator's labels do, so training can draw lesions rather than voxels; where
    spheres overlap the later one wins. Spheres outside the grid are clipped; voxel size and
    direction come from ``affine_lps``.
    """
    mask = np.zeros(shape, np.uint8)
    inverse = np.linalg.inv(affine_lps)
    # half-extent of a 1 mm radius along each voxel axis, in voxels
    reach = np.linalg.norm(inverse[:3, :3], axis=1)
    sizes = np.array([shape[2], shape[1], shape[0]])
    for number, lesion in enumerate(lesions):
        radius = lesion.diameter_mm / 2.0
        centre_ijk = inverse[:3, :3] @ np.asarray(lesion.center_lps_mm) + inverse[:3, 3]
        low = np.maximum(np.floor(centre_ijk - radius * reach).astype(int), 0)
        high = np.minimum(np.ceil(centre_ijk + radius * reach).astype(int) + 1, sizes)
        if np.any(high <= low):
            continue
        k, j, i = np.meshgrid(*(np.arange(low[n], high[n]) for n in (2, 1, 0)), indexing="ij")
        ijk = np.stack([i, j, k], axis=-1).astype(float)
        lps = ijk @ affine_lps[:3, :3].T + affine_lps[:3, 3]
        inside = np.linalg.norm(lps - np.asarray(lesion.center_lps_mm), axis=-1) <= radius
        box = mask[low[2] : high[2], low[1] : high[1], low[0] : high[0]]
        box[inside] = number % 255 + 1
    return mask
