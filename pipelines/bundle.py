"""The model bundle config: ``models/<name>/bundle.yaml``, one typed file per model.

A bundle is everything needed to rebuild, train and run a model the same way everywhere: the
preprocessing contract (the :class:`~pipelines.transforms.PreprocessConfig` that ``prepare``
and the service use), the network by registry name, the patch size, the training recipe, the
sliding-window settings, how probability maps become findings, the intended use, and slots the
evaluation and export steps fill (calibration file, operating point, checksums).

Spatial sizes are array order ``(k, j, i)``, the order of the cached volumes. Every model has
``extra="forbid"``: a typo in a bundle fails on load, naming the field.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.config import load_config
from pipelines.datasets.manifest import LesionType
from pipelines.findings import FindingsConfig
from pipelines.networks import known_networks, size_divisor
from pipelines.synth.config import Attachment, LesionShape, SynthConfig
from pipelines.transforms import LungCropConfig, PreprocessConfig

#: The bundle file inside a bundle or release folder.
BUNDLE_FILE = "bundle.yaml"

PositiveSize = tuple[
    Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NetworkConfig(_Strict):
    """A registered network (see :mod:`pipelines.networks`) and overrides of its defaults."""

    name: str = "unet"
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known(self) -> NetworkConfig:
        if self.name not in known_networks():
            raise ValueError(f"unknown network '{self.name}'; known: {known_networks()}")
        return self


class LossName(StrEnum):
    """Segmentation losses on one sigmoid channel (see ``pipelines.training.losses``)."""

    DICE_FOCAL = "dice_focal"
    DICE_CE = "dice_ce"
    DICE_CE_BATCH = "dice_ce_batch"
    LESION_DICE_CE = "lesion_dice_ce"


class TrainingConfig(_Strict):
    """The optimisation recipe. Patience counts validations, not epochs."""

    epochs: int = Field(default=20, ge=1)
    batch_size: int = Field(default=4, ge=1)
    patches_per_case: int = Field(default=4, ge=1)
    positive_fraction: float = Field(default=0.5, ge=0, le=1)
    #: share of the background patches centred on soft tissue touching lung air (vessels,
    #: hila, pleura) rather than anywhere in the lung box; see pipelines.training.sampling.
    hard_negative_fraction: float = Field(default=0.0, ge=0, le=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-5, ge=0)
    loss: LossName = LossName.DICE_FOCAL
    #: start the network predicting this lesion probability everywhere (``None``: the
    #: framework's initialisation); see :func:`pipelines.networks.set_output_prior`.
    output_prior: float | None = Field(default=None, gt=0, lt=1)
    seed: int = 0
    early_stopping_patience: int = Field(default=3, ge=1)
    validate_every: int = Field(default=5, ge=1)
    #: hard-negative mining, 0 turns it off: every ``mine_every`` epochs the model being trained
    #: runs over the lesion-free training cases, and its ``mine_per_case`` highest-scoring
    #: findings (probability >= ``mine_threshold``) become the centres of a ``mined_fraction``
    #: share of the background patches until the next round (pipelines.training.mining).
    mine_every: int = Field(default=0, ge=0)
    mine_per_case: int = Field(default=8, ge=1, le=255)
    mine_threshold: float = Field(default=0.2, gt=0, le=1)
    mined_fraction: float = Field(default=0.0, ge=0, le=1)
    amp: bool = True  # only ever used on CUDA


def _default_types() -> dict[LesionType, float]:
    return dict(SynthConfig().lesion_type_weights)


def _default_shapes() -> dict[LesionShape, float]:
    return dict(SynthConfig().lesion_shape_weights)


class InsertionConfig(_Strict):
    """Synthetic lesions painted into training patches as they are drawn.

    The generator's own lesion model (shapes, types, densities) with wider appearance ranges
    (density, margin irregularity, texture, kernel blur), placed in the patch's lung against
    vessels, against the pleura or free, with the case's slice thickness as partial volume
    (:mod:`pipelines.training.insertion`). ``probability`` 0 turns insertion off.
    """

    probability: float = Field(default=0.0, ge=0, le=1)  # share of patches that get lesions
    max_per_patch: int = Field(default=2, ge=1, le=8)  # 1..max, uniformly
    diameter_mm: tuple[Annotated[float, Field(gt=0)], float] = (3.0, 30.0)
    #: diameters below ``small_below_mm`` are drawn with probability ``small_fraction``
    #: (log-uniform within each part), skewing the draws towards the nodules that are missed.
    small_below_mm: float = Field(default=10.0, gt=0)
    small_fraction: float = Field(default=0.7, ge=0, le=1)
    type_weights: dict[LesionType, float] = Field(default_factory=_default_types)
    shape_weights: dict[LesionShape, float] = Field(default_factory=_default_shapes)
    attachment_weights: dict[Attachment, float] = Field(
        default_factory=lambda: {
            Attachment.NONE: 0.4,
            Attachment.VESSEL: 0.35,
            Attachment.PLEURA: 0.25,
        }
    )
    solid_hu: tuple[float, float] = (-40.0, 90.0)
    ground_glass_hu: tuple[float, float] = (-750.0, -350.0)
    #: the outline moves by up to this share of the radius (smooth random field)
    margin_irregularity: float = Field(default=0.2, ge=0, le=1)
    #: standard deviation (HU) of a smooth density texture inside the lesion, up to this
    texture_hu: float = Field(default=40.0, ge=0)
    #: in-plane Gaussian blur of the painted lesion (reconstruction kernel), drawn in this range
    kernel_sigma_mm: tuple[float, float] = (0.2, 1.0)

    @model_validator(mode="after")
    def _ranges(self) -> InsertionConfig:
        for name in ("diameter_mm", "solid_hu", "ground_glass_hu", "kernel_sigma_mm"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name}: low {low} is above high {high}")
        for name in ("type_weights", "shape_weights", "attachment_weights"):
            weights = getattr(self, name)
            if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
                raise ValueError(f"{name} must be non-negative with a positive sum")
        if LesionType.UNKNOWN in self.type_weights:
            raise ValueError("type_weights cannot name 'unknown'")
        return self


class AugmentationConfig(_Strict):
    """Random changes applied to training patches only (probabilities per patch)."""

    flip_prob: float = Field(default=0.5, ge=0, le=1)
    intensity_scale: float = Field(default=0.1, ge=0, le=1)
    intensity_shift: float = Field(default=0.05, ge=0, le=1)
    intensity_prob: float = Field(default=0.5, ge=0, le=1)
    rotate_deg: float = Field(default=0.0, ge=0, le=45)
    zoom: float = Field(default=0.0, ge=0, le=0.5)
    affine_prob: float = Field(default=0.0, ge=0, le=1)
    insertion: InsertionConfig = Field(default_factory=InsertionConfig)


class BlendMode(StrEnum):
    """How overlapping sliding windows are averaged."""

    GAUSSIAN = "gaussian"
    CONSTANT = "constant"


class InferenceConfig(_Strict):
    """Sliding-window settings for validation, evaluation and serving.

    ``lung_crop`` says where the windows run (the box around the lungs, see
    :func:`~pipelines.transforms.lung_box`); it is not part of the preprocessing contract.
    """

    roi_size_kji: PositiveSize = (64, 64, 64)
    overlap: float = Field(default=0.25, ge=0, lt=1)
    blend: BlendMode = BlendMode.GAUSSIAN
    sw_batch_size: int = Field(default=2, ge=1)
    lung_crop: LungCropConfig = Field(default_factory=LungCropConfig)


class IntendedUse(_Strict):
    """What studies the model may be shown; the service refuses the rest."""

    modality: str = "CT"
    body_part: str = "CHEST"
    slice_thickness_mm: tuple[Annotated[float, Field(gt=0)], float] = (0.5, 3.0)
    min_slices: int = Field(default=60, ge=1)


class Bundle(_Strict):
    """``bundle.yaml``: one model's full definition (see module docstring)."""

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    description: str = ""
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    patch_size_kji: PositiveSize = (64, 64, 64)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    augmentation: AugmentationConfig = Field(default_factory=AugmentationConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    findings: FindingsConfig = Field(default_factory=FindingsConfig)
    intended_use: IntendedUse = Field(default_factory=IntendedUse)
    #: filled by evaluation/export: paths relative to the bundle folder, sha256 per file.
    calibration: str | None = None
    operating_point: float | None = Field(default=None, ge=0, le=1)
    checksums: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _sizes_fit_network(self) -> Bundle:
        divisor = size_divisor(self.network.name, self.network.kwargs)
        for field_name, size in (
            ("patch_size_kji", self.patch_size_kji),
            ("inference.roi_size_kji", self.inference.roi_size_kji),
        ):
            if any(s % divisor for s in size):
                raise ValueError(
                    f"{field_name} {list(size)} must be multiples of {divisor} "
                    f"for network '{self.network.name}'"
                )
        return self


def load_bundle(path: Path) -> Bundle:
    """Read and validate ``bundle.yaml``.

    Raises:
        InputNotFoundError: ``path`` does not exist.
        ConfigError: the YAML does not parse or a field is unknown or invalid (the message
            names the field, e.g. ``training.lr``).
    """
    return load_config(path, Bundle, what="Bundle file")


def write_bundle(bundle: Bundle, path: Path) -> None:
    """Write ``bundle`` as YAML (field order as declared), e.g. after filling its slots."""
    data = bundle.model_dump(mode="json")
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def preprocessing_hash(bundle: Bundle) -> str:
    """sha256 of the preprocessing contract: what must match between training and serving.

    Covers the preprocess config, the patch size and the sliding-window settings, as JSON with
    sorted keys, so it changes exactly when a model would see different inputs. The lung crop is
    left out: it chooses which windows run, not what a window holds, so a model exported before
    it existed, or with another margin, still fits.
    """
    contract = {
        "preprocess": bundle.preprocess.model_dump(mode="json"),
        "patch_size_kji": list(bundle.patch_size_kji),
        "inference": bundle.inference.model_dump(mode="json", exclude={"lung_crop"}),
    }
    text = json.dumps(contract, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def flatten_bundle(bundle: Bundle) -> dict[str, str]:
    """Dotted ``key → value`` strings of every field (for tracking params)."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            flat[prefix] = json.dumps(value) if isinstance(value, list | dict) else str(value)

    walk("", bundle.model_dump(mode="json"))
    return flat


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (the bundle's ``checksums`` values)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
