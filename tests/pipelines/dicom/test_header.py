"""Single-file integrity: every way a file can break gets its own code, before a pixel is read."""

from __future__ import annotations

import struct
from pathlib import Path

import pydicom
import pytest

from pipelines.dicom.header import parse_header
from pipelines.errors import (
    AbsurdLengthError,
    BasiraError,
    EmptyFileError,
    InvalidAttributeError,
    MissingAttributeError,
    MissingTransferSyntaxError,
    NotDicomError,
    PixelDataLengthError,
    TruncatedFileError,
)
from tests.pipelines.dicom.conftest import PYDICOM_FILES


def _pixel_length_offset(path: Path) -> int:
    """File offset of the 4-byte length of Pixel Data (explicit VR OW: tag, VR, 2 reserved)."""
    raw = path.read_bytes()
    return raw.rindex(b"\xe0\x7f\x10\x00OW") + 8


def test_parse_header_reads_geometry_without_pixels(make_series):
    path = make_series((3, 16, 12))[1]
    _, header = parse_header(path)
    assert header.modality == "CT"
    assert header.rows == 16 and header.columns == 12
    assert header.placements[0].position_lps_mm == pytest.approx((-100, -120, 48.75))
    assert header.placements[0].pixel_spacing_mm == (0.7, 0.8)
    assert header.rescale == ((1.0, -1024.0),)
    assert header.pixel_data_length == 16 * 12 * 2
    raw = path.read_bytes()
    assert header.pixel_data_offset == len(raw) - header.pixel_data_length


def test_empty_file_raises_empty_file(tmp_path):
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")
    with pytest.raises(EmptyFileError) as info:
        parse_header(path)
    assert info.value.code == "dicom.empty_file"


def test_text_file_raises_not_dicom(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("patient notes\n" * 50)
    with pytest.raises(NotDicomError) as info:
        parse_header(path)
    assert info.value.code == "dicom.not_dicom"
    assert "notes.txt" in info.value.message


@pytest.mark.parametrize("keep", [0.35, 0.6, 0.97])
def test_cut_file_raises_truncated(make_series, tmp_path, keep):
    source = make_series((2, 64, 64))[0]
    raw = source.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(TruncatedFileError) as info:
        parse_header(cut)
    assert info.value.code == "dicom.truncated"


def test_cut_in_header_raises_truncated(make_series, tmp_path):
    raw = make_series((2, 16, 16))[0].read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(raw[:703])  # inside an element value
    with pytest.raises(TruncatedFileError):
        parse_header(cut)


def test_cut_at_element_boundary_is_refused_for_what_it_lacks(make_series, tmp_path):
    raw = make_series((2, 16, 16))[0].read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(raw[:700])  # ends exactly after an element: a valid but partial dataset
    with pytest.raises(MissingAttributeError):
        parse_header(cut)


def test_malformed_integer_value_raises_invalid_attribute():
    with pytest.raises(InvalidAttributeError) as info:
        parse_header(PYDICOM_FILES / "badVR.dcm")
    assert info.value.code == "dicom.invalid_attribute"


def test_real_truncated_file_from_pydicom_is_refused():
    with pytest.raises(TruncatedFileError):
        parse_header(PYDICOM_FILES / "rtplan_truncated.dcm")


def test_absurd_pixel_length_fails_fast_without_allocating(make_series, tmp_path):
    path = make_series((2, 64, 64))[0]
    raw = bytearray(path.read_bytes())
    offset = _pixel_length_offset(path)
    raw[offset : offset + 4] = struct.pack("<I", 0xFFFFFFF0)
    bad = tmp_path / "absurd.dcm"
    bad.write_bytes(bytes(raw))
    with pytest.raises(AbsurdLengthError) as info:
        parse_header(bad)
    assert info.value.code == "dicom.absurd_length"
    assert info.value.detail["declared"] == 0xFFFFFFF0


def test_pixel_data_shorter_than_matrix_raises_pixel_data_short(make_series, tmp_path):
    ds = pydicom.dcmread(make_series((2, 16, 16))[0])
    ds.Rows = 4096  # claims a 4096 x 16 matrix over 16 x 16 pixels
    bad = tmp_path / "short.dcm"
    ds.save_as(bad)
    with pytest.raises(PixelDataLengthError) as info:
        parse_header(bad)
    assert info.value.detail == {"path": str(bad), "expected": 4096 * 16 * 2, "found": 512}


def test_absurd_matrix_claim_is_refused_before_allocation(make_series, tmp_path):
    ds = pydicom.dcmread(make_series((2, 16, 16))[0])
    ds.Rows, ds.Columns, ds.NumberOfFrames = 65535, 65535, 1000
    bad = tmp_path / "huge.dcm"
    ds.save_as(bad)
    with pytest.raises(PixelDataLengthError):
        parse_header(bad)


def test_missing_transfer_syntax_raises_missing_transfer_syntax(make_series, tmp_path):
    ds = pydicom.dcmread(make_series((2, 16, 16))[0])
    del ds.file_meta.TransferSyntaxUID
    bad = tmp_path / "nots.dcm"
    ds.save_as(bad, implicit_vr=False, little_endian=True)
    with pytest.raises(MissingTransferSyntaxError) as info:
        parse_header(bad)
    assert info.value.code == "dicom.missing_transfer_syntax"


def test_missing_series_uid_raises_missing_attribute(make_series, tmp_path):
    ds = pydicom.dcmread(make_series((2, 16, 16))[0])
    del ds.SeriesInstanceUID
    bad = tmp_path / "nouid.dcm"
    ds.save_as(bad)
    with pytest.raises(MissingAttributeError) as info:
        parse_header(bad)
    assert info.value.code == "dicom.missing_attribute"


def test_every_pydicom_sample_file_parses_or_gets_a_coded_refusal():
    """Real files nobody here wrote: none may crash the parser with an uncoded exception."""
    outcomes = {}
    for path in sorted(PYDICOM_FILES.glob("*.dcm")):
        try:
            parse_header(path)
            outcomes[path.name] = "ok"
        except BasiraError as exc:
            outcomes[path.name] = exc.code
    assert outcomes["CT_small.dcm"] == "ok"
    assert outcomes["MR_small_bigendian.dcm"] == "ok"
    assert outcomes["rtplan_truncated.dcm"] == "dicom.truncated"
    assert len(outcomes) > 50
