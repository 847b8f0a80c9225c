"""Key images: one RGB Secondary Capture per key finding, for PACS that cannot display a SEG.

Which findings get one is the study's choice (:meth:`AnalysedStudy.key_image_findings`: every
finding by default; ``basira predict`` picks those behind a "tumour suspected" label).

Each image is the source slice nearest the finding centre, in a lung window, enlarged to at
least :data:`MIN_WIDTH_PX` columns (whole-pixel factor, nearest neighbour, so the outline stays
on voxel edges), with the finding's mask outlined in yellow and a band below the anatomy with
the burned-in line ``AI finding N, confidence X, <model version>, not for diagnosis without
review``. The Secondary Capture copies the patient and study attributes of the source slice
(highdicom's ``from_ref_dataset``), references it in SourceImageSequence, and says
BurnedInAnnotation YES.
"""

from __future__ import annotations

import math

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DA, TM
from scipy import ndimage

from pipelines.findings import Finding
from pipelines.reports.sr import SR_SERIES_NUMBER
from pipelines.reports.study import AnalysedStudy, confidence_of

__all__ = [
    "KEY_IMAGE_SERIES_NUMBER",
    "LUNG_WINDOW_HU",
    "MIN_WIDTH_PX",
    "build_key_images",
    "caption",
    "patient_orientation",
    "render_key_image",
]

KEY_IMAGE_SERIES_NUMBER = SR_SERIES_NUMBER + 1
#: Lung window (centre -600 HU, width 1500 HU) as (lowest, highest) HU.
LUNG_WINDOW_HU = (-1350.0, 150.0)
MIN_WIDTH_PX = 512
_OUTLINE_RGB = (255, 230, 0)
_LINE_HEIGHT_PX = 14


def caption(study: AnalysedStudy, finding: Finding) -> str:
    """The line burned into the key image of ``finding``."""
    return (
        f"AI finding {finding.id}, confidence {confidence_of(finding):.2f}, "
        f"{study.algorithm.label}, not for diagnosis without review"
    )


def build_key_images(study: AnalysedStudy) -> list[hd.sc.SCImage]:
    """One Secondary Capture per key finding (ascending id), all in one new series."""
    series_uid = generate_uid()
    return [
        _key_image(study, finding, series_uid, number)
        for number, finding in enumerate(study.key_image_findings(), start=1)
    ]


def render_key_image(
    slice_hu: np.ndarray, outline_mask: np.ndarray, text: str, *, min_width_px: int = MIN_WIDTH_PX
) -> np.ndarray:
    """An RGB uint8 picture ``[rows, columns, 3]`` of one slice with the mask outlined.

    Args:
        slice_hu: the slice in HU, ``[j, i]`` (rows, columns).
        outline_mask: ``[j, i]`` bool, the finding's voxels in this slice.
        text: burned into a black band below the image, wrapped to its width.
        min_width_px: the slice is enlarged by a whole factor to at least this width.
    """
    low, high = LUNG_WINDOW_HU
    grey = np.clip((slice_hu - low) / (high - low) * 255.0, 0, 255).astype(np.uint8)
    scale = max(1, math.ceil(min_width_px / grey.shape[1]))
    grey = np.kron(grey, np.ones((scale, scale), dtype=np.uint8))
    mask = np.kron(outline_mask.astype(np.uint8), np.ones((scale, scale), dtype=np.uint8)) > 0
    edge = mask & ~ndimage.binary_erosion(mask, iterations=max(1, scale // 4))
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    rgb[edge] = _OUTLINE_RGB
    return _add_caption(rgb, text)


def _add_caption(rgb: np.ndarray, text: str) -> np.ndarray:
    font = ImageFont.load_default()
    width = rgb.shape[1]
    lines = _wrap(text, font, width - 8)
    band = np.zeros((_LINE_HEIGHT_PX * len(lines) + 8, width, 3), dtype=np.uint8)
    image = Image.fromarray(np.concatenate([rgb, band], axis=0))
    draw = ImageDraw.Draw(image)
    for row, line in enumerate(lines):
        draw.text((4, rgb.shape[0] + 4 + row * _LINE_HEIGHT_PX), line, fill="white", font=font)
    return np.asarray(image)


def _wrap(
    text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width_px: int
) -> list[str]:
    """Greedy word wrap to ``width_px`` as the font measures it (a word longer than a line
    gets a line of its own)."""
    lines: list[str] = []
    for word in text.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and font.getlength(candidate) <= width_px:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines


def _key_image(
    study: AnalysedStudy, finding: Finding, series_uid: str, number: int
) -> hd.sc.SCImage:
    k = study.nearest_slice(finding)
    source = study.headers_in_volume_order[k]
    pixels = render_key_image(
        study.volume.array_hu[k], study.findings_mask[k] == finding.id, caption(study, finding)
    )
    image = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=series_uid,
        series_number=KEY_IMAGE_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=number,
        manufacturer=study.algorithm.manufacturer,
        patient_orientation=patient_orientation(source.ImageOrientationPatient),
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    _describe(image, study, source)
    return image


def _describe(image: Dataset, study: AnalysedStudy, source: Dataset) -> None:
    """Add what a PACS shows and what links the picture to its source slice."""
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    image.SourceImageSequence = [reference]
    image.ConversionType = "WSD"
    image.BurnedInAnnotation = "YES"
    image.SeriesDescription = f"AI key images ({study.algorithm.label})"
    image.DerivationDescription = "Lung-window slice through an AI finding, outlined"
    date, time = DA(study.created.date()), TM(study.created.time())
    image.DateOfSecondaryCapture = image.ContentDate = image.InstanceCreationDate = date
    image.TimeOfSecondaryCapture = image.ContentTime = image.InstanceCreationTime = time


def patient_orientation(orientation: list[float]) -> tuple[str, str]:
    """DICOM PatientOrientation (e.g. ``("L", "P")``) of the rows and columns of a slice with
    ImageOrientationPatient ``orientation``: the letter of the patient axis each one runs
    closest to. One letter each, not the standard's optional oblique pairs (``"LP"``): highdicom
    accepts single letters only, and an oblique or rotated series (decubitus, in-plane
    rotation) otherwise lost its key images."""
    return _direction_letter(orientation[:3]), _direction_letter(orientation[3:6])


def _direction_letter(cosines: list[float]) -> str:
    letters = [("L", "R"), ("P", "A"), ("H", "F")]
    axis = int(np.argmax(np.abs(np.asarray(cosines, dtype=float))))
    return letters[axis][0 if cosines[axis] > 0 else 1]


def _direction_letters(cosines: list[float]) -> str:
    letters = [("L", "R"), ("P", "A"), ("H", "F")]
    order = np.argsort(-np.abs(np.asarray(cosines, dtype=float)))
    return "".join(
        letters[axis][0 if cosines[axis] > 0 else 1] for axis in order if abs(cosines[axis]) > 0.1
    )
