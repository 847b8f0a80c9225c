"""Decide, from headers only, whether a series can be analysed, and say why not.

Each rule yields a reason with the same stable code as the error the reader would raise, so
``basira inspect`` tells a hospital exactly what a later analysis would refuse, before any pixel
is read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from pipelines.dicom.geometry import (
    GeometryTolerances,
    SlicePlacement,
    StackedGeometry,
    slice_normal,
    stack_slices,
)
from pipelines.dicom.header import InstanceHeader
from pipelines.dicom.pixels import decoder_available
from pipelines.errors import (
    BasiraError,
    ColourImageError,
    DuplicateSlicesError,
    LocalizerError,
    MissingAttributeError,
    NotAnImageError,
    NotAxialError,
    NotCTError,
    NotHounsfieldError,
    NotOriginalError,
    SliceThicknessError,
    TooFewSlicesError,
    UnsupportedTransferSyntaxError,
)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.2"
CT_SOP_CLASSES = frozenset(
    {CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE, LEGACY_ENHANCED_CT_IMAGE_STORAGE}
)
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
#: SOP class prefixes of objects that carry no image: SR, SEG, RT, waveforms, PR, KOS, PDF, ...
NON_IMAGE_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.88.",
    "1.2.840.10008.5.1.4.1.1.66",
    "1.2.840.10008.5.1.4.1.1.481.",
    "1.2.840.10008.5.1.4.1.1.9.",
    "1.2.840.10008.5.1.4.1.1.11.",
    "1.2.840.10008.5.1.4.1.1.104.",
    "1.2.840.10008.1.3.10",
)
#: ImageType values naming maps whose values are not Hounsfield units.
NON_HU_MAP_TYPES = frozenset(
    {
        "PERFUSION",
        "IODINE",
        "IODINE_MAP",
        "EFFECTIVE_Z",
        "ZEFF",
        "CBF",
        "CBV",
        "MTT",
        "TTP",
        "FUSED",
    }
)


@dataclass(frozen=True, kw_only=True)
class SelectionRules:
    """What makes a series analysable; the defaults describe diagnostic chest CT."""

    min_slices: int = 16
    min_slice_thickness_mm: float = 0.5
    max_slice_thickness_mm: float = 5.0
    max_obliquity_deg: float = 30.0
    geometry: GeometryTolerances = field(default_factory=GeometryTolerances)


@dataclass(frozen=True)
class Reason:
    """Why a series is not analysable: a stable code and a sentence."""

    code: str
    message: str

    @classmethod
    def from_error(cls, error: BasiraError) -> Reason:
        return cls(error.code, error.message)


def series_placements(instances: Sequence[InstanceHeader]) -> list[SlicePlacement]:
    """Every frame's placement of a series, in file order."""
    return [placement for inst in instances for placement in inst.placements]


@dataclass(frozen=True)
class Assessment:
    """A series' verdict, and the checked slice stack when the checks got as far as stacking."""

    reasons: list[Reason]
    #: ordered and checked under ``SelectionRules.geometry``; kept so the reader need not redo it
    geometry: StackedGeometry | None = None


def judge_series(instances: Sequence[InstanceHeader], rules: SelectionRules) -> list[Reason]:
    """All reasons ``instances`` (one series) cannot be analysed; empty means analysable."""
    return assess_series(instances, rules).reasons


def assess_series(instances: Sequence[InstanceHeader], rules: SelectionRules) -> Assessment:
    """:func:`judge_series`, keeping the stacked geometry it computed along the way."""
    try:
        check_content(instances[0])
    except BasiraError as exc:
        return Assessment([Reason.from_error(exc)])
    reasons: list[Reason] = []
    for check in (_check_image_type, _check_transfer_syntaxes):
        try:
            check(instances, rules)
        except BasiraError as exc:
            reasons.append(Reason.from_error(exc))
    stacked = None
    try:
        stacked = _stack(instances, rules)
        _check_thickness(instances[0], stacked, rules)
    except BasiraError as exc:
        reasons.append(Reason.from_error(exc))
    return Assessment(reasons, stacked)


