"""``basira predict`` from DICOM to results: a tiny real release (unet_small, ONNX with parity)
analyses small real CT series; results validate against the published schema, carry the model's
identity, refuse what is out of intended use without a score, point every finding at the source
slice through its centre, write the asked-for objects, and keep going when one study fails."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest

from pipelines.bundle import load_bundle, sha256_file
from pipelines.calibration import apply_calibration, load_calibration
from pipelines.cpu import cpu_info
from pipelines.dicom.geometry import affine_from_dicom
from pipelines.dicom.index import index_inputs
from pipelines.dicom.read import read_series_volume
from pipelines.dicom.write_ct import CTSeriesInfo, write_ct_series
from pipelines.errors import ConfigError, ModelNotFoundError
from pipelines.findings import Finding
from pipelines.inference.predict import (
    MAX_KEY_IMAGES,
    EngineChoice,
    LoadedModel,
    StudyAnalysis,
    key_image_ids,
    load_model,
    predict_inputs,
)
from pipelines.result import StudyResult, StudyStatus
from pipelines.transforms import PreprocessConfig
from tests.cli import Basira
from tests.pipelines.releases import make_release, small_bundle
from tests.pipelines.test_intended_use import chest_hu
from tests.pipelines.test_result import SCHEMA_FILE, schema_errors

SHAPE = (64, 32, 32)  # 64 slices x 2.5 mm = 160 mm: a (coarse) chest


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real release of a fresh unet_small on a coarse grid (export takes seconds)."""
    preprocess = PreprocessConfig(target_spacing_mm=(10.0, 10.0, 5.0))
    return make_release(tmp_path_factory.mktemp("release"), small_bundle(preprocess))


def write_study(
    out: Path,
    seed: str,
    *,
    thickness_mm: float = 2.5,
    step_mm: float = 2.5,
    shape: tuple[int, int, int] = SHAPE,
) -> list[Path]:
    """A small real CT series (feet-first order: k runs towards the feet, as scanners write)."""
    affine = affine_from_dicom(
        (1, 0, 0, 0, 1, 0), (10.0, 10.0), (-160.0, -160.0, 80.0), (0, 0, -step_mm)
    )
    info = CTSeriesInfo(uid_seed=seed, slice_thickness_mm=thickness_mm)
    return write_ct_series(chest_hu(shape), affine, out, info)


class SphereEngine:
    """A stand-in network: probability ~0.8 in balls at fixed preprocessed-grid voxels."""

    def __init__(self, *centres_kji: tuple[int, int, int], radius: float = 2.5) -> None:
        self.centres = [np.asarray(c, float) for c in centres_kji]
        self.radius = radius

    def predict(self, image_kji: np.ndarray) -> np.ndarray:
        k, j, i = np.indices(image_kji.shape)
        prob = np.full(image_kji.shape, 0.01, dtype=np.float32)
        for ck, cj, ci in self.centres:
            inside = (k - ck) ** 2 + (j - cj) ** 2 + (i - ci) ** 2 <= self.radius**2
            # brighter towards higher k, so the weighted centre is off the half-slice between
            # two source slices (no tie for "nearest"); the maximum is 0.8 + 0.03 * 2
            prob[inside] = (0.8 + 0.03 * (k - ck))[inside]
        return prob


class BrokenEngine:
    def predict(self, image_kji: np.ndarray) -> np.ndarray:
        raise RuntimeError("simulated engine crash")


def _analyse(model: LoadedModel, inputs: Path, out: Path, formats=frozenset()) -> list[StudyResult]:
    index = index_inputs([inputs], workdir=out / "work")
    return list(StudyAnalysis(model, out, formats).run(index.studies))


