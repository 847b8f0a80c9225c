"""Property test of the whole analysis (issue 15): generated chest-like series the project did not
write (any patient position, oblique or tilted, 60 to 400 slices, non-square pixels, implicit or
explicit VR) go through ``StudyAnalysis`` with every output asked for, on a coarse or a fine
model grid, with findings planted anywhere on it (edges and corners included, touching ones
merging, single voxels that may fall between source slices).

The outcome is one of two: ``completed``, with every output read back by highdicom and
fhir.resources agreeing with the result JSON and every finding the JSON lacks named in
``withheld``; or ``not_analysable`` with documented codes. Never ``failed``, never an output
withheld. Example counts come from the hypothesis profile (tests/conftest.py).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from pipelines.dicom.index import index_inputs
from pipelines.dicom.read import read_series_volume
from pipelines.inference.predict import LoadedModel, StudyAnalysis, load_model
from pipelines.result import StudyStatus
from pipelines.transforms import PreprocessConfig
from tests import reason_ledger
from tests.pipelines.reports.readback import ExpectedFinding, check_released_outputs
from tests.pipelines.series_strategies import SeriesSpec, series_specs, write_spec
from tests.pipelines.test_intended_use import chest_hu
from tests.pipelines.test_predict import release  # noqa: F401 - the fixture
from tests.pipelines.test_predict_outputs import PlantedEngine

DOCUMENTED = reason_ledger.documented_codes(reason_ledger.ERRORS_MD.read_text(encoding="utf-8"))
ALL_FORMATS = frozenset({"seg", "sr", "fhir", "keyimages"})
#: Model grids (i, j, k mm): coarser than the source, and finer than it along k (where a
#: one-voxel finding can fall between two source slices).
GRIDS = [(10.0, 10.0, 5.0), (2.0, 2.0, 1.0), (3.0, 3.0, 0.8)]


@pytest.fixture(scope="module")
def model(release) -> LoadedModel:  # noqa: F811 - the fixture
    return load_model(release)


@st.composite
def chest_specs(draw: st.DrawFn) -> SeriesSpec:
    """A series the intended-use check can accept: 60+ slices of 0.5-3 mm over >= 150 mm."""
    n_slices = draw(st.integers(60, 400))
    low = max(0.5, 151.0 / n_slices)
    return draw(
        series_specs(
            slices=(n_slices, n_slices),
            matrix=(8, 20),
            step_mm=(low, 3.0),
            max_oblique_deg=20.0,
            max_tilt_deg=1.0,
        )
    )


Box = tuple[tuple[float, float, float], tuple[int, int, int], float]


@st.composite
def planted(draw: st.DrawFn) -> list[Box]:
    """Boxes in fractions of the model grid (placed once its shape is known): corner, size in
    voxels, probability."""
    boxes = []
    for _ in range(draw(st.integers(0, 6))):
        at = tuple(draw(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0)) for _ in range(3))
        size = tuple(draw(st.integers(1, 3)) for _ in range(3))
        boxes.append((at, size, draw(st.floats(0.55, 0.99))))
    return boxes  # type: ignore[return-value]


class FractionEngine(PlantedEngine):
    """:class:`PlantedEngine` with boxes given in fractions of whatever grid it is shown."""

    def __init__(self, boxes: list) -> None:
        self.fractions = boxes
        super().__init__()

    def predict(self, image_kji: np.ndarray) -> np.ndarray:
        shape = image_kji.shape
        self.boxes = tuple(
            (tuple(int(f * (n - 1)) for f, n in zip(at, shape, strict=True)), size, value)
            for at, size, value in self.fractions
        )
        return super().predict(image_kji)


@given(spec=chest_specs(), grid=st.sampled_from(GRIDS), boxes=planted())
def test_a_generated_study_is_completed_with_agreeing_outputs_or_refused_with_a_code(
    model: LoadedModel, spec: SeriesSpec, grid: tuple[float, float, float], boxes: list
) -> None:
    preprocess = PreprocessConfig(target_spacing_mm=grid)
    planted_model = dataclasses.replace(
        model,
        bundle=model.bundle.model_copy(update={"preprocess": preprocess}),
        engine=FractionEngine(boxes),
    )
    with tempfile.TemporaryDirectory(prefix="basira-prop-") as root:
        shape = (spec.n_slices, spec.rows, spec.columns)
        write_spec(spec, Path(root) / "in", chest_hu(shape), uid_seed=root)
        index = index_inputs([Path(root) / "in"], workdir=Path(root) / "work")
        out = Path(root) / "out"
        (result,) = StudyAnalysis(planted_model, out, ALL_FORMATS).run(index.studies)

        assert result.status is not StudyStatus.FAILED, result.reasons
        if result.status is StudyStatus.NOT_ANALYSABLE:
            assert {r.code for r in result.reasons} <= DOCUMENTED
            event(f"not analysable: {sorted(r.code for r in result.reasons)}")
            return
        event(f"completed, {len(result.findings)} finding(s), {len(result.withheld)} left out")
        assert all(w.code == "output.finding_not_representable" for w in result.withheld)
        assert all(w.output is None and w.finding_id for w in result.withheld)
        reported = {f.id for f in result.findings}
        assert reported.isdisjoint(w.finding_id for w in result.withheld)
        written = json.loads((out / f"{result.study_instance_uid}.json").read_text())
        assert written == json.loads(result.to_json())
        selected = index.studies[0].selected_series
        assert selected is not None
        expected = [
            ExpectedFinding(f.id, f.center_lps_mm, f.diameter_mm, f.volume_ml, f.confidence)
            for f in result.findings
        ]
        uids = list(read_series_volume(selected).provenance.sop_instance_uids)
        check_released_outputs(out, result.study_instance_uid, uids, expected, None)
