"""Series → HU volume: order, geometry, every transfer syntax, multi-frame, and coded refusals."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys

import numpy as np
import pydicom
import pytest

from pipelines.dicom.geometry import GeometryTolerances
from pipelines.dicom.header import parse_header
from pipelines.dicom.parallel import MIN_FRAMES_FOR_PROCESSES
from pipelines.dicom.pixels import decoder_available, read_stored_frames
from pipelines.dicom.read import ReadPolicy, read_series_volume
from pipelines.errors import (
    DuplicateSlicesError,
    GantryTiltError,
    InconsistentGeometryError,
    MissingSlicesError,
    MixedSeriesError,
    NoDicomFoundError,
    NonUniformSpacingError,
    UndecodablePixelDataError,
    UnsupportedTransferSyntaxError,
    VolumeTooLargeError,
)
from tests.pipelines.dicom.conftest import PYDICOM_FILES, ramp_volume


def test_hu_values_are_stored_values_rescaled(make_series):
    volume = np.zeros((3, 8, 8), np.float32)
    volume[:, 0, 0], volume[:, 0, 1], volume[:, 0, 2] = -1000, 0, 1000  # air, water, bone
    volume[:, 1, 1] = -1024  # the lowest value the stored range holds
    read = read_series_volume(make_series(volume=volume, step_mm=1.0)).array_hu
    assert read.dtype == np.float32
    assert read[:, 0, :3].tolist() == [[-1000, 0, 1000]] * 3
    assert read[0, 1, 1] == -1024


def test_rescale_slope_and_signed_pixels(make_series, tmp_path):
    paths = make_series((3, 8, 8), step_mm=1.0)
    for path in paths:
        ds = pydicom.dcmread(path)
        stored = np.full((8, 8), -300, np.int16)
        ds.PixelRepresentation, ds.RescaleSlope, ds.RescaleIntercept = 1, 2, 100
        ds.PixelData = stored.tobytes()
        ds.save_as(path)
    assert np.all(read_series_volume(paths).array_hu == -500)


def test_slices_are_ordered_by_position_not_file_name_or_instance_number(make_series, tmp_path):
    paths = make_series((12, 8, 6))
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    order = list(range(12))
    random.Random(3).shuffle(order)
    for new_name, old in enumerate(order):
        ds = pydicom.dcmread(paths[old])
        ds.InstanceNumber = 100 - new_name
        ds.save_as(shuffled / f"IMG{new_name:03d}")
    volume = read_series_volume(shuffled)
    # written with step -1.25 mm along +z: ascending z order reverses the written order
    assert np.array_equal(volume.array_hu, ramp_volume((12, 8, 6))[::-1])
    assert np.allclose(np.diff(volume.ijk_to_lps([[0, 0, k] for k in range(12)])[:, 2]), 1.25)


@pytest.mark.parametrize("step_mm", [1.25, -1.25])
def test_affine_maps_voxels_to_written_positions(make_series, step_mm):
    """Head-first and feet-first stacks: every voxel lands where the files say it is."""
    paths = make_series((6, 8, 10), step_mm=step_mm)
    volume = read_series_volume(paths)
    for path in paths:
        ds = pydicom.dcmread(path)
        k = volume.provenance.sop_instance_uids.index(ds.SOPInstanceUID)
        assert np.allclose(volume.ijk_to_lps([0, 0, k]), ds.ImagePositionPatient, atol=1e-4)
        offset_mm = np.array([0.8 * 3, 0.7 * 2, 0.0])
        ijk = volume.lps_to_ijk(np.asarray(ds.ImagePositionPatient, float) + offset_mm)
        assert np.allclose(ijk, [3, 2, k], atol=1e-6)
        assert np.array_equal(volume.array_hu[k], ds.pixel_array.astype(np.float32) - 1024)
    assert volume.spacing_mm == pytest.approx((0.8, 0.7, 1.25))


def test_provenance_records_uids_and_syntax(make_series):
    paths = make_series((4, 8, 8))
    volume = read_series_volume(paths)
    ds = pydicom.dcmread(paths[0])
    assert volume.provenance.series_instance_uid == ds.SeriesInstanceUID
    assert volume.provenance.frame_of_reference_uid == ds.FrameOfReferenceUID
    assert volume.provenance.transfer_syntaxes == ("1.2.840.10008.1.2.1",)
    assert volume.provenance.sop_instance_uids[-1] == ds.SOPInstanceUID  # first written = top
    assert volume.provenance.defaults_applied == ()


def test_missing_rescale_defaults_are_recorded(make_series):
    paths = make_series((3, 8, 8))
    for path in paths:
        ds = pydicom.dcmread(path)
        del ds.RescaleSlope, ds.RescaleIntercept
        ds.save_as(path)
    volume = read_series_volume(paths)
    assert len(volume.provenance.defaults_applied) == 3
    assert "RescaleSlope/Intercept absent" in volume.provenance.defaults_applied[0]
    assert volume.array_hu.min() >= 0  # stored values unchanged: flagged, not guessed


@pytest.mark.parametrize(
    "syntax", ["1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90"]
)
def test_compressed_series_decode_to_the_same_hu(make_series, syntax):
    volume = ramp_volume((4, 64, 64))
    read = read_series_volume(make_series(volume=volume, transfer_syntax=syntax))
    assert read.provenance.transfer_syntaxes == (syntax,)
    assert np.array_equal(read.array_hu, volume[::-1])


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_expb.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_padded.dcm",
    ],
)
def test_real_files_in_each_transfer_syntax_decode_like_the_uncompressed_original(name):
    _, reference = parse_header(PYDICOM_FILES / "MR_small.dcm")
    _, header = parse_header(PYDICOM_FILES / name)
    assert np.array_equal(read_stored_frames(header), read_stored_frames(reference))


def test_lossy_j2k_ct_file_decodes():
    _, header = parse_header(PYDICOM_FILES / "693_J2KI.dcm")
    frames = read_stored_frames(header)
    assert frames.shape == (1, 512, 512) and frames.std() > 0


def test_real_file_every_decoder_refuses_gets_undecodable():
    """pydicom's JPEG-lossy.dcm has a misplaced marker that libjpeg, GDCM and Pillow refuse."""
    _, header = parse_header(PYDICOM_FILES / "JPEG-lossy.dcm")
    with pytest.raises(UndecodablePixelDataError):
        read_stored_frames(header)


