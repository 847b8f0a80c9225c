"""Per-study draws: the scanner protocol and the lesion plan, before any voxel is rendered.

Every random stream of study ``i`` is seeded from ``(seed, i, stream)`` alone, so a study never
depends on which worker renders it or on the studies before it, and the plan can be drawn (and
tested) without rendering.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar

import numpy as np

from pipelines.datasets.manifest import LesionType
from pipelines.synth.config import Attachment, LesionShape, SynthConfig

_T = TypeVar("_T")


class Stream(IntEnum):
    """Independent random streams of one study."""

    PROTOCOL = 0
    ANATOMY = 1
    VESSELS = 2
    LESIONS = 3
    NOISE = 4
    PLACEMENT = 5


def study_rng(seed: int, index: int, stream: Stream) -> np.random.Generator:
    """The generator of one stream of study ``index`` under ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, int(stream))))


@dataclass(frozen=True)
class LesionPlan:
    """What one lesion will be; where it goes is decided against the rendered anatomy."""

    type: LesionType
    shape: LesionShape
    diameter_mm: float
    attachment: Attachment


@dataclass(frozen=True)
class StudyProtocol:
    """The acquisition of one study and its lesion plan."""

    matrix_size: int
    pixel_spacing_mm: float
    slice_thickness_mm: float
    n_slices: int
    patient_position: str  # "HFS" or "FFS"
    contrast: bool
    noise_sd_hu: float
    kernel_sigma_mm: float
    lesions: tuple[LesionPlan, ...]

    @property
    def fov_mm(self) -> float:
        """The reconstructed field of view (square)."""
        return self.matrix_size * self.pixel_spacing_mm

    @property
    def kernel_name(self) -> str:
        """A scanner-like name for the reconstruction kernel the blur stands for."""
        return "SHARP" if self.kernel_sigma_mm < 0.5 else "STANDARD"


def _choice(rng: np.random.Generator, weights: dict[_T, float]) -> _T:
    keys = sorted(weights, key=str)
    p = np.array([weights[k] for k in keys], float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def sample_lesion_plans(config: SynthConfig, rng: np.random.Generator) -> tuple[LesionPlan, ...]:
    """Draw the number of lesions and, for each, its type, shape, size and attachment."""
    counts = np.array(config.lesion_count_weights, float)
    n = int(rng.choice(len(counts), p=counts / counts.sum()))
    low, high = config.lesion_diameter_mm
    plans = []
    for _ in range(n):
        diameter = math.exp(rng.uniform(math.log(low), math.log(high)))
        plans.append(
            LesionPlan(
                type=_choice(rng, config.lesion_type_weights),
                shape=_choice(rng, config.lesion_shape_weights),
                diameter_mm=round(float(diameter), 2),
                attachment=_choice(rng, config.lesion_attachment_weights),
            )
        )
    return tuple(plans)


def sample_protocol(config: SynthConfig, seed: int, index: int) -> StudyProtocol:
    """Draw study ``index``'s acquisition and lesion plan (no rendering)."""
    rng = study_rng(seed, index, Stream.PROTOCOL)
    spacing = float(rng.uniform(*config.pixel_spacing_mm))
    thickness = float(rng.uniform(*config.slice_thickness_mm))
    coverage = float(rng.uniform(*config.coverage_mm))
    n_slices = int(np.clip(round(coverage / thickness), *config.slice_count))
    position = "FFS" if rng.uniform() < config.feet_first_fraction else "HFS"
    contrast = bool(rng.uniform() < config.contrast_fraction)
    noise = float(rng.uniform(*config.noise_sd_hu))
    kernel = float(rng.uniform(*config.kernel_sigma_mm))
    lesions = sample_lesion_plans(config, study_rng(seed, index, Stream.LESIONS))
    return StudyProtocol(
        matrix_size=config.matrix_size,
        pixel_spacing_mm=round(spacing, 4),
        slice_thickness_mm=round(thickness, 3),
        n_slices=n_slices,
        patient_position=position,
        contrast=contrast,
        noise_sd_hu=noise,
        kernel_sigma_mm=kernel,
        lesions=lesions,
    )
