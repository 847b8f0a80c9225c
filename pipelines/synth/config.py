"""The synthetic generator's configuration: every range a study is drawn from.

``params.yaml`` holds these fields under its ``synth:`` section and ``basira synth --config FILE``
reads a YAML file holding them (or a ``synth:`` section). Unknown fields are refused so a typo
never silently falls back to a default.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydicom.uid import ExplicitVRLittleEndian

from pipelines.config import load_config
from pipelines.datasets.manifest import LesionType


class LesionShape(StrEnum):
    """How a lesion's outline is built."""

    SPHERICAL = "spherical"
    ELLIPSOIDAL = "ellipsoidal"
    LOBULATED = "lobulated"  # union of overlapping spheres
    SPICULATED = "spiculated"  # a core with tapering spikes


class Attachment(StrEnum):
    """What a lesion is placed against."""

    NONE = "none"
    PLEURA = "pleura"
    VESSEL = "vessel"


_K = TypeVar("_K")


def _ordered(bounds: tuple[float, float]) -> tuple[float, float]:
    if bounds[0] > bounds[1]:
        raise ValueError(f"range low {bounds[0]} is above high {bounds[1]}")
    return bounds


def _positive_weights(weights: dict[_K, float]) -> dict[_K, float]:
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError("weights must be non-negative with a positive sum")
    return weights


PositiveRange = Annotated[tuple[Annotated[float, Field(gt=0)], float], AfterValidator(_ordered)]
CountRange = Annotated[tuple[Annotated[int, Field(ge=1)], int], AfterValidator(_ordered)]


class SynthConfig(BaseModel):
    """Ranges and distributions every synthetic study is sampled from (uniform unless stated)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    matrix_size: int = Field(
        default=512, ge=32, le=1024, description="rows = columns of every slice"
    )
    pixel_spacing_mm: PositiveRange = (0.6, 0.9)
    slice_thickness_mm: PositiveRange = Field(
        default=(0.8, 3.0), description="slice thickness; the slice step equals it"
    )
    coverage_mm: PositiveRange = Field(
        default=(250.0, 350.0), description="cranio-caudal extent; slices = coverage / thickness"
    )
    slice_count: CountRange = Field(
        default=(80, 400), description="the slice count is clipped to this"
    )
    feet_first_fraction: float = Field(default=0.25, ge=0, le=1, description="share of FFS studies")
    contrast_fraction: float = Field(
        default=0.5, ge=0, le=1, description="share of contrast studies"
    )
    noise_sd_hu: Annotated[tuple[float, float], AfterValidator(_ordered)] = (8.0, 30.0)
    kernel_sigma_mm: Annotated[tuple[float, float], AfterValidator(_ordered)] = Field(
        default=(0.3, 0.9),
        description="in-plane Gaussian blur standing for the reconstruction kernel",
    )
    lesion_count_weights: list[Annotated[float, Field(ge=0)]] = Field(
        default=[0.34, 0.24, 0.19, 0.13, 0.10],
        min_length=1,
        max_length=9,
        description="relative probability of 0, 1, 2, ... lesions in a study",
    )
    lesion_diameter_mm: PositiveRange = Field(
        default=(3.0, 30.0),
        description="nominal diameter, drawn log-uniformly (small ones dominate)",
    )
    lesion_type_weights: Annotated[dict[LesionType, float], AfterValidator(_positive_weights)] = {
        LesionType.SOLID: 0.55,
        LesionType.PART_SOLID: 0.2,
        LesionType.GROUND_GLASS: 0.25,
    }
    lesion_shape_weights: Annotated[dict[LesionShape, float], AfterValidator(_positive_weights)] = {
        LesionShape.SPHERICAL: 0.3,
        LesionShape.ELLIPSOIDAL: 0.25,
        LesionShape.LOBULATED: 0.25,
        LesionShape.SPICULATED: 0.2,
    }
    lesion_attachment_weights: Annotated[
        dict[Attachment, float], AfterValidator(_positive_weights)
    ] = {Attachment.NONE: 0.5, Attachment.PLEURA: 0.25, Attachment.VESSEL: 0.25}
    vessel_min_radius_mm: float = Field(
        default=0.5, gt=0, description="radius of the terminal vessel branches"
    )
    vessel_max_segments: int = Field(
        default=12000,
        ge=10,
        description="vessel segments per study (4 trees, each with 1/8 as terminals)",
    )
    transfer_syntax: str = Field(
        default=str(ExplicitVRLittleEndian),
        description="transfer syntax UID of the written CT series",
    )

    @model_validator(mode="after")
    def _check_lesion_weights(self) -> SynthConfig:
        if sum(self.lesion_count_weights) <= 0:
            raise ValueError("lesion_count_weights must have a positive sum")
        if LesionType.UNKNOWN in self.lesion_type_weights:
            raise ValueError("lesion_type_weights cannot name 'unknown'")
        return self

    def digest(self) -> str:
        """A short hash of every field, mixed into UIDs so two configs never share a UID."""
        text = self.model_dump_json()
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def load_synth_config(path: Path | None, section: str = "synth") -> SynthConfig:
    """Read a :class:`SynthConfig` from YAML; ``None`` gives the defaults.

    The file holds the fields under a ``section`` key (``synth:`` in ``params.yaml``;
    ``synth_shifted:`` there describes the shifted test set), or at its top level when the
    section asked for is the default ``synth``.

    Raises:
        InputNotFoundError: ``path`` does not exist.
        ConfigError: the YAML does not parse, the section is missing, or a field is unknown or
            out of range.
    """
    if path is None:
        return SynthConfig()
    return load_config(
        path, SynthConfig, what="Config file", section=section, top_level_ok=section == "synth"
    )