def check_content(inst: InstanceHeader) -> None:
    """Refuse objects that are not CT images in Hounsfield units (first failing rule)."""
    name = inst.display_name
    if not inst.has_pixel_data or inst.sop_class_uid.startswith(NON_IMAGE_PREFIXES):
        raise NotAnImageError(
            f"{name} is a DICOM object without an image (SOP class {inst.sop_class_uid}).",
            sop_class_uid=inst.sop_class_uid,
        )
    if inst.sop_class_uid.startswith(SECONDARY_CAPTURE_PREFIX):
        raise NotCTError(
            f"{name} is a Secondary Capture (a screenshot) labelled {inst.modality or 'unknown'}; "
            "it holds no CT values.",
            sop_class_uid=inst.sop_class_uid,
        )
    if inst.samples_per_pixel != 1 or not inst.photometric_interpretation.startswith("MONOCHROME"):
        raise ColourImageError(
            f"{name} is a colour image ({inst.photometric_interpretation}); CT values cannot be "
            "recovered from it.",
            photometric_interpretation=inst.photometric_interpretation,
        )
    if inst.modality != "CT" or inst.sop_class_uid not in CT_SOP_CLASSES:
        raise NotCTError(
            f"{name} is not a CT image (modality {inst.modality or 'missing'}, "
            f"SOP class {inst.sop_class_uid}).",
            modality=inst.modality,
            sop_class_uid=inst.sop_class_uid,
        )
    if (inst.rescale_type and inst.rescale_type.upper() != "HU") or NON_HU_MAP_TYPES.intersection(
        inst.image_type
    ):
        raise NotHounsfieldError(
            f"{name} is a derived map (rescale type '{inst.rescale_type or 'unset'}', image type "
            f"{'/'.join(inst.image_type)}) whose values are not Hounsfield units.",
            rescale_type=inst.rescale_type,
            image_type=list(inst.image_type),
        )


def _check_image_type(instances: Sequence[InstanceHeader], rules: SelectionRules) -> None:
    image_type = instances[0].image_type
    if "LOCALIZER" in image_type:
        raise LocalizerError("The series is a localizer (scout) image.")
    if image_type[:1] == ("DERIVED",) or image_type[1:2] == ("SECONDARY",):
        raise NotOriginalError(
            f"The series is derived ({'/'.join(image_type)}), not the scanner's original images.",
            image_type=list(image_type),
        )


def _check_transfer_syntaxes(instances: Sequence[InstanceHeader], rules: SelectionRules) -> None:
    for syntax in sorted({inst.transfer_syntax_uid for inst in instances}):
        if not decoder_available(syntax):
            raise UnsupportedTransferSyntaxError(
                f"No installed decoder reads transfer syntax {syntax}.", transfer_syntax_uid=syntax
            )


def _stack(instances: Sequence[InstanceHeader], rules: SelectionRules) -> StackedGeometry:
    uids = [inst.sop_instance_uid for inst in instances]
    if len(set(uids)) != len(uids):
        raise DuplicateSlicesError(
            "Two or more files carry the same SOP Instance UID.",
            n_duplicates=len(uids) - len(set(uids)),
        )
    placements = series_placements(instances)
    n_frames = sum(inst.n_frames for inst in instances)
    if len(placements) != n_frames:
        raise MissingAttributeError(
            "Some slices lack ImagePositionPatient, ImageOrientationPatient or PixelSpacing, "
            "so they cannot be placed in patient space."
        )
    if n_frames < rules.min_slices:
        raise TooFewSlicesError(
            f"The series has {n_frames} slices; at least {rules.min_slices} are needed.",
            n_slices=n_frames,
            minimum=rules.min_slices,
        )
    _check_axial_within(placements[0], rules.max_obliquity_deg)
    return stack_slices(placements, rules.geometry)


def _check_thickness(
    first: InstanceHeader, stacked: StackedGeometry, rules: SelectionRules
) -> None:
    thickness = first.slice_thickness_mm or stacked.slice_step_mm
    if not rules.min_slice_thickness_mm <= thickness <= rules.max_slice_thickness_mm:
        raise SliceThicknessError(
            f"Slice thickness {thickness:.3g} mm is outside {rules.min_slice_thickness_mm}–"
            f"{rules.max_slice_thickness_mm} mm.",
            slice_thickness_mm=thickness,
        )


def _check_axial_within(placement: SlicePlacement, max_obliquity_deg: float) -> None:
    normal = slice_normal(placement.orientation)
    obliquity = math.degrees(math.acos(min(1.0, abs(float(normal[2])))))
    if obliquity > max_obliquity_deg:
        raise NotAxialError(
            f"The slices are {obliquity:.0f} degrees away from axial (at most "
            f"{max_obliquity_deg:.0f} allowed); sagittal and coronal series are not read.",
            obliquity_deg=round(obliquity, 1),
        )
