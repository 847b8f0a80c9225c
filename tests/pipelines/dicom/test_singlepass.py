"""The one-pass folder read must give what the general index and reader give, or step aside."""

from __future__ import annotations

import random
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from pipelines.dicom.index import index_inputs
from pipelines.dicom.read import ReadPolicy, read_series_volume
from pipelines.dicom.selection import SelectionRules
from pipelines.dicom.singlepass import PrefilledVolume, read_folder_once
from pipelines.errors import InputNotFoundError
from pipelines.volume import Volume
from tests.pipelines.dicom.conftest import ramp_volume

LIMIT = 4 * 1024**3


def _general(paths: list[Path], tmp_path: Path, policy: ReadPolicy | None = None) -> Volume:
    """The volume through the general index (headers first, then pixels)."""
    index = index_inputs(paths, workdir=tmp_path / "work", rules=SelectionRules())
    (series,) = [s for study in index.studies for s in study.series]
    return read_series_volume(series, policy)


def _assert_same(one: Volume, other: Volume) -> None:
    assert one.array_hu.dtype == other.array_hu.dtype == np.float32
    assert np.array_equal(one.array_hu, other.array_hu)
    assert np.array_equal(one.affine_lps, other.affine_lps)
    assert one.provenance == other.provenance


def _prefill_used(folder: Path, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Read ``folder``; True when the volume filled during the pass is the one kept."""
    kept: list[bool] = []
    take = PrefilledVolume.take

    def recording_take(self: PrefilledVolume, *args: Any) -> Any:
        taken = take(self, *args)
        kept.append(taken is not None)
        return taken

    monkeypatch.setattr(PrefilledVolume, "take", recording_take)
    read_series_volume(folder)
    return kept == [True]


@pytest.mark.parametrize("step_mm", [1.25, -1.25], ids=["ascending", "descending"])
@pytest.mark.parametrize("workers", [1, 2])
def test_one_pass_equals_the_general_reader(make_series, tmp_path, step_mm, workers):
    paths = make_series((30, 24, 20), step_mm=step_mm)
    policy = ReadPolicy(workers=workers)
    one_pass = read_series_volume(paths[0].parent, policy)
    _assert_same(one_pass, _general(paths, tmp_path, policy))
    expected = ramp_volume((30, 24, 20))
    assert np.array_equal(one_pass.array_hu, expected if step_mm > 0 else expected[::-1])


@pytest.mark.parametrize("step_mm", [1.25, -1.25], ids=["ascending", "descending"])
def test_prefilled_volume_is_kept_when_files_are_named_in_slice_order(
    make_series, step_mm, monkeypatch
):
    paths = make_series((12, 8, 6), step_mm=step_mm)
    assert _prefill_used(paths[0].parent, monkeypatch)


def test_prefilled_volume_is_dropped_when_only_the_first_files_are_in_order(
    make_series, tmp_path, monkeypatch
):
    """The first two files predict ascending order; the rest are shuffled."""
    paths = make_series((12, 8, 6), step_mm=1.0)
    folder = tmp_path / "renamed"
    folder.mkdir()
    rest = list(range(2, 12))
    random.Random(5).shuffle(rest)
    for name, k in enumerate([0, 1, *rest]):
        shutil.copy(paths[k], folder / f"IMG{name:03d}")
    assert not _prefill_used(folder, monkeypatch)
    volume = read_series_volume(folder)
    assert np.array_equal(volume.array_hu, ramp_volume((12, 8, 6)))
    _assert_same(volume, _general(sorted(folder.iterdir()), tmp_path))


def test_stray_file_in_the_folder_reads_through_the_ordinary_path(make_series, tmp_path):
    paths = make_series((10, 8, 6), step_mm=1.0)
    (paths[0].parent / "README.txt").write_text("scanner export")
    volume = read_series_volume(paths[0].parent)
    assert np.array_equal(volume.array_hu, ramp_volume((10, 8, 6)))


def test_compressed_and_uncompressed_files_mixed_read_correctly(make_series, tmp_path):
    paths = make_series((8, 8, 6), step_mm=1.0)
    compressed = make_series((8, 8, 6), step_mm=1.0, transfer_syntax="1.2.840.10008.1.2.5")
    for k in (3, 6):
        ds, original = pydicom.dcmread(compressed[k]), pydicom.dcmread(paths[k])
        for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
            setattr(ds, keyword, getattr(original, keyword))
        ds.FrameOfReferenceUID = original.FrameOfReferenceUID
        ds.save_as(paths[k])
    volume = read_series_volume(paths[0].parent)
    assert np.array_equal(volume.array_hu, ramp_volume((8, 8, 6)))
    assert len(volume.provenance.transfer_syntaxes) == 2


def test_zip_among_the_inputs_leaves_the_pass_to_the_index(make_series, tmp_path):
    paths = make_series((10, 8, 6), step_mm=1.0)
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in paths:
            zf.write(path, path.name)
    assert read_folder_once([archive], workers=2, max_volume_bytes=LIMIT) is None
    assert np.array_equal(read_series_volume(archive).array_hu, ramp_volume((10, 8, 6)))


def test_no_volume_is_predicted_past_the_memory_limit(make_series):
    paths = make_series((10, 8, 6), step_mm=1.0)
    once = read_folder_once([paths[0].parent], workers=2, max_volume_bytes=10 * 8 * 6 * 4 - 1)
    assert once is not None and once.prefilled is None
    assert len(once.headers) == 10


def test_missing_input_raises_not_found(tmp_path):
    with pytest.raises(InputNotFoundError):
        read_folder_once([tmp_path / "nowhere"], workers=2, max_volume_bytes=LIMIT)
