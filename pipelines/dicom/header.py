"""Read one DICOM file's header, prove the file is whole, and keep only what Basira needs.

Parsing defers every large value (Pixel Data above all), so indexing a series costs about a
millisecond a file and never loads pixels. The header record keeps no patient identifiers.
"""

from __future__ import annotations

import io
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from pipelines.dicom.fastheader import scan_header, scan_open_file
from pipelines.dicom.geometry import SlicePlacement
from pipelines.errors import (
    AbsurdLengthError,
    EmptyFileError,
    InvalidAttributeError,
    MissingAttributeError,
    MissingTransferSyntaxError,
    NotDicomError,
    PixelDataLengthError,
    TruncatedFileError,
)

PIXEL_DATA = 0x7FE00010
#: Values larger than this are not read while indexing (bytes).
DEFER_BYTES = 1024
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
#: No header value of an image file is larger than this; a longer declared length is corrupt.
MAX_HEADER_VALUE_BYTES = 64 * 1024**2
#: Where header values come from: a pydicom Dataset, or the fast scanner's keyword dict.
Fields = Dataset | Mapping[str, Any]


@dataclass(frozen=True)
class InstanceHeader:
    """What Basira knows about one file after reading its header."""

    path: Path
    display_name: str  # how the user named it (archive members as "archive.zip!/member")
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    transfer_syntax_uid: str
    image_type: tuple[str, ...]
    rows: int
    columns: int
    n_frames: int
    samples_per_pixel: int
    photometric_interpretation: str
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    rescale_type: str
    slice_thickness_mm: float | None
    #: one placement per frame (single-frame files: one)
    placements: tuple[SlicePlacement, ...]
    #: one (slope, intercept) per frame
    rescale: tuple[tuple[float, float], ...]
    has_pixel_data: bool
    pixel_data_offset: int  # file offset of the first pixel byte; -1 when encapsulated/absent
    pixel_data_length: int
    frame_of_reference_uid: str = ""
    series_description: str = ""
    body_part_examined: str = ""


class _ShortReadDetector(io.RawIOBase):
    """A file wrapper that notices reads cut short by the end of the file."""

    def __init__(self, raw: io.BufferedReader) -> None:
        self._raw = raw
        self.short_read = False

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if size is not None and size > 0 and 0 < len(data) < size:
            self.short_read = True
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True


def parse_header(path: Path, display_name: str | None = None) -> tuple[Dataset, InstanceHeader]:
    """Parse ``path``'s header (pixels deferred) and check the file is complete.

    Raises:
        EmptyFileError, NotDicomError, TruncatedFileError, AbsurdLengthError,
        MissingTransferSyntaxError, MissingAttributeError, InvalidAttributeError,
        PixelDataLengthError.
    """
    name = display_name or str(path)
    size = os.path.getsize(path)
    if size == 0:
        raise EmptyFileError(f"{name} is empty (0 bytes).", path=name)
    with open(path, "rb") as raw:
        detector = _ShortReadDetector(raw)
        ds = _dcmread(detector, raw, size, name)
        if detector.short_read:
            raise TruncatedFileError(
                f"{name} ends in the middle of a data element ({size} bytes): the copy is "
                "incomplete. Re-send the complete file.",
                path=name,
                size_bytes=size,
            )
        deflated = _transfer_syntax(ds) == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
        if not deflated:  # offsets of a deflated file point into the inflated stream
            _check_deferred_lengths(ds, size, name)
        try:
            return ds, _summarise_dataset(ds, path, name, in_memory=deflated)
        except (ValueError, TypeError, OverflowError) as exc:  # pydicom converts values lazily
            raise InvalidAttributeError(
                f"{name} holds an attribute value that does not conform to DICOM: {exc}", path=name
            ) from exc


