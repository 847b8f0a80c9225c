"""``basira evaluate`` and ``basira calibrate`` on a tiny prepared dataset.

The end-to-end evaluation runs the real CLI process with a freshly initialised tiny network
(the production torch path). Calibration needs findings of both outcomes, which a random network
does not give reliably, so those tests swap the engine for one that reads the ground truth: each
lesion becomes a 0.9 blob and one false-positive voxel of a per-case score sits in a corner.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipelines.bundle import load_bundle, write_bundle
from pipelines.calibration import CALIBRATION_FILE, BundleCalibration
from pipelines.datasets.manifest import Split
from pipelines.datasets.prepare import (
    PrepareConfig,
    PreparedIndex,
    load_prepared_case,
    prepare_manifest,
)
from pipelines.evaluation.commands import calibrate_command
from pipelines.evaluation.froc import compute_froc
from pipelines.evaluation.inference import split_data_hash
from pipelines.evaluation.predictions import read_predictions
from pipelines.networks import build_network
from pipelines.synth.config import SynthConfig
from pipelines.synth.dataset import generate_dataset
from pipelines.transforms import PreprocessConfig
from tests.cli import Basira
from tests.pipelines.training.conftest import tiny_bundle

PREPROCESS = PreprocessConfig(target_spacing_mm=(4.0, 4.0, 4.0))
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Six tiny studies, with and without lesions, prepared once as ``test`` and once as
    ``val`` (the split each CLI needs)."""
    root = tmp_path_factory.mktemp("evaluation-data")
    synth = SynthConfig(
        matrix_size=48,
        pixel_spacing_mm=(6.0, 7.0),
        slice_thickness_mm=(5.0, 6.0),
        coverage_mm=(150.0, 180.0),
        slice_count=(20, 40),
        lesion_diameter_mm=(10.0, 20.0),
        lesion_count_weights=[0.5, 0.5],
        vessel_max_segments=50,
    )
    generate_dataset(synth, root / "synth", n_studies=6, seed=3, workers=1)
    folders = {}
    for split in (Split.TEST, Split.VAL):
        config = PrepareConfig(preprocess=PREPROCESS, split=split)
        index = prepare_manifest(root / "synth" / "manifest.json", root / str(split), config)
        assert {c.has_lesion for c in index.cases} == {True, False}
        folders[str(split)] = root / str(split)
    return folders


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    """A copy of a tiny bundle (with a comment to keep) and fresh weights, in tmp_path."""
    folder = tmp_path / "bundle"
    folder.mkdir()
    bundle = tiny_bundle().model_copy(update={"preprocess": PREPROCESS})
    write_bundle(bundle, folder / "bundle.yaml")
    text = (folder / "bundle.yaml").read_text()
    (folder / "bundle.yaml").write_text("# the tiny test model\n" + text)
    torch.manual_seed(0)
    network = build_network(bundle.network.name, bundle.network.kwargs)
    torch.save(network.state_dict(), folder / "weights.pt")
    return folder


class TruthEngine:
    """Probability 0.9 on lesion voxels, one corner voxel per case at a score in [0.55, 0.8]."""

    def __init__(self, data_dir: Path) -> None:
        index = PreparedIndex.model_validate_json((data_dir / "prepared.json").read_text())
        self.labels = {}
        for number, case in enumerate(index.cases):
            cached = load_prepared_case(data_dir / case.cache)
            self.labels[cached["image"].tobytes()] = (cached["label"] > 0, 0.55 + 0.05 * number)

    def predict(self, image_kji: np.ndarray) -> np.ndarray:
        label, fp_score = self.labels[image_kji.tobytes()]
        prob = np.where(label, 0.9, 0.0).astype(np.float32)
        prob[1, 1, 1] = fp_score
        return prob