def test_htj2k_and_jpeg_lossless_decoders_are_installed():
    for syntax in (
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203",
        "1.2.840.10008.1.2.1.99",
    ):
        assert decoder_available(syntax), syntax


def test_corrupt_compressed_stream_raises_undecodable(make_series):
    paths = make_series((3, 64, 64), transfer_syntax="1.2.840.10008.1.2.4.90")
    ds = pydicom.dcmread(paths[1])
    frame = bytearray(ds.PixelData)
    frame[len(frame) // 2 :] = b"\x00" * (len(frame) - len(frame) // 2)
    ds.PixelData = bytes(frame)
    ds.save_as(paths[1])
    with pytest.raises(UndecodablePixelDataError) as info:
        read_series_volume(paths)
    assert info.value.code == "dicom.undecodable_pixel_data"


def test_unknown_transfer_syntax_raises_unsupported(make_series):
    paths = make_series((2, 8, 8))
    ds = pydicom.dcmread(paths[0])
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder
    ds.PixelData = pydicom.encaps.encapsulate([ds.PixelData])
    ds.save_as(paths[0], enforce_file_format=True)
    with pytest.raises(UnsupportedTransferSyntaxError) as info:
        read_series_volume(paths)
    assert info.value.code == "dicom.unsupported_transfer_syntax"


def test_enhanced_ct_multiframe_reads_like_the_single_frame_series(make_series, tmp_path):
    from highdicom.legacy import LegacyConvertedEnhancedCTImage

    paths = make_series((6, 16, 16), step_mm=2.0)
    legacy = [pydicom.dcmread(p) for p in paths]
    enhanced = LegacyConvertedEnhancedCTImage(
        legacy,
        series_instance_uid=pydicom.uid.generate_uid(),
        series_number=9,
        sop_instance_uid=pydicom.uid.generate_uid(),
        instance_number=1,
    )
    out = tmp_path / "enhanced.dcm"
    enhanced.save_as(out)
    single, multi = read_series_volume(paths), read_series_volume([out])
    assert sorted(multi.provenance.frame_numbers) == [1, 2, 3, 4, 5, 6]
    assert np.array_equal(single.array_hu, multi.array_hu)
    assert np.allclose(single.affine_lps, multi.affine_lps)


def test_missing_slice_raises_missing_slices(make_series):
    paths = make_series((10, 8, 8))
    paths[4].unlink()
    with pytest.raises(MissingSlicesError) as info:
        read_series_volume(paths[:4] + paths[5:])
    assert info.value.detail["n_missing"] == 1


def test_duplicate_position_raises_duplicate_slices(make_series, tmp_path):
    paths = make_series((5, 8, 8))
    ds = pydicom.dcmread(paths[1])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(paths[0].parent / "copy.dcm")
    with pytest.raises(DuplicateSlicesError):
        read_series_volume(paths[0].parent)


def test_uneven_spacing_raises_non_uniform_spacing(make_series):
    paths = make_series((6, 8, 8), step_mm=-1.0)
    ds = pydicom.dcmread(paths[3])
    ds.ImagePositionPatient[2] += 0.3
    ds.save_as(paths[3])
    with pytest.raises(NonUniformSpacingError):
        read_series_volume(paths)


def test_gantry_tilt_is_refused_unless_allowed(make_series):
    paths = make_series((6, 8, 8), step_vector=(0.0, 0.3, 1.0))  # ~17 degrees of shear
    with pytest.raises(GantryTiltError):
        read_series_volume(paths)
    policy = ReadPolicy(geometry=GeometryTolerances(allow_gantry_tilt=True))
    volume = read_series_volume(paths, policy)
    assert np.allclose(volume.affine_lps[:3, 2], [0, 0.3, 1.0])


def test_mixed_orientation_raises_inconsistent_geometry(make_series):
    paths = make_series((4, 8, 8))
    ds = pydicom.dcmread(paths[2])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0.9, 0.43589]
    ds.save_as(paths[2])
    with pytest.raises(InconsistentGeometryError):
        read_series_volume(paths)


