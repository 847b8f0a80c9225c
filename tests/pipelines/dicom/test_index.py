"""The index keeps the slice stack it checked, and the reader reuses it only when it applies."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipelines.dicom.geometry import GeometryTolerances, stack_slices
from pipelines.dicom.index import SeriesEntry, index_inputs
from pipelines.dicom.read import ReadPolicy, read_series_volume
from pipelines.dicom.selection import SelectionRules, series_placements
from pipelines.errors import MissingSlicesError


def _series(paths, tmp_path, rules: SelectionRules | None = None) -> SeriesEntry:
    index = index_inputs(paths, workdir=tmp_path / "work", rules=rules)
    (series,) = [s for study in index.studies for s in study.series]
    return series


@pytest.mark.parametrize("step_mm", [1.25, -1.25])
def test_kept_stack_is_the_one_recomputed_from_the_headers(make_series, tmp_path, step_mm):
    series = _series(make_series((20, 8, 6), step_mm=step_mm), tmp_path)
    tolerances = SelectionRules().geometry
    kept = series.stacked_geometry(tolerances)
    recomputed = stack_slices(series_placements(series.instances), tolerances)
    assert kept.order == recomputed.order
    assert np.array_equal(kept.affine_lps, recomputed.affine_lps)
    assert (kept.slice_step_mm, kept.gantry_tilt_deg) == (
        recomputed.slice_step_mm,
        recomputed.gantry_tilt_deg,
    )
    assert series.stacked_geometry(GeometryTolerances()) is kept


def test_other_tolerances_restack_and_raise_their_own_errors(make_series, tmp_path):
    paths = make_series((20, 8, 6), step_mm=1.0)
    series = _series(paths[:10] + paths[12:], tmp_path, SelectionRules(min_slices=2))
    assert [r.code for r in series.reasons] == ["series.missing_slices"]
    lenient = GeometryTolerances(gap_factor=5.0, spacing_rtol=3.0)
    assert len(series.stacked_geometry(lenient).order) == 18
    with pytest.raises(MissingSlicesError):
        read_series_volume(series)


def test_changed_instances_are_restacked(make_series, tmp_path):
    series = _series(make_series((20, 8, 6), step_mm=1.0), tmp_path)
    kept = series.stacked_geometry(GeometryTolerances())
    series.instances = series.instances[:16]
    restacked = series.stacked_geometry(GeometryTolerances())
    assert restacked is not kept and len(restacked.order) == 16


def test_reading_an_indexed_series_twice_gives_independent_affines(make_series, tmp_path):
    series = _series(make_series((20, 8, 6), step_mm=1.0), tmp_path)
    policy = ReadPolicy(geometry=dataclasses.replace(GeometryTolerances()))
    first = read_series_volume(series, policy)
    first.affine_lps[:] = 0
    assert np.any(read_series_volume(series, policy).affine_lps)
