"""One slice read from its own file equals that slice of the whole volume, in any file order
and transfer syntax; the layout is the volume's geometry without a pixel read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.dicom.read import read_series_volume
from pipelines.dicom.slices import read_series_layout, read_slice_hu
from pipelines.errors import MixedSeriesError, NoDicomFoundError, SliceOutOfRangeError
from tests.pipelines.dicom.conftest import SeriesFactory


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5"])
def test_each_slice_read_alone_equals_the_volume_slice(
    make_series: SeriesFactory, syntax: str
) -> None:
    paths = make_series((12, 16, 12), transfer_syntax=syntax)
    shuffled = [paths[i] for i in np.random.default_rng(0).permutation(len(paths))]
    volume = read_series_volume(paths)
    layout = read_series_layout(shuffled)
    assert layout.shape == volume.shape
    np.testing.assert_array_equal(layout.affine_lps, volume.affine_lps)
    assert layout.spacing_mm == volume.spacing_mm
    assert layout.sop_instance_uids == volume.provenance.sop_instance_uids
    for k in range(volume.shape[0]):
        np.testing.assert_array_equal(read_slice_hu(layout, k), volume.array_hu[k])


def test_a_slice_past_the_series_raises_out_of_range(make_series: SeriesFactory) -> None:
    layout = read_series_layout(make_series((4, 8, 8)))
    with pytest.raises(SliceOutOfRangeError):
        read_slice_hu(layout, 4)


def test_two_series_raise_mixed_series(make_series: SeriesFactory) -> None:
    with pytest.raises(MixedSeriesError):
        read_series_layout(make_series((4, 8, 8)) + make_series((4, 8, 8)))


def test_no_dicom_raises_no_dicom_found(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not DICOM")
    with pytest.raises(NoDicomFoundError):
        read_series_layout([text])