def test_two_series_in_one_input_raise_mixed(make_series, tmp_path):
    a, b = make_series((3, 8, 8)), make_series((3, 8, 8))
    with pytest.raises(MixedSeriesError) as info:
        read_series_volume(a + b)
    assert len(info.value.detail["series_instance_uids"]) == 2


def test_volume_past_memory_limit_raises_too_large(make_series):
    with pytest.raises(VolumeTooLargeError) as info:
        read_series_volume(make_series((4, 16, 16)), ReadPolicy(max_volume_bytes=1000))
    assert info.value.code == "series.too_large"


def test_folder_without_dicom_raises_no_dicom(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(NoDicomFoundError):
        read_series_volume(tmp_path)


def test_read_twice_in_threads_gives_identical_volume(make_series):
    paths = make_series((16, 32, 32))
    one = read_series_volume(paths, ReadPolicy(workers=1)).array_hu
    two = read_series_volume(paths, ReadPolicy(workers=2)).array_hu
    assert np.array_equal(one, two)
    shutil.rmtree(paths[0].parent)


@pytest.mark.slow
def test_compressed_series_decoded_in_processes_equals_one_process(make_series):
    volume = ramp_volume((MIN_FRAMES_FOR_PROCESSES + 2, 24, 20))
    paths = make_series(volume.shape, volume=volume, transfer_syntax="1.2.840.10008.1.2.5")
    random.Random(3).shuffle(paths)
    one = read_series_volume(paths, ReadPolicy(workers=1))
    two = read_series_volume(paths, ReadPolicy(workers=2))
    assert np.array_equal(one.array_hu, two.array_hu)
    assert one.provenance == two.provenance
    assert np.array_equal(two.array_hu, volume[::-1])  # the series is written head to feet


@pytest.mark.slow
def test_undecodable_slice_in_a_worker_process_raises_undecodable(make_series):
    paths = make_series(
        (MIN_FRAMES_FOR_PROCESSES, 32, 32), transfer_syntax="1.2.840.10008.1.2.4.90"
    )
    ds = pydicom.dcmread(paths[5])
    frame = bytearray(ds.PixelData)
    frame[len(frame) // 2 :] = b"\x00" * (len(frame) - len(frame) // 2)
    ds.PixelData = bytes(frame)
    ds.save_as(paths[5])
    with pytest.raises(UndecodablePixelDataError) as info:
        read_series_volume(paths, ReadPolicy(workers=2))
    assert paths[5].name in info.value.message


@pytest.mark.slow
def test_script_without_main_guard_still_reads_compressed_series(make_series, tmp_path):
    paths = make_series((MIN_FRAMES_FOR_PROCESSES, 16, 16), transfer_syntax="1.2.840.10008.1.2.5")
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from pathlib import Path\n"
        "from pipelines.dicom.read import ReadPolicy, read_series_volume\n"
        f"volume = read_series_volume(Path({str(paths[0].parent)!r}), ReadPolicy(workers=2))\n"
        "print(volume.array_hu.shape)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"({MIN_FRAMES_FOR_PROCESSES}, 16, 16)" in done.stdout
