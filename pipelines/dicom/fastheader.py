"""A tag-targeted header scanner for the files scanners write most: little-endian, single frame.

pydicom builds a full :class:`~pydicom.dataset.Dataset` for every file, a large share of the time
a series takes to read (``benchmarks/RESULTS.md``). This scanner walks the top-level elements of
the bytes before Pixel Data, keeps the two dozen values Basira uses and skips everything else,
including nested sequences, without decoding it.

It answers only when it is sure: big-endian or deflated files, Enhanced multi-frame objects,
out-of-order tags, values that do not parse, lengths running past the end of the file, or
anything after Pixel Data make it return ``None``, and the caller falls back to pydicom, which
reports the precise error. A test checks that both paths give the same header on every file
they both accept.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"

PIXEL_DATA = 0x7FE00010
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
#: Enhanced multi-frame functional groups: their per-frame values need pydicom.
_FUNCTIONAL_GROUPS = frozenset({0x52009229, 0x52009230})
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
#: The standard's VRs with a 2-byte length (any other upper-case pair is read as one too).
_SHORT_VRS = frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN"}
    | {b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
)
#: group, element, VR, 2-byte length: the head of an explicit VR element with a short VR.
_HEAD = struct.Struct("<HH2sH")
_U32 = struct.Struct("<I")
#: Big endian and deflated data sets are left to pydicom. Every other transfer syntax encodes the
#: data set as explicit VR little endian (compression changes only the pixel data) or implicit.
_LEFT_TO_PYDICOM = frozenset({"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"})
_CHARSETS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}
_FIRST_READ = 16 * 1024
_MAX_HEADER = 4 * 1024**2
#: Elements after Pixel Data (trailing padding, private tags) are checked up to this size.
_MAX_TAIL = 64 * 1024


def _text(raw: bytes, encoding: str) -> Any:
    values = [v.strip(" \x00") for v in raw.decode(encoding).split("\\")]
    return values[0] if len(values) == 1 else values


def _uid(raw: bytes, _: str) -> str:
    return raw.decode("ascii").strip(" \x00")


def _numbers(kind: Callable[[str], Any]) -> Callable[[bytes, str], Any]:
    def parse(raw: bytes, _: str) -> Any:
        text = raw.decode("ascii").strip(" \x00")
        if not text:
            return None
        values = [kind(v.strip()) for v in text.split("\\")]
        return values[0] if len(values) == 1 else values

    return parse


def _us(raw: bytes, _: str) -> int | None:
    if len(raw) == 0:
        return None
    if len(raw) != 2:
        raise ValueError("US value of length other than 2")
    value: int = struct.unpack("<H", raw)[0]
    return value


#: tag → (keyword, VRs accepted in explicit VR files, parser)
_WANTED: dict[int, tuple[str, frozenset[bytes], Callable[[bytes, str], Any]]] = {
    0x00080008: ("ImageType", frozenset({b"CS"}), _text),
    0x00080016: ("SOPClassUID", frozenset({b"UI"}), _uid),
    0x00080018: ("SOPInstanceUID", frozenset({b"UI"}), _uid),
    0x00080060: ("Modality", frozenset({b"CS"}), _text),
    0x0008103E: ("SeriesDescription", frozenset({b"LO"}), _text),
    0x00180015: ("BodyPartExamined", frozenset({b"CS"}), _text),
    0x00180050: ("SliceThickness", frozenset({b"DS"}), _numbers(float)),
    0x0020000D: ("StudyInstanceUID", frozenset({b"UI"}), _uid),
    0x0020000E: ("SeriesInstanceUID", frozenset({b"UI"}), _uid),
    0x00200032: ("ImagePositionPatient", frozenset({b"DS"}), _numbers(float)),
    0x00200037: ("ImageOrientationPatient", frozenset({b"DS"}), _numbers(float)),
    0x00200052: ("FrameOfReferenceUID", frozenset({b"UI"}), _uid),
    0x00280002: ("SamplesPerPixel", frozenset({b"US"}), _us),
    0x00280004: ("PhotometricInterpretation", frozenset({b"CS"}), _text),
    0x00280008: ("NumberOfFrames", frozenset({b"IS"}), _numbers(int)),
    0x00280010: ("Rows", frozenset({b"US"}), _us),
    0x00280011: ("Columns", frozenset({b"US"}), _us),
    0x00280030: ("PixelSpacing", frozenset({b"DS"}), _numbers(float)),
    0x00280100: ("BitsAllocated", frozenset({b"US"}), _us),
    0x00280101: ("BitsStored", frozenset({b"US"}), _us),
    0x00280103: ("PixelRepresentation", frozenset({b"US"}), _us),
    0x00281052: ("RescaleIntercept", frozenset({b"DS"}), _numbers(float)),
    0x00281053: ("RescaleSlope", frozenset({b"DS"}), _numbers(float)),
    0x00281054: ("RescaleType", frozenset({b"LO"}), _text),
}
_CHARSET_TAG = 0x00080005


class _Unsure(Exception):
    """The file is not one the scanner can vouch for; pydicom must read it."""


class _Buffer:
    """The start of an open file, read further on demand (headers are a few KB; pixels never).

    ``base`` is the file offset of ``data[0]``: a buffer over the elements after Pixel Data
    starts there.
    """

    def __init__(self, fh: io.RawIOBase, size: int, base: int = 0) -> None:
        self._fh = fh
        self._base = base
        self.size = size
        self.data = self._read(base, min(size, _FIRST_READ))

    def _read(self, offset: int, n: int) -> bytes:
        self._fh.seek(offset)
        return self._fh.read(n) or b""

    def tail(self, start: int) -> _Buffer:
        """The bytes from ``start`` to the end of the file (elements after Pixel Data)."""
        if self.size - start > _MAX_TAIL:
            raise _Unsure
        rest = _Buffer(self._fh, self.size - start, self._base + start)
        if len(rest.data) != rest.size:
            raise _Unsure
        return rest

    def need(self, end: int) -> None:
        if end > self.size or end > _MAX_HEADER:
            raise _Unsure
        if end > len(self.data):
            more = max(end - len(self.data), _FIRST_READ)
            self.data += self._read(self._base + len(self.data), more)
            if end > len(self.data):
                raise _Unsure


class _Scan:
    """One walk over a file's elements."""

    def __init__(self, buf: _Buffer) -> None:
        self.buf = buf
        self.explicit = True

    def element(self, pos: int) -> tuple[int, bytes, int, int]:
        """(tag, VR or b"", value length, value offset) of the element at ``pos``, any form.

        The buffer is asked to grow only when the element's head is not yet read.
        """
        data = self.buf.data
        if pos + 12 > len(data):
            self.buf.need(pos + 8)
            data = self.buf.data
        group, elem, vr, short_length = _HEAD.unpack_from(data, pos)
        tag = group << 16 | elem
        if group == 0xFFFE or not self.explicit:
            return tag, b"", _U32.unpack_from(data, pos + 4)[0], pos + 8
        if vr in _SHORT_VRS:
            return tag, vr, short_length, pos + 8
        if vr in _LONG_VRS:
            if pos + 12 > len(data):
                self.buf.need(pos + 12)
                data = self.buf.data
            return tag, vr, _U32.unpack_from(data, pos + 8)[0], pos + 12
        if not vr.isalpha() or not vr.isupper():
            raise _Unsure
        return tag, vr, short_length, pos + 8

    def value(self, start: int, end: int) -> bytes:
        """The bytes of a value (read further first when the buffer stops short of ``end``)."""
        if end > len(self.buf.data):
            self.buf.need(end)
        return self.buf.data[start:end]

    def skip_sequence(self, pos: int) -> int:
        """Offset after an undefined-length sequence whose items start at ``pos``."""
        while True:
            tag, _, length, value = self.element(pos)
            if tag == _SEQUENCE_END:
                return value
            if tag != _ITEM:
                raise _Unsure
            pos = value + length if length != _UNDEFINED else self.skip_item(value)

    def skip_item(self, pos: int) -> int:
        """Offset after an undefined-length item whose elements start at ``pos``."""
        while True:
            tag, vr, length, value = self.element(pos)
            if tag == _ITEM_END:
                return value
            if length == _UNDEFINED:
                if vr not in (b"SQ", b""):
                    raise _Unsure
                pos = self.skip_sequence(value)
            else:
                pos = value + length