def test_predict_writes_a_schema_valid_result_with_the_model_identity(
    basira: Basira, release, tmp_path
):
    write_study(tmp_path / "in" / "a", "study-a")
    out = tmp_path / "out"
    assert basira("predict", str(tmp_path / "in"), "--out", str(out), "--model", str(release)) == 0
    (path,) = out.glob("*.json")
    data = json.loads(path.read_text())
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema_errors(data, schema, schema) == []
    assert data["status"] == "completed"
    assert path.name == f"{data['study_instance_uid']}.json"
    bundle = load_bundle(release / "bundle.yaml")
    runtime = data["runtime"]
    assert data["model"] == {
        "name": bundle.name,
        "version": bundle.version,
        "onnx_sha256": sha256_file(release / "model.onnx"),
        "engine": runtime["chosen"]["engine"],
    }
    assert runtime["cpu"] == cpu_info().model_dump(mode="json")
    assert runtime["chosen_by"] in {"measured", "cached"}  # --engine auto, the default
    timed = {json.dumps(t["candidate"]): t["window_batch_ms"] for t in runtime["candidates"]}
    assert json.dumps(runtime["chosen"]) == min(timed, key=lambda c: timed[c] or float("inf"))
    assert data["diagnosis"]["operating_point"] == pytest.approx(0.42)
    assert {"read", "intended_use", "preprocess", "inference", "findings", "total"} <= set(
        data["timings_ms"]
    )


def test_series_outside_intended_use_is_not_analysable_without_a_score(release, tmp_path):
    """4 mm slices pass series selection (<= 5 mm) but not the model's 0.5-3 mm range."""
    write_study(tmp_path / "in", "thick", thickness_mm=4.0, step_mm=4.0)
    summary = predict_inputs([tmp_path / "in"], release, tmp_path / "out")
    (result,) = summary.results
    assert result.status is StudyStatus.NOT_ANALYSABLE
    assert [r.code for r in result.reasons] == ["intended_use.slice_thickness"]
    assert result.diagnosis is None and result.findings == []
    assert not summary.any_failed


def test_study_without_ct_series_is_not_analysable_with_the_selection_reason(release, tmp_path):
    files = write_study(tmp_path / "in", "mr")
    for path in files:
        ds = pydicom.dcmread(path)
        ds.Modality = "MR"
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.save_as(path)
    (result,) = predict_inputs([tmp_path / "in"], release, tmp_path / "out").results
    assert result.status is StudyStatus.NOT_ANALYSABLE
    assert [r.code for r in result.reasons] == ["dicom.not_ct"]
    assert result.series_instance_uid is None and result.diagnosis is None


def _predict_args(tmp_path: Path, release: Path) -> list[str]:
    """``basira predict`` of ``tmp_path/in`` into ``tmp_path/out`` with ``release``."""
    return [
        "predict",
        str(tmp_path / "in"),
        "--out",
        str(tmp_path / "out"),
        "--model",
        str(release),
    ]


def test_folder_without_dicom_exits_3(basira: Basira, release, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    code = basira(*_predict_args(tmp_path, release))
    assert code == 3
    assert "error[input.no_dicom]" in capsys.readouterr().err


def test_providers_choose_how_onnx_runtime_runs_and_an_absent_one_is_refused(
    basira: Basira, release, tmp_path, capsys
):
    write_study(tmp_path / "in" / "a", "study-a")
    only_mlas = EngineChoice(threads=1, providers=["CPUExecutionProvider"])
    assert load_model(release, only_mlas).engine.session.providers == ["CPUExecutionProvider"]  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="torch engine has none"):
        load_model(release, EngineChoice(kind="torch", providers=["CPUExecutionProvider"]))
    args = _predict_args(tmp_path, release)
    assert basira(*args, "--providers", "CPUExecutionProvider") == 0
    assert len(list((tmp_path / "out").glob("*.json"))) == 1
    capsys.readouterr()
    assert basira(*args, "--providers", "NoSuchExecutionProvider") == 3
    err = capsys.readouterr().err
    assert "error[config.invalid]" in err and "NoSuchExecutionProvider" in err
    assert basira(*args, "--providers", " , ") == 2