def _dcmread(detector: _ShortReadDetector, raw: io.BufferedReader, size: int, name: str) -> Dataset:
    try:
        return pydicom.dcmread(detector, defer_size=DEFER_BYTES)
    except InvalidDicomError as exc:
        raise NotDicomError(
            f"{name} is not a DICOM file (no DICM preamble or file meta).", path=name
        ) from exc
    except (EOFError, OSError, ValueError, KeyError, TypeError, AttributeError, zlib.error) as exc:
        # pydicom raises these for headers it cannot parse; at the end of a file it is truncation
        if raw.tell() >= size:
            raise TruncatedFileError(
                f"{name} ends in the middle of its header.", path=name
            ) from exc
        raise NotDicomError(f"{name} has a corrupt DICOM header: {exc}", path=name) from exc


def _transfer_syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(meta.get("TransferSyntaxUID", "")) if meta else ""


def _check_deferred_lengths(ds: Dataset, size: int, name: str) -> None:
    """Refuse values whose declared length runs past the end of the file, before reading them.

    A length that matches what the element should hold (Pixel Data of the declared matrix, or a
    header value of plausible size) means the file was cut: truncated. Anything else is a
    corrupt length field: absurd.
    """
    for tag in list(ds.keys()):
        element: Any = ds.get_item(tag, keep_deferred=True)
        tell = getattr(element, "value_tell", None)
        length = getattr(element, "length", None)
        if tell is None or length is None or length == 0xFFFFFFFF or tell + length <= size:
            continue
        detail = {
            "path": name,
            "tag": f"{int(tag):08X}",
            "declared": length,
            "available": size - tell,
        }
        plausible = _expected_pixel_bytes(ds) if tag == PIXEL_DATA else MAX_HEADER_VALUE_BYTES
        if length > plausible + 1:
            raise AbsurdLengthError(
                f"{name}: element ({int(tag):08X}) declares {length} bytes, more than it can "
                f"hold (at most {plausible}); the file is corrupt.",
                **detail,
            )
        raise TruncatedFileError(
            f"{name} is truncated: element ({int(tag):08X}) needs {length} bytes, "
            f"{size - tell} remain. Re-send the complete file.",
            **detail,
        )


def _expected_pixel_bytes(ds: Dataset) -> int:
    def number(keyword: str, default: int) -> int:
        try:
            return int(ds.get(keyword, default) or default)
        except (TypeError, ValueError):
            return default

    return (
        number("Rows", 0)
        * number("Columns", 0)
        * number("NumberOfFrames", 1)
        * number("SamplesPerPixel", 1)
        * number("BitsAllocated", 16)
        // 8
    )


def read_header(
    path: Path, display_name: str | None = None, fh: io.RawIOBase | None = None
) -> InstanceHeader:
    """What Basira needs from ``path``'s header, read the fastest safe way.

    The tag-targeted scanner (:mod:`pipelines.dicom.fastheader`) answers for ordinary files;
    anything it is unsure of goes through :func:`parse_header`, which raises the precise error.
    ``fh``, when given, is ``path`` already open unbuffered: the scanner reads it instead of
    opening the file again.

    Raises:
        The errors of :func:`parse_header`.
    """
    name = display_name or str(path)
    values = scan_header(path) if fh is None else scan_open_file(fh, os.fstat(fh.fileno()).st_size)
    if values is not None:
        sop_class = values.get("SOPClassUID") or values.get("MediaStorageSOPClassUID", "")
        try:
            return _summarise(
                values, path, name, sop_class, values.get("TransferSyntaxUID", ""), values["_pixel"]
            )
        except (ValueError, TypeError, OverflowError):
            pass  # pydicom's full parse below words the error
    return parse_header(path, name)[1]


def _summarise_dataset(ds: Dataset, path: Path, name: str, *, in_memory: bool) -> InstanceHeader:
    meta = getattr(ds, "file_meta", None)
    sop_class = str(
        ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else "")
    )
    pixel = ds.get_item(PIXEL_DATA, keep_deferred=True) if PIXEL_DATA in ds else None
    offset, length = (-1, 0) if in_memory else _pixel_data_extent(pixel)
    return _summarise(
        ds, path, name, sop_class, _transfer_syntax(ds), (pixel is not None, offset, length)
    )