@pytest.fixture
def truth_engine(data: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Route every run through :class:`TruthEngine` (the val and test folders hold the same
    studies, prepared alike)."""
    from pipelines.evaluation import runs

    monkeypatch.setattr(runs, "load_engine", lambda *_: TruthEngine(data["val"]))


def _calibrate(bundle_dir: Path, data_dir: Path, **options: object) -> None:
    calibrate_command(
        bundle=bundle_dir,
        weights=bundle_dir / "weights.pt",
        data=data_dir,
        **{
            "split": Split.VAL,
            "method": "temperature",
            "target_sensitivity": 0.9,
            "out": None,
            "findings_thresholds": None,
            "device": "cpu",
            "threads": 1,
            **options,
        },  # type: ignore[arg-type]
    )


def test_evaluate_end_to_end_writes_metrics_consistent_with_predictions(
    basira: Basira, data: dict[str, Path], bundle_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    result = basira.run(
        "evaluate",
        "--bundle",
        str(bundle_dir),
        "--weights",
        str(bundle_dir / "weights.pt"),
        "--data",
        str(data["test"]),
        "--out",
        str(out),
        "--n-bootstrap",
        "20",
        "--threads",
        "1",
    )
    assert result.returncode == 0, result.stderr
    assert "6 cases, CPM" in result.stdout
    assert {p.name for p in out.iterdir()} == {
        "metrics.json",
        "predictions.json",
        "froc.png",
        "roc.png",
        "reliability.png",
    }
    metrics = json.loads((out / "metrics.json").read_text())
    predictions = read_predictions(out / "predictions.json")
    records = predictions.records()
    assert metrics["n_cases"] == len(records) == 6
    assert metrics["n_findings"] == sum(len(r.findings) for r in records)
    assert metrics["n_lesions"] == sum(len(r.lesions) for r in records)
    froc = compute_froc([r.detections() for r in records])
    assert metrics["detection"]["cpm"]["value"] == pytest.approx(froc.cpm)
    assert metrics["segmentation"]["n_cases"] == 6
    index = PreparedIndex.model_validate_json((data["test"] / "prepared.json").read_text())
    assert metrics["data"]["sha256"] == split_data_hash(data["test"], index.cases)
    assert metrics["data"]["split"] == "test" and metrics["model"]["calibration_method"] is None

    again = basira.run(
        "evaluate",
        "--predictions",
        str(out / "predictions.json"),
        "--out",
        str(tmp_path / "re"),
        "--n-bootstrap",
        "20",
    )
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "re" / "metrics.json").read_text()) == metrics


def test_calibrate_writes_calibration_json_and_updates_the_bundle_copy(
    data: dict[str, Path], bundle_dir: Path, truth_engine: None
) -> None:
    _calibrate(bundle_dir, data["val"])
    stored = BundleCalibration.model_validate_json((bundle_dir / CALIBRATION_FILE).read_text())
    assert stored.method == "temperature" and stored.findings.method == "temperature"
    assert stored.fitted_on.split == "val" and stored.fitted_on.n_cases == 6
    assert 0 < stored.fitted_on.n_true_findings < stored.fitted_on.n_findings
    bundle = load_bundle(bundle_dir / "bundle.yaml")
    assert bundle.calibration == CALIBRATION_FILE
    assert bundle.operating_point == pytest.approx(stored.operating_point.threshold)
    assert stored.operating_point.sensitivity >= 0.9
    assert (bundle_dir / "bundle.yaml").read_text().startswith("# the tiny test model\n")


def test_calibrate_picks_the_findings_threshold_with_the_best_val_cpm(
    data: dict[str, Path], bundle_dir: Path, truth_engine: None
) -> None:
    # lesions at 0.9, one false positive a case at 0.55-0.8: 0.5 and 0.6 both rank every lesion
    # first (CPM 1), 0.95 finds nothing; the tie goes to the higher threshold
    _calibrate(bundle_dir, data["val"], findings_thresholds="0.95,0.5,0.6")
    stored = BundleCalibration.model_validate_json((bundle_dir / CALIBRATION_FILE).read_text())
    assert stored.findings_threshold is not None
    assert stored.findings_threshold.threshold == 0.6
    assert stored.findings_threshold.cpm_by_threshold == {"0.5": 1.0, "0.6": 1.0, "0.95": 0.0}
    assert set(stored.findings_threshold.auc_by_threshold) == {"0.5", "0.6", "0.95"}
    bundle = load_bundle(bundle_dir / "bundle.yaml")
    assert bundle.findings.threshold == 0.6
    n_lesion_cases = stored.fitted_on.n_true_findings
    assert stored.fitted_on.n_findings == n_lesion_cases + 5  # the 0.55 false positive is out
    assert (bundle_dir / "bundle.yaml").read_text().startswith("# the tiny test model\n")


def test_calibrate_sets_a_flow_style_findings_threshold_by_rewriting_the_bundle(
    data: dict[str, Path], bundle_dir: Path, truth_engine: None
) -> None:
    path = bundle_dir / "bundle.yaml"
    fields = yaml.safe_load(path.read_text())
    findings = fields.pop("findings")
    path.write_text(yaml.safe_dump(fields, sort_keys=False) + f"findings: {json.dumps(findings)}\n")
    _calibrate(bundle_dir, data["val"], findings_thresholds="0.5,0.6")
    bundle = load_bundle(path)
    assert bundle.findings.threshold == 0.6
    assert bundle.findings.max_findings == findings["max_findings"]
    assert bundle.calibration == CALIBRATION_FILE and bundle.operating_point is not None


@pytest.mark.parametrize("given", ["0.2,abc", "0,0.5", "1.5"])
def test_calibrate_refuses_bad_findings_thresholds_as_usage(
    basira: Basira,
    data: dict[str, Path],
    bundle_dir: Path,
    given: str,
) -> None:
    args = ["--bundle", str(bundle_dir), "--weights", str(bundle_dir / "weights.pt")]
    code = basira("calibrate", *args, "--data", str(data["val"]), "--findings-thresholds", given)
    assert code == 2


def test_evaluate_after_calibration_reports_confidences_at_the_operating_point(
    basira: Basira,
    data: dict[str, Path],
    bundle_dir: Path,
    truth_engine: None,
    tmp_path: Path,
) -> None:
    _calibrate(bundle_dir, data["val"], method="isotonic")
    out = tmp_path / "report"
    args = ["--weights", str(bundle_dir / "weights.pt"), "--data", str(data["test"])]
    code = basira("evaluate", "--bundle", str(bundle_dir), *args, "--out", str(out))
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"]["calibration_method"] == "isotonic"
    assert (
        metrics["settings"]["study_threshold"]
        == load_bundle(bundle_dir / "bundle.yaml").operating_point
    )
    cases = read_predictions(out / "predictions.json").cases
    assert all(f.confidence is not None for case in cases for f in case.findings)
    assert metrics["study"]["auc"]["value"] == 1.0
    assert metrics["calibration"]["study"]["ece"]["value"] == pytest.approx(0.0, abs=1e-6)


def test_calibrate_with_out_leaves_the_given_bundle_untouched(
    data: dict[str, Path], bundle_dir: Path, truth_engine: None, tmp_path: Path
) -> None:
    before = (bundle_dir / "bundle.yaml").read_text()
    _calibrate(bundle_dir, data["val"], out=tmp_path / "calibrated")
    assert (bundle_dir / "bundle.yaml").read_text() == before
    assert not (bundle_dir / CALIBRATION_FILE).exists()
    assert load_bundle(tmp_path / "calibrated" / "bundle.yaml").calibration == CALIBRATION_FILE


def test_calibrate_without_false_findings_raises_missing_class(
    basira: Basira, data: dict[str, Path], bundle_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.evaluation import runs

    class PerfectEngine(TruthEngine):
        def predict(self, image_kji: np.ndarray) -> np.ndarray:
            return np.where(self.labels[image_kji.tobytes()][0], 0.9, 0.0).astype(np.float32)

    monkeypatch.setattr(runs, "load_engine", lambda *_: PerfectEngine(data["val"]))
    code = basira(
        "calibrate",
        "--bundle",
        str(bundle_dir / "bundle.yaml"),
        "--weights",
        str(bundle_dir / "weights.pt"),
        "--data",
        str(data["val"]),
    )
    assert code == 3
    assert not (bundle_dir / CALIBRATION_FILE).exists()


@pytest.mark.parametrize(
    ("change", "code", "expected"),
    [
        ({"--split": "val"}, 3, "error[dataset.empty_split]:"),
        ({"--weights": "missing.pt"}, 3, "error[input.not_found]:"),
        ({"--weights": "wrong.pt"}, 3, "error[training.checkpoint_mismatch]:"),
        ({"--bundle": None}, 2, "--bundle required unless --predictions is given"),
    ],
)
def test_evaluate_refusals_are_one_line_with_a_code(
    basira: Basira,
    data: dict[str, Path],
    bundle_dir: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, str | None],
    code: int,
    expected: str,
) -> None:
    torch.save({"unexpected": torch.zeros(1)}, bundle_dir / "wrong.pt")
    options = {
        "--bundle": str(bundle_dir),
        "--weights": str(bundle_dir / "weights.pt"),
        "--data": str(data["test"]),
        "--out": str(bundle_dir / "out"),
    }
    for key, value in change.items():
        options[key] = value if value in (None, "val") else str(bundle_dir / value)
    args = [item for key, value in options.items() if value is not None for item in (key, value)]
    assert basira("evaluate", *args) == code
    assert expected in capsys.readouterr().err