def scan_header(path: Path) -> dict[str, Any] | None:
    """The values Basira needs from ``path``, by DICOM keyword, or None when unsure.

    Besides the keywords in ``_WANTED``, the result holds ``TransferSyntaxUID``,
    ``MediaStorageSOPClassUID`` and ``_pixel`` = (present, offset, length) with offset -1 for
    encapsulated pixel data. Values are shaped as pydicom gives them (str or list of str, float
    or list of float, int; None for an empty number).
    """
    with open(path, "rb", buffering=0) as fh:
        return scan_open_file(fh, os.fstat(fh.fileno()).st_size)


def scan_open_file(fh: io.RawIOBase, size: int) -> dict[str, Any] | None:
    """:func:`scan_header` of a file already open unbuffered as ``fh`` (``size`` bytes).

    Reads by explicit offsets, so the caller may go on to read the pixels from ``fh``.
    """
    try:
        buf = _Buffer(fh, size)
        if buf.data[128:132] != b"DICM":
            return None
        scan = _Scan(buf)
        values, pos = _file_meta(scan)
        syntax = values.get("TransferSyntaxUID", "")
        if not syntax or syntax in _LEFT_TO_PYDICOM:
            return None
        scan.explicit = syntax != IMPLICIT_VR_LITTLE_ENDIAN
        values.update(_data_set(scan, pos))
        return values
    except (_Unsure, struct.error, UnicodeDecodeError, ValueError, OverflowError):
        return None