def _runtime(out: Path) -> dict:
    (path,) = out.glob("*.json")
    return json.loads(path.read_text())["runtime"]


def test_models_tune_caches_the_fastest_engine_and_predict_then_runs_it_unless_pinned(
    basira: Basira, release, tmp_path, capsys
):
    cache = tmp_path / "choice.json"
    tune = ["models", "tune", "--model", str(release), "--engine-cache", str(cache)]
    assert basira(*tune, "--rounds", "1") == 0
    printed = capsys.readouterr().out
    assert f"CPU: {cpu_info().summary()}" in printed and "chosen: " in printed
    (tuned,) = json.loads(cache.read_text())["entries"].values()
    write_study(tmp_path / "in" / "a", "study-a")
    args = _predict_args(tmp_path, release)

    assert basira(*args, "--engine-cache", str(cache)) == 0
    cached = _runtime(tmp_path / "out")
    assert cached["chosen_by"] == "cached" and cached["chosen"] == tuned["chosen"]
    assert cached["candidates"] == tuned["candidates"]

    assert basira(*args, "--engine-cache", str(cache), "--engine", "torch", "--threads", "1") == 0
    pinned = _runtime(tmp_path / "out")
    assert pinned["chosen_by"] == "pinned" and pinned["candidates"] == []
    assert pinned["chosen"] == {"engine": "torch", "providers": [], "threads": 1}
    capsys.readouterr()
    assert basira(*args, "--engine", "fastest") == 2
    assert "--engine must be one of auto, onnx, torch" in capsys.readouterr().err
    assert basira(*tune, "--providers", "NoSuchExecutionProvider") == 3
    assert "error[config.invalid]" in capsys.readouterr().err


def test_unknown_format_is_a_usage_error(basira: Basira, tmp_path, capsys):
    args = ["predict", str(tmp_path), "--out", str(tmp_path / "out"), "--format", "json,pdf"]
    assert basira(*args) == 2
    assert "pdf" in capsys.readouterr().err


def test_missing_release_is_model_not_found(basira: Basira, tmp_path, capsys):
    write_study(tmp_path / "in", "no-model", shape=(2, 4, 4))
    with pytest.raises(ModelNotFoundError):
        load_model(tmp_path / "nowhere")
    code = basira(
        "predict",
        str(tmp_path / "in"),
        "--out",
        str(tmp_path / "out"),
        "--model",
        str(tmp_path / "nowhere"),
    )
    assert code == 1
    assert "error[model.not_found]" in capsys.readouterr().err


def test_finding_centres_map_to_source_voxels_and_the_nearest_slice(release, tmp_path):
    files = write_study(tmp_path / "in", "sphere")
    model = dataclasses.replace(load_model(release), engine=SphereEngine((20, 15, 12)))
    (result,) = _analyse(model, tmp_path / "in", tmp_path / "out")
    assert result.status is StudyStatus.COMPLETED
    (finding,) = result.findings
    positions = {}
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        positions[ds.SOPInstanceUID] = np.asarray(ds.ImagePositionPatient, float)
    distance = {uid: abs(pos[2] - finding.center_lps_mm[2]) for uid, pos in positions.items()}
    nearest, second = sorted(distance, key=distance.__getitem__)[:2]
    assert distance[second] - distance[nearest] > 0.1  # not a tie
    assert finding.referenced_sop_instance_uid == nearest
    # center_ijk indexes the source volume as Basira reads it (slices in spatial order)
    volume = read_series_volume(files)
    assert np.allclose(volume.ijk_to_lps(finding.center_ijk), finding.center_lps_mm, atol=1e-6)
    k = round(finding.center_ijk[2])
    assert volume.provenance.sop_instance_uids[k] == nearest
    expected = model.calibration.findings.apply(np.array([np.float32(0.86)], dtype=np.float64))
    assert finding.confidence == pytest.approx(float(expected[0]), abs=1e-6)


