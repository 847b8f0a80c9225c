"""Fixtures: real CT series written by ``make_series``, read back, with two findings on them."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pipelines.dicom.read import read_series_volume
from pipelines.findings import Finding
from pipelines.reports import AlgorithmInfo, AnalysedStudy, StudyConclusion, read_source_headers
from pipelines.volume import Volume
from tests.pipelines.dicom.conftest import make_series  # noqa: F401 - the fixture, re-exported

StudyFactory = Callable[..., AnalysedStudy]
ALGORITHM = AlgorithmInfo(name="basira-unet", version="1.2.0")
CREATED = dt.datetime(2026, 3, 1, 12, 30, tzinfo=dt.UTC)


def two_finding_mask(shape: tuple[int, int, int]) -> np.ndarray:
    """A ``[k, j, i]`` uint8 mask with finding 1 (a 3x3x3 cube) and finding 2 (a 2x2x2 cube),
    placed off-centre on every axis so a flipped or shifted slice order changes the mask."""
    mask = np.zeros(shape, dtype=np.uint8)
    mask[4:7, 3:6, 2:5] = 1
    mask[12:14, 9:11, 7:9] = 2
    return mask


def findings_from_labels(mask: np.ndarray, volume: Volume) -> list[Finding]:
    """One finding per label, centred on its voxels' mean, sized from its voxel count."""
    voxel_ml = abs(float(np.linalg.det(volume.affine_lps[:3, :3]))) / 1000.0
    findings = []
    for label in (int(v) for v in np.unique(mask) if v):
        k, j, i = np.nonzero(mask == label)
        ijk = np.array([i.mean(), j.mean(), k.mean()])
        volume_ml = k.size * voxel_ml
        findings.append(
            Finding(
                id=label,
                center_ijk=(float(ijk[0]), float(ijk[1]), float(ijk[2])),
                center_lps_mm=tuple(float(v) for v in volume.ijk_to_lps(ijk)),  # type: ignore[arg-type]
                diameter_mm=float(np.cbrt(6 * volume_ml * 1000 / np.pi)),
                volume_ml=volume_ml,
                score=0.9 / label,
                confidence=0.8 / label,
            )
        )
    return findings


@pytest.fixture
def make_study(make_series) -> StudyFactory:  # noqa: F811 - the re-exported fixture
    """Write a series (keyword arguments go to ``make_series``), read it, add two findings.

    ``shuffle=True`` hands the reader and the writers the files and headers in random order.
    """

    def factory(*, shuffle: bool = False, **series: object) -> AnalysedStudy:
        series.setdefault("patient_name", "Doe^Jane")
        paths: list[Path] = make_series(**series)
        if shuffle:
            random.Random(7).shuffle(paths)
        volume = read_series_volume(paths)
        mask = two_finding_mask(volume.shape)
        return AnalysedStudy(
            volume=volume,
            source_headers=read_source_headers(paths),
            findings_mask=mask,
            findings=findings_from_labels(mask, volume),
            algorithm=ALGORITHM,
            conclusion=StudyConclusion("tumour suspected", probability=0.83, operating_point=0.4),
            created=CREATED,
        )

    return factory