def _summarise(
    fields: Fields,
    path: Path,
    name: str,
    sop_class: str,
    transfer_syntax: str,
    pixel: tuple[bool, int, int],
) -> InstanceHeader:
    """The header record from ``fields`` (a pydicom Dataset, or the scanner's keyword dict)."""
    if sop_class == MEDIA_STORAGE_DIRECTORY:
        return _directory_header(path, name, transfer_syntax)
    if not transfer_syntax:
        raise MissingTransferSyntaxError(
            f"{name} has no Transfer Syntax UID in its file meta; its pixels cannot be read.",
            path=name,
        )
    study = str(fields.get("StudyInstanceUID", "") or "")
    series = str(fields.get("SeriesInstanceUID", "") or "")
    if not study or not series:
        raise MissingAttributeError(
            f"{name} has no Study or Series Instance UID, so it cannot be grouped.", path=name
        )
    n_frames = int(fields.get("NumberOfFrames", 1) or 1)
    has_pixel_data, offset, length = pixel
    header = InstanceHeader(
        path=path,
        display_name=name,
        sop_instance_uid=str(fields.get("SOPInstanceUID", "") or ""),
        sop_class_uid=sop_class,
        study_instance_uid=study,
        series_instance_uid=series,
        modality=str(fields.get("Modality", "") or ""),
        transfer_syntax_uid=transfer_syntax,
        image_type=tuple(str(v).strip().upper() for v in _as_list(fields.get("ImageType"))),
        rows=int(fields.get("Rows", 0) or 0),
        columns=int(fields.get("Columns", 0) or 0),
        n_frames=n_frames,
        samples_per_pixel=int(fields.get("SamplesPerPixel", 1) or 1),
        photometric_interpretation=str(fields.get("PhotometricInterpretation", "") or ""),
        bits_allocated=int(fields.get("BitsAllocated", 0) or 0),
        bits_stored=int(fields.get("BitsStored", 0) or fields.get("BitsAllocated", 0) or 0),
        pixel_representation=int(fields.get("PixelRepresentation", 0) or 0),
        rescale_type=str(fields.get("RescaleType", "") or ""),
        slice_thickness_mm=_slice_thickness(fields),
        placements=_placements(fields, n_frames),
        rescale=_rescale(fields, n_frames),
        has_pixel_data=has_pixel_data,
        pixel_data_offset=offset,
        pixel_data_length=length,
        frame_of_reference_uid=str(fields.get("FrameOfReferenceUID", "") or ""),
        series_description=str(fields.get("SeriesDescription", "") or ""),
        body_part_examined=str(fields.get("BodyPartExamined", "") or ""),
    )
    _check_pixel_length(header)
    return header


def _directory_header(path: Path, name: str, transfer_syntax: str) -> InstanceHeader:
    return InstanceHeader(
        path=path,
        display_name=name,
        sop_instance_uid="",
        sop_class_uid=MEDIA_STORAGE_DIRECTORY,
        study_instance_uid="",
        series_instance_uid="",
        modality="",
        transfer_syntax_uid=transfer_syntax,
        image_type=(),
        rows=0,
        columns=0,
        n_frames=0,
        samples_per_pixel=0,
        photometric_interpretation="",
        bits_allocated=0,
        bits_stored=0,
        pixel_representation=0,
        rescale_type="",
        slice_thickness_mm=None,
        placements=(),
        rescale=(),
        has_pixel_data=False,
        pixel_data_offset=-1,
        pixel_data_length=0,
    )


def _pixel_data_extent(pixel: Any) -> tuple[int, int]:
    if pixel is None:
        return -1, 0
    length = getattr(pixel, "length", None)
    tell = getattr(pixel, "value_tell", None)
    if length is None or tell is None:  # small enough to have been read: its bytes are in memory
        value = pixel.value or b""
        return -1, len(value)
    if length == 0xFFFFFFFF:  # encapsulated (compressed) frames
        return -1, 0
    return int(tell), int(length)


