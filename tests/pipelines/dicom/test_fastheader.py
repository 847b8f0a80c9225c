"""The fast header scanner must agree with pydicom's full parse on every file both accept."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from pipelines.dicom.fastheader import scan_header
from pipelines.dicom.header import parse_header, read_header
from pipelines.errors import BasiraError, TruncatedFileError
from tests.pipelines.dicom.conftest import PYDICOM_FILES

SYNTAXES = {
    "explicit": "1.2.840.10008.1.2.1",
    "rle": "1.2.840.10008.1.2.5",
    "jpegls": "1.2.840.10008.1.2.4.80",
}


def _both(path: Path) -> tuple[str, str]:
    """Both readings as text (NaN, used for an absent rescale, never equals itself)."""
    try:
        slow = repr(parse_header(path)[1])
    except BasiraError as exc:
        slow = exc.code
    try:
        fast = repr(read_header(path))
    except BasiraError as exc:
        fast = exc.code
    return slow, fast


def _implicit_copy(path: Path, out: Path) -> Path:
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"
    ds.save_as(out, implicit_vr=True, little_endian=True, enforce_file_format=True)
    return out


@pytest.mark.parametrize("path", sorted(PYDICOM_FILES.glob("*.dcm")), ids=lambda p: p.name)
def test_read_header_agrees_with_pydicom_on_pydicom_test_files(path):
    slow, fast = _both(path)
    assert fast == slow


def test_scanner_answers_for_the_files_scanners_write(make_series):
    written = [make_series((2, 16, 12), transfer_syntax=s)[0] for s in SYNTAXES.values()]
    written.append(_implicit_copy(written[0], written[0].with_name("implicit.dcm")))
    assert all(scan_header(path) is not None for path in written)
    assert scan_header(PYDICOM_FILES / "CT_small.dcm") is not None


@pytest.mark.parametrize("syntax", SYNTAXES.values(), ids=SYNTAXES.keys())
def test_read_header_agrees_with_pydicom_on_written_series(make_series, syntax):
    for path in make_series((3, 16, 12), transfer_syntax=syntax):
        slow, fast = _both(path)
        assert fast == slow


def test_read_header_agrees_with_pydicom_on_implicit_vr(make_series, tmp_path):
    path = _implicit_copy(make_series((1, 16, 12))[0], tmp_path / "implicit.dcm")
    slow, fast = _both(path)
    assert fast == slow


def test_sequences_of_undefined_length_are_skipped(make_series, tmp_path):
    path = make_series((1, 16, 12))[0]
    ds = pydicom.dcmread(path)
    item = pydicom.Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    nested = pydicom.Dataset()
    nested.CodeValue = "T-D3000"
    item.ProcedureCodeSequence = [nested]
    ds.ReferencedImageSequence = [item, item]
    ds.ReferencedImageSequence.is_undefined_length = True
    out = tmp_path / "seq.dcm"
    ds.save_as(out, enforce_file_format=True)
    assert scan_header(out) is not None
    slow, fast = _both(out)
    assert fast == slow


@pytest.mark.parametrize("cut", [300, 700, -10])
def test_cut_files_fall_back_to_the_precise_error(make_series, tmp_path, cut):
    path = make_series((1, 16, 12))[0]
    raw = path.read_bytes()
    out = tmp_path / "cut.dcm"
    out.write_bytes(raw[:cut])
    slow, fast = _both(out)
    assert fast == slow


def test_cut_pixel_data_is_reported_as_truncated(make_series, tmp_path):
    path = make_series((1, 16, 12))[0]
    out = tmp_path / "cut.dcm"
    out.write_bytes(path.read_bytes()[:-10])
    assert scan_header(out) is None
    with pytest.raises(TruncatedFileError):
        read_header(out)
