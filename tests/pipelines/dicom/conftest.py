"""Fixtures writing real CT series with the project's writer, small enough to be instant."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom.data
import pytest

from pipelines.dicom.geometry import affine_from_dicom
from pipelines.dicom.write_ct import CTSeriesInfo, write_ct_series

SeriesFactory = Callable[..., list[Path]]
#: Real DICOM files shipped inside the pydicom wheel (not written by us).
PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"


def ramp_volume(shape: tuple[int, int, int]) -> np.ndarray:
    """A volume whose every voxel is distinct along k, so slice order errors are visible."""
    k, j, i = np.indices(shape)
    return (-1000 + 10 * k + (j + i) % 7).astype(np.float32)


@pytest.fixture
def make_series(tmp_path: Path) -> SeriesFactory:
    """Write a CT series; keyword arguments override geometry and attributes."""
    counter = iter(range(10_000))

    def factory(
        shape: tuple[int, int, int] = (20, 16, 12),
        *,
        spacing_mm: tuple[float, float] = (0.7, 0.8),
        step_mm: float = -1.25,
        orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
        origin: tuple[float, float, float] = (-100.0, -120.0, 50.0),
        step_vector: tuple[float, float, float] | None = None,
        volume: np.ndarray | None = None,
        out: Path | None = None,
        transfer_syntax: str = "1.2.840.10008.1.2.1",
        **info: object,
    ) -> list[Path]:
        n = next(counter)
        normal = np.cross(orientation[:3], orientation[3:])
        step = step_vector if step_vector is not None else tuple(normal * step_mm)
        affine = affine_from_dicom(orientation, spacing_mm, origin, step)
        data = volume if volume is not None else ramp_volume(shape)
        info.setdefault("slice_thickness_mm", abs(step_mm))
        series_info = CTSeriesInfo(uid_seed=f"{tmp_path}-{n}", **info)  # type: ignore[arg-type]
        return write_ct_series(
            data,
            affine,
            out or tmp_path / f"series{n}",
            series_info,
            transfer_syntax=transfer_syntax,
        )

    return factory