def _check_pixel_length(header: InstanceHeader) -> None:
    """Native pixel data must hold every declared frame; refuse before any allocation."""
    if (
        not header.has_pixel_data
        or header.pixel_data_offset < 0
        or header.bits_allocated == 0
        or header.samples_per_pixel != 1  # colour (possibly subsampled): refused by content rules
    ):
        return
    expected = (
        header.rows
        * header.columns
        * header.n_frames
        * header.samples_per_pixel
        * header.bits_allocated
        // 8
    )
    if header.pixel_data_length < expected:
        raise PixelDataLengthError(
            f"{header.display_name}: Pixel Data holds {header.pixel_data_length} bytes but "
            f"{header.rows}x{header.columns}x{header.n_frames} frames need {expected}.",
            path=header.display_name,
            expected=expected,
            found=header.pixel_data_length,
        )


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str | bytes):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    values = _as_list(value)
    if len(values) != n:
        return None
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None


def _slice_thickness(ds: Fields) -> float | None:
    value = ds.get("SliceThickness")
    if value in (None, ""):
        shared = _functional_group(ds, "SharedFunctionalGroupsSequence", 0)
        measures = _first_item(shared, "PixelMeasuresSequence")
        value = measures.get("SliceThickness") if measures is not None else None
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _first_item(ds: Fields | None, keyword: str) -> Dataset | None:
    if ds is None:
        return None
    sequence = ds.get(keyword)
    return sequence[0] if sequence else None


def _functional_group(ds: Fields, keyword: str, index: int) -> Dataset | None:
    sequence = ds.get(keyword)
    if not sequence or index >= len(sequence):
        return None
    item: Dataset = sequence[index]
    return item


def _frame_attribute(ds: Fields, frame: int, sequence: str, keyword: str) -> Any:
    """An enhanced multi-frame attribute: per-frame group first, then shared group."""
    for group_keyword, index in (
        ("PerFrameFunctionalGroupsSequence", frame),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        item = _first_item(_functional_group(ds, group_keyword, index), sequence)
        if item is not None and keyword in item:
            return item.get(keyword)
    return None


def _placements(ds: Fields, n_frames: int) -> tuple[SlicePlacement, ...]:
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if "PerFrameFunctionalGroupsSequence" not in ds:
        placement = _placement(
            ds.get("ImageOrientationPatient"),
            ds.get("ImagePositionPatient"),
            ds.get("PixelSpacing"),
            rows,
            columns,
        )
        return (placement,) if placement else ()
    found = []
    for frame in range(n_frames):
        placement = _placement(
            _frame_attribute(ds, frame, "PlaneOrientationSequence", "ImageOrientationPatient"),
            _frame_attribute(ds, frame, "PlanePositionSequence", "ImagePositionPatient"),
            _frame_attribute(ds, frame, "PixelMeasuresSequence", "PixelSpacing"),
            rows,
            columns,
        )
        if placement is None:
            return ()
        found.append(placement)
    return tuple(found)


def _placement(
    orientation: Any, position: Any, spacing: Any, rows: int, columns: int
) -> SlicePlacement | None:
    iop, ipp, ps = _floats(orientation, 6), _floats(position, 3), _floats(spacing, 2)
    if iop is None or ipp is None or ps is None:
        return None
    return SlicePlacement(iop, (ipp[0], ipp[1], ipp[2]), (ps[0], ps[1]), rows, columns)


def _rescale(ds: Fields, n_frames: int) -> tuple[tuple[float, float], ...]:
    if "PerFrameFunctionalGroupsSequence" not in ds:
        return (_slope_intercept(ds.get("RescaleSlope"), ds.get("RescaleIntercept")),)
    return tuple(
        _slope_intercept(
            _frame_attribute(ds, f, "PixelValueTransformationSequence", "RescaleSlope"),
            _frame_attribute(ds, f, "PixelValueTransformationSequence", "RescaleIntercept"),
        )
        for f in range(n_frames)
    )


def _slope_intercept(slope: Any, intercept: Any) -> tuple[float, float]:
    """Rescale values; absent ones are recorded as NaN so the reader can log the default."""

    def parse(value: Any) -> float:
        try:
            return float(value) if value not in (None, "") else float("nan")
        except (TypeError, ValueError):
            return float("nan")

    return parse(slope), parse(intercept)