def test_requested_formats_are_written(release, tmp_path):
    write_study(tmp_path / "in", "formats")
    engine = SphereEngine((20, 15, 12), (12, 10, 20))
    model = dataclasses.replace(load_model(release), engine=engine)
    out = tmp_path / "out"
    (result,) = _analyse(model, tmp_path / "in", out, frozenset({"seg", "sr", "fhir", "keyimages"}))
    assert result.status is StudyStatus.COMPLETED and "outputs" in result.timings_ms
    uid = result.study_instance_uid
    names = {p.name for p in out.iterdir() if p.is_file()}
    assert {
        f"{uid}.json",
        f"{uid}.seg.dcm",
        f"{uid}.sr.dcm",
        f"{uid}.fhir.json",
        f"{uid}.key-1.dcm",
    } <= names


def test_a_corrupt_study_does_not_stop_the_batch(release, tmp_path):
    write_study(tmp_path / "in" / "a", "good")
    broken = write_study(tmp_path / "in" / "b", "broken")
    data = broken[10].read_bytes()
    broken[10].write_bytes(data[: len(data) - 600])  # pixel data cut short
    write_study(tmp_path / "in" / "c", "good-too")
    summary = predict_inputs([tmp_path / "in"], release, tmp_path / "out")
    statuses = sorted(r.status.value for r in summary.results)
    assert statuses == ["completed", "completed", "not_analysable"]
    refused = next(r for r in summary.results if r.status is StudyStatus.NOT_ANALYSABLE)
    assert refused.reasons and refused.diagnosis is None
    assert len(list((tmp_path / "out").glob("*.json"))) == 3


def test_an_unexpected_error_fails_that_study_with_predict_failed(release, tmp_path, caplog):
    """The exception's text reaches the log under the id the reason names, never the reason
    itself (issue 15: users see coded, plain reasons only)."""
    write_study(tmp_path / "in" / "a", "crash-a")
    write_study(tmp_path / "in" / "b", "crash-b")
    model = dataclasses.replace(load_model(release), engine=BrokenEngine())
    with caplog.at_level(logging.ERROR):
        results = _analyse(model, tmp_path / "in", tmp_path / "out")
    assert [r.status for r in results] == [StudyStatus.FAILED, StudyStatus.FAILED]
    assert all(r.reasons[0].code == "predict.failed" for r in results)
    assert "simulated engine crash" not in results[0].reasons[0].message
    logged = [r for r in caplog.records if r.exc_info]
    error_id = results[0].reasons[0].message.split("logged as error ")[1][:12]
    assert any(
        error_id in r.getMessage() and "simulated engine crash" in str(r.exc_info[1])
        for r in logged
    )
    assert len(list((tmp_path / "out").glob("*.json"))) == 2


def _scored(*scores: float) -> list[Finding]:
    return [
        Finding(n, (0.0, 0.0, 0.0), (0.0, 0.0, float(n)), 5.0, 0.1, score)
        for n, score in enumerate(scores, start=1)
    ]


def test_key_images_go_to_the_findings_that_alone_reach_the_operating_point(release):
    shipped = load_calibration(release, load_bundle(release / "bundle.yaml"))
    assert shipped is not None
    point = shipped.operating_point.model_copy(update={"threshold": 0.7})
    calibration = shipped.model_copy(update={"operating_point": point})
    found = _scored(0.95, 0.9, 0.6, 0.55)
    assert key_image_ids(found, calibration) == {1, 2}
    assert key_image_ids(_scored(0.6, 0.55), calibration) == frozenset()
    many = _scored(*(0.9 + 0.01 * n for n in range(MAX_KEY_IMAGES + 2)))
    assert key_image_ids(many, calibration) == {3, 4, 5, 6, 7}  # the best five
    # the study label and the key images agree: positive exactly when some finding reaches it
    for findings in (found, _scored(0.6, 0.55)):
        _, probability = apply_calibration(findings, calibration)
        assert (probability >= 0.7) == bool(key_image_ids(findings, calibration))