def _file_meta(scan: _Scan) -> tuple[dict[str, Any], int]:
    values: dict[str, Any] = {}
    pos = 132
    while True:
        scan.buf.need(pos + 2)
        if struct.unpack_from("<H", scan.buf.data, pos)[0] != 0x0002:
            return values, pos  # the data set may be implicit VR: read no further here
        tag, _, length, value = scan.element(pos)
        if length == _UNDEFINED:
            raise _Unsure
        scan.buf.need(value + length)
        if tag in (0x00020002, 0x00020010):
            keyword = "MediaStorageSOPClassUID" if tag == 0x00020002 else "TransferSyntaxUID"
            values[keyword] = _uid(scan.buf.data[value : value + length], "ascii")
        pos = value + length


def _data_set(scan: _Scan, pos: int) -> dict[str, Any]:
    """The wanted values of the data set starting at ``pos``, and where its pixels are.

    The common element (explicit VR, 2-byte length, head already read) is decoded inline: this
    loop runs about 50 times a file and a call per element was a fifth of its cost.
    """
    values: dict[str, Any] = {"_pixel": (False, -1, 0)}
    encoding = "latin-1"
    previous = 0
    size, wanted, unpack = scan.buf.size, _WANTED, _HEAD.unpack_from
    while pos < size:
        data = scan.buf.data
        group, elem, vr, length = unpack(data, pos) if pos + 12 <= len(data) else (0, 0, b"", 0)
        if scan.explicit and vr in _SHORT_VRS and group != 0xFFFE:
            tag, value = group << 16 | elem, pos + 8
        else:
            tag, vr, length, value = scan.element(pos)
        if tag <= previous or tag >> 16 == 0x0002 or tag in _FUNCTIONAL_GROUPS:
            raise _Unsure
        previous = tag
        if tag == PIXEL_DATA:
            return values | {"_pixel": _pixel_extent(scan, length, value)}
        if length == _UNDEFINED:
            if vr not in (b"SQ", b""):
                raise _Unsure
            pos = scan.skip_sequence(value)
            continue
        pos = value + length
        if pos > size:
            raise _Unsure
        if tag in wanted:
            keyword, vrs, parse = wanted[tag]
            if vr and vr not in vrs:
                raise _Unsure
            values[keyword] = parse(scan.value(value, pos), encoding)
        elif tag == _CHARSET_TAG:
            charset = _text(scan.value(value, pos), "ascii")
            if not isinstance(charset, str) or charset not in _CHARSETS:
                raise _Unsure
            encoding = _CHARSETS[charset]
    return values


def _pixel_extent(scan: _Scan, length: int, value: int) -> tuple[bool, int, int]:
    """Where the pixels are, once the elements after them are known to end with the file.

    Encapsulated fragments are walked (not read) so that a cut compressed file is caught here.
    """
    if length == _UNDEFINED:
        end, extent = scan.skip_sequence(value), (True, -1, 0)
    else:
        end, extent = value + length, (True, value, length)
    if end < scan.buf.size:
        _walk_tail(scan, end)
    elif end > scan.buf.size:
        raise _Unsure
    return extent


def _walk_tail(scan: _Scan, start: int) -> None:
    """Every element after Pixel Data must lie whole inside the file (as pydicom checks)."""
    tail = _Scan(scan.buf.tail(start))
    tail.explicit = scan.explicit
    pos = 0
    while pos < tail.buf.size:
        _, vr, length, value = tail.element(pos)
        if length == _UNDEFINED:
            if vr not in (b"SQ", b""):
                raise _Unsure
            pos = tail.skip_sequence(value)
        else:
            pos = value + length
    if pos != tail.buf.size:
        raise _Unsure
