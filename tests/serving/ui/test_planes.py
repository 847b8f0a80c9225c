"""Coronal and sagittal planes and maximum-intensity slabs, cut by the server from the series:
each equals the same cut of the decoded volume; a slab is the maximum over the images its
thickness spans; an index outside the plane is the viewer's coded 404."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from pipelines.dicom.geometry import affine_from_dicom
from pipelines.dicom.read import read_series_volume
from pipelines.dicom.slices import read_series_layout
from pipelines.dicom.write_ct import CTSeriesInfo, write_ct_series
from serving.ui.planes import VolumeCache
from serving.ui.viewer import SeriesView, hu_int16
from tests.pipelines.test_intended_use import chest_hu
from tests.serving.ui.conftest import Analysed, login


def _image(client: TestClient, url: str, shape: tuple[int, int]) -> np.ndarray:
    response = client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-encoding"] == "gzip"
    # TestClient (httpx) has already undone the gzip layer.
    return np.frombuffer(response.content, "<i2").reshape(shape)


def test_coronal_sagittal_and_slab_images_equal_the_cuts_of_the_decoded_volume(
    ui_client: TestClient, analysed: Analysed, study_files: list[Path]
) -> None:
    login(ui_client, analysed.hospital.name, "rad")
    volume = read_series_volume(study_files)
    expected = hu_int16(volume.array_hu)
    n_k, n_j, n_i = expected.shape
    base = f"/ui/api/studies/{analysed.study_uid}"
    meta = ui_client.get(f"{base}/meta").json()
    sx, sy, sz = meta["spacing_mm"]

    for j in (0, n_j // 2, n_j - 1):
        got = _image(ui_client, f"{base}/planes/coronal/{j}", (n_k, n_i))
        np.testing.assert_array_equal(got, expected[:, j, :])
    for i in (0, n_i // 3, n_i - 1):
        got = _image(ui_client, f"{base}/planes/sagittal/{i}", (n_k, n_j))
        np.testing.assert_array_equal(got, expected[:, :, i])

    k = n_k // 2
    n_slab = round(10 / sz)
    first = k - (n_slab - 1) // 2
    mip = _image(ui_client, f"{base}/planes/axial/{k}?slab_mm=10", (n_j, n_i))
    np.testing.assert_array_equal(mip, expected[first : first + n_slab].max(axis=0))
    assert n_slab == 4  # 10 mm of 2.5 mm slices
    thin = _image(ui_client, f"{base}/planes/axial/{k}", (n_j, n_i))
    np.testing.assert_array_equal(thin, expected[k])

    j = n_j // 2
    n_slab = round(15 / sy)
    first = j - (n_slab - 1) // 2
    coronal_mip = _image(ui_client, f"{base}/planes/coronal/{j}?slab_mm=15", (n_k, n_i))
    np.testing.assert_array_equal(coronal_mip, expected[:, first : first + n_slab, :].max(axis=1))
    edge = _image(ui_client, f"{base}/planes/sagittal/0?slab_mm=15", (n_k, n_j))
    np.testing.assert_array_equal(edge, expected[:, :, : round(15 / sx) // 2 + 1].max(axis=2))


def test_planes_refuse_an_index_outside_the_series_and_an_unknown_plane(
    ui_client: TestClient, analysed: Analysed
) -> None:
    login(ui_client, analysed.hospital.name, "rad")
    base = f"/ui/api/studies/{analysed.study_uid}"
    n_k, n_j, n_i = ui_client.get(f"{base}/meta").json()["shape_kji"]
    for plane, n in (("axial", n_k), ("coronal", n_j), ("sagittal", n_i)):
        beyond = ui_client.get(f"{base}/planes/{plane}/{n}")
        assert (beyond.status_code, beyond.json()["code"]) == (404, "viewer.slice_out_of_range")
    for bad in ("oblique/1", "axial/1?slab_mm=-5", "axial/1?slab_mm=500"):
        response = ui_client.get(f"{base}/planes/{bad}")
        assert (response.status_code, response.json()["code"]) == (
            422,
            "request.invalid_parameters",
        )


@pytest.mark.parametrize(("slope", "intercept"), [(1.0, -1024.0), (0.5, -1000.0), (1.0, -1024.5)])
def test_the_volume_decoded_for_planes_equals_the_series_volume_whatever_the_rescale(
    tmp_path: Path, slope: float, intercept: float
) -> None:
    """The integer path (slope 1, integral intercept) and the float path give the volume of
    ``read_series_volume``, rounded to int16 as the slices are."""
    affine = affine_from_dicom((1, 0, 0, 0, 1, 0), (0.8, 0.6), (0.0, 0.0, 0.0), (0, 0, 2.0))
    info = CTSeriesInfo(
        uid_seed=f"rescale-{slope}-{intercept}", rescale_slope=slope, rescale_intercept=intercept
    )
    files = write_ct_series(chest_hu((6, 24, 20)), affine, tmp_path / "series", info)
    view = SeriesView(read_series_layout(files), str(files[0]))
    volume = VolumeCache().get("job", view)
    np.testing.assert_array_equal(volume, hu_int16(read_series_volume(files).array_hu))
