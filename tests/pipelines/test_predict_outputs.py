"""One odd finding, or one output, never costs a study its diagnosis.

The regression of issue 15: a head-first prone, implicit VR, 144-slice series from another
generator, analysed on the shipped model's grid (1 x 1 x 1.5 mm), where one finding of four model
voxels (2.25 mm, 0.006 ml) lies between two 2.5 mm source slices and so covers no source voxel.
It used to reach the SEG as a segment without frames and stop the SR with ``KeyError``. Now it is
left out of every output, named in ``withheld``, and the study is completed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest

from pipelines.bundle import load_bundle
from pipelines.dicom.index import index_inputs
from pipelines.dicom.read import read_series_volume
from pipelines.inference import predict as predict_module
from pipelines.inference.predict import LoadedModel, StudyAnalysis, load_model
from pipelines.reports import writer as writer_module
from pipelines.result import StudyResult, StudyStatus
from pipelines.transforms import PreprocessConfig, label_to_source, preprocess_volume
from tests.pipelines.foreign_series import ForeignGeometry, write_foreign_series
from tests.pipelines.releases import SHIPPED_BUNDLE
from tests.pipelines.reports.tamper import move_sr_points
from tests.pipelines.test_intended_use import chest_hu
from tests.pipelines.test_predict import (  # noqa: F401 - release: the fixture
    BrokenEngine,
    release,
)

ALL_FORMATS = frozenset({"seg", "sr", "fhir", "keyimages"})
SLICES, STEP_MM = 144, 2.5
BLOCK = (slice(0, 1), slice(0, 2), slice(0, 2))  # 1 x 2 x 2 model voxels: 6 mm3 on 1x1x1.5 mm


class PlantedEngine:
    """A stand-in network: background 0.01, and the given probability in given boxes of the
    preprocessed grid (``(k0, j0, i0)`` corner, a box of ``shape_kji`` voxels)."""

    def __init__(self, *boxes: tuple[tuple[int, int, int], tuple[int, int, int], float]) -> None:
        self.boxes = boxes

    def predict(self, image_kji: np.ndarray) -> np.ndarray:
        prob = np.full(image_kji.shape, 0.01, dtype=np.float32)
        for (k, j, i), (dk, dj, di), value in self.boxes:
            prob[k : k + dk, j : j + dj, i : i + di] = value
        return prob


def prone_head_first_series(out: Path) -> list[Path]:
    """The integrator's geometry: HFP (rows run to the patient's right, columns anterior),
    implicit VR little endian, 144 slices of 2.5 mm from the head down, 1 mm pixels."""
    geometry = ForeignGeometry(
        row_direction=(-1.0, 0.0, 0.0),
        column_direction=(0.0, -1.0, 0.0),
        pixel_spacing_mm=(1.0, 1.0),
        positions_lps_mm=[(24.0, 24.0, 100.0 - STEP_MM * k) for k in range(SLICES)],
    )
    return write_foreign_series(
        out,
        chest_hu((SLICES, 48, 48)),
        geometry,
        uid_seed="issue-15-prone",
        transfer_syntax="implicit",
        patient_position="HFP",
        slice_thickness_mm=STEP_MM,
    )


def shipped_grid(model: LoadedModel) -> LoadedModel:
    """The test release on the preprocessing of the shipped model where issue 15 was seen
    (1 x 1 x 1.5 mm, pinned here so a later recipe does not move the regression)."""
    preprocess: PreprocessConfig = load_bundle(SHIPPED_BUNDLE).preprocess.model_copy(
        update={"target_spacing_mm": (1.0, 1.0, 1.5)}
    )
    return dataclasses.replace(
        model, bundle=model.bundle.model_copy(update={"preprocess": preprocess})
    )


def slice_between_source_slices(paths: list[Path], preprocess: PreprocessConfig) -> int:
    """A preprocessed slice ``k`` in the lungs on which a 2 x 2 block maps to no source voxel."""
    pre = preprocess_volume(read_series_volume(paths), preprocess)
    shape = pre.geometry.shape
    for k in range(shape[0] // 3, 2 * shape[0] // 3):
        label = np.zeros(shape, dtype=np.uint8)
        label[k, shape[1] // 2 : shape[1] // 2 + 2, 10:12] = 1
        if not label_to_source(label, pre.geometry).any():
            return k
    raise AssertionError("every preprocessed slice holds a source slice centre")


def _analyse(model: LoadedModel, inputs: Path, out: Path, formats=ALL_FORMATS) -> StudyResult:
    index = index_inputs([inputs], workdir=out / "work")
    (result,) = StudyAnalysis(model, out, formats).run(index.studies)
    return result


@pytest.fixture
def sub_voxel_study(release, tmp_path) -> tuple[LoadedModel, Path]:  # noqa: F811 - the fixture
    """The prone series and a model that finds a 6 mm3 ball-less block between two source
    slices (finding 2) besides a clear 3 x 4 x 4 voxel one (finding 1)."""
    paths = prone_head_first_series(tmp_path / "in")
    model = shipped_grid(load_model(release))
    k = slice_between_source_slices(paths, model.bundle.preprocess)
    engine = PlantedEngine(((40, 20, 20), (3, 4, 4), 0.95), ((k, 24, 10), (1, 2, 2), 0.9))
    return dataclasses.replace(model, engine=engine), tmp_path / "in"


def test_a_finding_between_source_slices_is_left_out_of_every_output_not_the_study(
    sub_voxel_study, tmp_path
):
    model, inputs = sub_voxel_study
    out = tmp_path / "out"
    result = _analyse(model, inputs, out)

    assert result.status is StudyStatus.COMPLETED and result.diagnosis is not None
    assert [f.id for f in result.findings] == [1]
    (withheld,) = result.withheld
    assert (withheld.code, withheld.finding_id, withheld.output) == (
        "output.finding_not_representable",
        2,
        None,
    )
    assert "2.25 mm, 0.006 ml" in withheld.message
    assert "no voxel of the source series' grid" in withheld.message

    uid = result.study_instance_uid
    seg = hd.seg.segread(out / f"{uid}.seg.dcm")
    assert [int(s.SegmentNumber) for s in seg.SegmentSequence] == [1]
    assert seg.get_segment_description(1).segment_label == "AI finding 1"
    report = hd.sr.srread(out / f"{uid}.sr.dcm")
    groups = hd.sr.MeasurementReport.from_sequence([report]).get_volumetric_roi_measurement_groups()
    assert [str(g.tracking_identifier) for g in groups] == ["AI finding 1"]
    bundle = json.loads((out / f"{uid}.fhir.json").read_text())
    observations = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    assert len(observations) == 1
    written = json.loads((out / f"{uid}.json").read_text())
    assert written["schema_version"] == "1.2"
    assert written["withheld"] == [withheld.model_dump(mode="json")]


def test_the_same_findings_are_left_out_whichever_formats_are_asked(sub_voxel_study, tmp_path):
    """The rule runs before any writer: a JSON-only run reports what a full run reports."""
    model, inputs = sub_voxel_study
    full = _analyse(model, inputs, tmp_path / "full")
    json_only = _analyse(model, inputs, tmp_path / "json", formats=frozenset())
    assert json_only.findings == full.findings
    assert json_only.withheld == full.withheld
    assert sorted(p.name for p in (tmp_path / "json").glob("*.*")) == [
        f"{json_only.study_instance_uid}.json"
    ]


def test_an_output_that_fails_is_withheld_and_the_diagnosis_delivered(
    sub_voxel_study, tmp_path, monkeypatch
):
    """The SR fails its self-check (its point moved by one slice): the SR alone is withheld, with
    the code of why; the diagnosis, the findings, the SEG and the FHIR report are delivered."""
    model, inputs = sub_voxel_study
    move_sr_points(monkeypatch, 2.5)
    out = tmp_path / "out"
    result = _analyse(model, inputs, out)

    assert result.status is StudyStatus.COMPLETED and result.diagnosis is not None
    assert [f.id for f in result.findings] == [1]
    withheld_sr = [w for w in result.withheld if w.output == "sr"]
    assert [(w.code, w.finding_id) for w in withheld_sr] == [("output.geometry_mismatch", None)]
    assert withheld_sr[0].message.startswith("The DICOM SR was withheld: ")
    uid = result.study_instance_uid
    names = {p.name for p in out.iterdir() if p.is_file()}
    assert f"{uid}.sr.dcm" not in names
    assert {f"{uid}.json", f"{uid}.seg.dcm", f"{uid}.fhir.json"} <= names
    assert not [p for p in out.iterdir() if p.name.startswith(".staging-")]


def test_an_unexpected_writer_error_withholds_that_output_under_a_logged_id(
    sub_voxel_study, tmp_path, monkeypatch, caplog
):
    model, inputs = sub_voxel_study

    def crash(_study):
        raise ZeroDivisionError("voxel 1.2.826.0.1.3680043.8.498.99 of patient Doe")

    monkeypatch.setattr(writer_module, "build_fhir_bundle", crash)
    with caplog.at_level(logging.ERROR):
        result = _analyse(model, inputs, tmp_path / "out")
    assert result.status is StudyStatus.COMPLETED
    (fhir,) = [w for w in result.withheld if w.output == "fhir"]
    assert fhir.code == "output.invalid"
    assert "ZeroDivisionError" not in fhir.message and "Doe" not in fhir.message
    error_id = re.search(r"logged as error ([0-9a-f]{12})", fhir.message)
    assert error_id is not None
    (record,) = [r for r in caplog.records if error_id.group(1) in r.getMessage()]
    assert record.exc_info is not None and record.exc_info[0] is ZeroDivisionError


def test_an_unexpected_analysis_error_is_one_plain_code_with_the_traceback_in_the_log(
    release,  # noqa: F811 - the fixture
    tmp_path,
    caplog,
):
    prone_head_first_series(tmp_path / "in")
    model = dataclasses.replace(load_model(release), engine=BrokenEngine())
    with caplog.at_level(logging.ERROR):
        result = _analyse(model, tmp_path / "in", tmp_path / "out")
    assert result.status is StudyStatus.FAILED
    (reason,) = result.reasons
    assert reason.code == "predict.failed"
    assert "RuntimeError" not in reason.message and "simulated" not in reason.message
    error_id = re.search(r"logged as error ([0-9a-f]{12})", reason.message)
    assert error_id is not None
    (record,) = [r for r in caplog.records if error_id.group(1) in r.getMessage()]
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "simulated engine crash"


def test_a_series_narrower_than_one_model_voxel_is_not_analysable_with_a_code(
    release,  # noqa: F811 - the fixture
    tmp_path,
):
    """Found by the property test: 8 columns of 0.3 mm (2.4 mm) on the 10 mm grid of the test
    release stopped the analysis with a ValueError (predict.failed); it is the input's fault."""
    geometry = ForeignGeometry(
        row_direction=(1.0, 0.0, 0.0),
        column_direction=(0.0, 1.0, 0.0),
        pixel_spacing_mm=(2.0, 0.3),
        positions_lps_mm=[(0.0, 0.0, -STEP_MM * k) for k in range(64)],
    )
    write_foreign_series(
        tmp_path / "in", chest_hu((64, 16, 8)), geometry, uid_seed="narrow", slice_thickness_mm=2.5
    )
    result = _analyse(load_model(release), tmp_path / "in", tmp_path / "out", frozenset())
    assert result.status is StudyStatus.NOT_ANALYSABLE
    assert [r.code for r in result.reasons] == ["series.too_small"]
    assert "2.4" in result.reasons[0].message


def test_the_cli_shows_a_failed_study_as_its_code_and_error_id_never_the_exception(
    basira,
    release,  # noqa: F811 - the fixture
    tmp_path,
    monkeypatch,
    capsys,
):
    """An unexpected error inside the analysis (here the preprocessing, made to raise with a
    UID and a patient name in its text): the CLI prints the coded line and exits 1; the text
    stays out of what the user reads."""
    prone_head_first_series(tmp_path / "in")

    def crash(*_args, **_kwargs):
        raise RuntimeError("resampling 1.2.826.0.1.3680043.8.498.7 of Doe^Jane failed")

    monkeypatch.setattr(predict_module, "preprocess_volume", crash)
    args = ["predict", str(tmp_path / "in"), "--out", str(tmp_path / "out")]
    code = basira(*args, "--model", str(release), "--format", "json,seg,sr,fhir")
    err = capsys.readouterr().err
    assert code == 1, err
    assert "failed [predict.failed] The analysis stopped on an unexpected error of ours" in err
    assert re.search(r"logged as error [0-9a-f]{12}", err)
    assert "Doe" not in err and "RuntimeError" not in err and "Traceback" not in err
    result = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert result["status"] == "failed" and "Doe" not in json.dumps(result)
