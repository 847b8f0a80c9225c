"""The chunked native reader must give the HU values of pydicom's decoding, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from pipelines.dicom import native
from pipelines.dicom.header import InstanceHeader, read_header
from pipelines.dicom.hu import to_hu
from pipelines.dicom.native import fill_native, new_scratch
from pipelines.dicom.pixels import is_fast_native
from pipelines.errors import BasiraError, UndecodablePixelDataError
from tests.pipelines.dicom.conftest import PYDICOM_FILES


def _native_files() -> list[Path]:
    found = []
    for path in sorted(PYDICOM_FILES.glob("*.dcm")):
        try:
            header = read_header(path)
        except BasiraError:
            continue
        if is_fast_native(header):
            found.append(path)
    return found


def _fused(path: Path, header: InstanceHeader) -> tuple[np.ndarray, list[str]]:
    volume = np.full((header.n_frames, header.rows, header.columns), np.nan, np.float32)
    with open(path, "rb", buffering=0) as fh:
        notes = fill_native(fh, header, list(volume), new_scratch())
    return volume, notes


def _pydicom(path: Path, header: InstanceHeader) -> tuple[np.ndarray, list[str]]:
    """pydicom's pixel_array through the same HU conversion (the decoder path of the reader)."""
    stored = pydicom.dcmread(path).pixel_array
    stored = stored.reshape(header.n_frames, header.rows, header.columns)
    volume = np.empty(stored.shape, np.float32)
    return volume, to_hu(stored, header, list(volume))


def test_pydicom_ships_native_files_of_both_signs():
    headers = [read_header(path) for path in _native_files()]
    assert {"CT_small.dcm", "MR_small.dcm", "examples_overlay.dcm"} <= {
        h.path.name for h in headers
    }
    assert {h.pixel_representation for h in headers} == {0, 1}


@pytest.mark.parametrize("path", _native_files(), ids=lambda p: p.name)
@pytest.mark.parametrize("chunk_bytes", [native.CHUNK_BYTES, 3 * 1024])
def test_fused_read_equals_pydicom_on_pydicom_test_files(path, chunk_bytes, monkeypatch):
    """Whole-frame chunks and small ones (several per frame, the last one short)."""
    monkeypatch.setattr(native, "CHUNK_BYTES", chunk_bytes)
    header = read_header(path)
    fused, fused_notes = _fused(path, header)
    reference, reference_notes = _pydicom(path, header)
    assert np.array_equal(fused, reference)
    assert fused_notes == reference_notes


@pytest.mark.parametrize("signed", [False, True])
def test_fused_read_masks_bits_above_bits_stored_like_pydicom(make_series, signed, monkeypatch):
    """12 of 16 bits stored, garbage above them; slope 2 so the multiply path is used too."""
    monkeypatch.setattr(native, "CHUNK_BYTES", 5 * 12 * 2)  # 5 rows a chunk, 16 rows a frame
    path = make_series((1, 16, 12))[0]
    ds = pydicom.dcmread(path)
    values = np.random.default_rng(0).integers(-2048, 2048, (16, 12))
    stored = (values & 0x0FFF) | 0xA000  # bits 12..15 hold an overlay, not the value
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, int(signed)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1000
    ds.PixelData = stored.astype(np.uint16).tobytes()
    ds.save_as(path)
    header = read_header(path)
    fused, _ = _fused(path, header)
    reference, _ = _pydicom(path, header)
    assert np.array_equal(fused, reference)
    expected = values if signed else values & 0x0FFF
    assert np.array_equal(fused[0], (expected * 2 - 1000).astype(np.float32))


def test_fused_read_of_a_file_cut_after_indexing_raises_undecodable(make_series, tmp_path):
    path = make_series((1, 16, 12))[0]
    header = read_header(path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(UndecodablePixelDataError):
        _fused(path, header)
