"""An analytic chest phantom in Hounsfield units, rendered slice by slice.

Every structure is a closed-form expression of LPS millimetres (x to the patient's left, y
posterior, z superior) and of ``w``, the fraction of the scan's cranio-caudal coverage below its
top slice. The same expressions answer "is this point in a lung?" for vessel growth and lesion
placement and paint the slices, so vessels and lesions always sit where the lungs are drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

Array = np.ndarray
#: A coordinate or size that broadcasts: an array or a plain number.
Num = np.ndarray | float | np.floating[Any]

AIR_HU, FAT_HU, SKIN_HU, MUSCLE_HU = -1000.0, -100.0, 35.0, 50.0
CORTEX_HU, MARROW_HU, CARTILAGE_HU = 850.0, 230.0, 120.0


@dataclass(frozen=True)
class Phantom:
    """One patient's body habitus and organ layout (all mm unless named otherwise)."""

    fov_mm: float
    z_top_mm: float
    coverage_mm: float
    half_width_mm: float  # body outline half-axes at mid-chest
    half_depth_mm: float
    center_x_mm: float
    center_y_mm: float
    fat_mm: float
    muscle_mm: float
    apex_w: float  # lung apex and diaphragm domes, as fractions of coverage
    dome_right_w: float
    dome_left_w: float
    lung_hu: float
    blood_hu: float
    liver_hu: float
    rib_pitch_mm: float

    @property
    def scale(self) -> float:
        """Body size relative to an average adult (170 mm half-width)."""
        return self.half_width_mm / 170.0

    def w_of(self, z_mm: Num) -> Array:
        """Fraction of coverage below the top slice."""
        return (self.z_top_mm - np.asarray(z_mm, np.float32)) / self.coverage_mm

    def body_axes(self, w: Array) -> tuple[Array, Array]:
        """Body half-axes at ``w``: narrower towards the neck, widest at the lung bases."""
        grow = 0.88 + 0.12 * np.clip(w / 0.45, 0, 1)
        return self.half_width_mm * grow, self.half_depth_mm * (0.92 + 0.08 * grow)

    def cage_axes(self, w: Array) -> tuple[Array, Array]:
        """Inner surface of the rib cage (the parietal pleura)."""
        a, b = self.body_axes(w)
        wall = self.fat_mm + self.muscle_mm + 2.0
        return a - wall, b - wall * 0.8

    @property
    def spine_center(self) -> tuple[float, float, float]:
        """Vertebral body centre (x, y) and radius."""
        r = 0.11 * self.half_width_mm
        return self.center_x_mm, self.center_y_mm + self.half_depth_mm - 2.1 * r - self.fat_mm, r

    @property
    def heart(self) -> tuple[float, float, float, float, float, float]:
        """Heart ellipsoid: centre x, y, w and half-axes in x, y (mm) and w (fraction)."""
        a, b = self.half_width_mm, self.half_depth_mm
        return (
            self.center_x_mm + 0.13 * a,
            self.center_y_mm - 0.2 * b,
            self.dome_right_w - 0.07,
            0.34 * a,
            0.46 * b,
            0.16,
        )


def sample_phantom(
    rng: np.random.Generator, fov_mm: float, z_top_mm: float, coverage_mm: float
) -> Phantom:
    """Draw a patient that fills 74-88 % of the field of view."""
    a = fov_mm / 2 * rng.uniform(0.74, 0.88)
    b = a * rng.uniform(0.62, 0.74)
    s = a / 170.0
    dome = rng.uniform(0.66, 0.74)
    return Phantom(
        fov_mm=fov_mm,
        z_top_mm=z_top_mm,
        coverage_mm=coverage_mm,
        half_width_mm=a,
        half_depth_mm=b,
        center_x_mm=rng.uniform(-0.02, 0.02) * fov_mm,
        center_y_mm=0.31 * fov_mm - b,
        fat_mm=rng.uniform(5, 22) * s,
        muscle_mm=rng.uniform(9, 14) * s,
        apex_w=rng.uniform(0.02, 0.07),
        dome_right_w=dome,
        dome_left_w=dome + rng.uniform(0.01, 0.05),
        lung_hu=rng.uniform(-880, -830),
        blood_hu=rng.uniform(30, 50),
        liver_hu=rng.uniform(50, 65),
        rib_pitch_mm=coverage_mm * rng.uniform(0.075, 0.09),
    )


def with_contrast(phantom: Phantom, rng: np.random.Generator) -> Phantom:
    """The same patient scanned after intravenous contrast (bright blood, enhanced liver)."""
    return replace(phantom, blood_hu=rng.uniform(150, 320), liver_hu=rng.uniform(90, 130))


def _ellipse(x: Num, y: Num, cx: Num, cy: Num, ax: Num, by: Num) -> Array:
    """Squared elliptic radius: < 1 inside."""
    return np.asarray(((x - cx) / ax) ** 2 + ((y - cy) / by) ** 2)


def heart_radius(p: Phantom, x: Num, y: Num, w: Num) -> Array:
    """Squared ellipsoidal radius of the heart (< 1 inside)."""
    hx, hy, hw, ax, ay, aw = p.heart
    return _ellipse(x, y, hx, hy, ax, ay) + ((w - hw) / aw) ** 2


def mediastinum(p: Phantom, x: Num, y: Num, w: Num) -> Array:
    """The region between the lungs: midline band, heart, aorta and the paravertebral gutter."""
    a, b = p.half_width_mm, p.half_depth_mm
    depth = np.clip((y - (p.center_y_mm - b)) / (2 * b), 0, 1)
    half = a * (0.06 + 0.11 * depth + 0.05 * np.exp(-(((w - 0.22) / 0.06) ** 2)))
    band = np.abs(x - p.center_x_mm - 0.03 * a) < half
    sx, sy, sr = p.spine_center
    spine = _ellipse(x, y, sx, sy + 0.3 * sr, 2.6 * sr, 2.1 * sr) < 1
    aorta = _ellipse(x, y, sx + 1.35 * sr, sy - 1.25 * sr, 0.95 * sr, 0.95 * sr) < 1
    return band | spine | aorta | (heart_radius(p, x, y, w) < 1.1)


def lung_side(p: Phantom, x: Num, y: Num, z: Num) -> Array:
    """0 outside the lungs, 1 in the right lung (x < midline), 2 in the left; broadcasts."""
    w = p.w_of(z)
    ca, cb = p.cage_axes(w)
    right = x < p.center_x_mm
    lung_cx = np.where(right, p.center_x_mm - 0.5 * ca, p.center_x_mm + 0.5 * ca)
    lung_cy = p.center_y_mm + 0.05 * p.half_depth_mm
    q = _ellipse(x, y, lung_cx, lung_cy, 0.55 * ca, 0.95 * cb)
    apex = q < np.clip((w - p.apex_w) / 0.2, 0, 1.0) * 1.3
    dome = np.where(right, p.dome_right_w, p.dome_left_w)
    posterior = np.clip((y - p.center_y_mm) / p.half_depth_mm, 0, 1)
    above_diaphragm = w < dome + 0.13 * np.minimum(q, 1.2) + 0.06 * posterior
    inside = (_ellipse(x, y, p.center_x_mm, p.center_y_mm, ca, cb) < 1) & apex & above_diaphragm
    inside &= ~mediastinum(p, x, y, w)
    return np.where(inside, np.where(right, 1, 2), 0).astype(np.uint8)
