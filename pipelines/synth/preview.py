"""PNG montages of a generated study for a human eye: lung window, ground truth outlined.

Tiles: up to three axial slices through lesion centres (or evenly spaced when there is none) and a
coronal reformat through the first lesion (or the middle), each shown in radiological convention
(patient's right on the image's left, head at the top) whatever the patient position.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from pipelines.synth.study import SynthStudy

LUNG_WINDOW_HU = (-600.0, 1500.0)  # centre, width
OUTLINE_RGB = (255, 40, 40)
TILE_PX = 384


def _window(image_hu: np.ndarray) -> np.ndarray:
    centre, width = LUNG_WINDOW_HU
    scaled = (image_hu - (centre - width / 2)) / width
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def _tile(image_hu: np.ndarray, mask: np.ndarray, size_px: tuple[int, int]) -> Image.Image:
    """A windowed image with the mask's boundary drawn, resized to ``size_px`` (width, height)."""
    grey = _window(image_hu)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    edge = mask & ~ndimage.binary_erosion(mask)
    rgb[edge] = OUTLINE_RGB
    return Image.fromarray(rgb).resize(size_px, Image.Resampling.NEAREST)


def _display_flips(affine_lps: np.ndarray) -> tuple[bool, bool]:
    """Whether to flip columns (x must grow to the right) and slices (head at the top)."""
    return bool(affine_lps[0, 0] < 0), bool(affine_lps[2, 2] > 0)


def _to_ijk(study: SynthStudy, lps_mm: tuple[float, float, float]) -> np.ndarray:
    inverse = np.linalg.inv(study.affine_lps)
    return np.rint(inverse[:3, :3] @ np.asarray(lps_mm) + inverse[:3, 3]).astype(int)


def _chosen_slices(study: SynthStudy) -> list[int]:
    n = study.volume_hu.shape[0]
    inverse = np.linalg.inv(study.affine_lps)
    picks = [
        int(
            np.clip(
                round(float((inverse[:3, :3] @ les.center_lps_mm + inverse[:3, 3])[2])), 0, n - 1
            )
        )
        for les in study.lesions[:3]
    ]
    return picks or [int(n * f) for f in (0.25, 0.45, 0.65)]


def write_preview(study: SynthStudy, path: Path) -> None:
    """Write the montage of ``study`` to ``path`` (PNG)."""
    flip_x, flip_z = _display_flips(study.affine_lps)
    volume, label = study.volume_hu, study.label > 0
    tiles = []
    for k in _chosen_slices(study):
        image, mask = volume[k], label[k]
        if flip_x:
            image, mask = image[:, ::-1], mask[:, ::-1]
        tiles.append(_tile(image, mask, (TILE_PX, TILE_PX)))
    row = volume.shape[1] // 2
    if study.lesions:
        row = int(np.clip(_to_ijk(study, study.lesions[0].center_lps_mm)[1], 0, row * 2 - 1))
    coronal, mask = volume[:, row, :], label[:, row, :]
    if flip_x:
        coronal, mask = coronal[:, ::-1], mask[:, ::-1]
    if flip_z:
        coronal, mask = coronal[::-1], mask[::-1]
    spacing_x, _, spacing_z = (abs(float(study.affine_lps[a, a])) for a in range(3))
    height = max(1, round(TILE_PX * coronal.shape[0] * spacing_z / (coronal.shape[1] * spacing_x)))
    tiles.append(_tile(coronal, mask, (TILE_PX, height)))
    montage = Image.new("RGB", (TILE_PX * len(tiles), max(t.height for t in tiles)))
    for n, tile in enumerate(tiles):
        montage.paste(tile, (n * TILE_PX, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    montage.save(path, optimize=False)
