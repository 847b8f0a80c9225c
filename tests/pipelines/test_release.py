"""A release folder ships everything serving needs, its card says what the metrics say, and a
corrupt or edited file is refused before a model is served."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipelines.bundle import NetworkConfig, load_bundle, sha256_file, write_bundle
from pipelines.datasets.manifest import Lesion
from pipelines.errors import InputNotFoundError, ModelIntegrityError
from pipelines.evaluation.calibrate import (
    BundleCalibration,
    FittedOn,
    StoredOperatingPoint,
    save_calibration,
)
from pipelines.evaluation.calibration import TemperatureCalibrator
from pipelines.evaluation.report import CaseRecord, EvaluationConfig, evaluate_cases
from pipelines.export import ExportConfig
from pipelines.findings import Finding
from pipelines.networks import build_network
from pipelines.release import package_release, verify_release

SHIPPED_BUNDLE = Path(__file__).parents[2] / "models" / "lung-nodule-unet" / "bundle.yaml"


def _finding(center: tuple[float, float, float], score: float) -> Finding:
    return Finding(1, (0.0, 0.0, 0.0), center, 6.0, 0.1, score)


def _metrics(path: Path) -> Path:
    lesion = Lesion(id=1, center_lps_mm=(0.0, 0.0, 0.0), diameter_mm=8.0)
    records = [
        CaseRecord("a", [lesion], [_finding((1, 0, 0), 0.9)], 0.9, 1.0),
        CaseRecord("b", [lesion], [_finding((30, 0, 0), 0.6)], 0.6, 2.5),
        CaseRecord("c", [], [_finding((5, 5, 5), 0.3)], 0.3, 1.0),
        CaseRecord("d", [], [], 0.1, 1.0),
    ]
    metrics = evaluate_cases(records, EvaluationConfig(n_bootstrap=50))
    path.write_text(json.dumps(metrics))
    return path


@pytest.fixture
def run(tmp_path: Path) -> dict[str, Path]:
    """A trained-and-calibrated run as `basira train` + `basira calibrate` leave it."""
    train_dir, calibrated = tmp_path / "runs" / "ref", tmp_path / "runs" / "ref_cal"
    train_dir.mkdir(parents=True)
    calibrated.mkdir()
    bundle_path = calibrated / "bundle.yaml"
    shipped = load_bundle(SHIPPED_BUNDLE)
    small = (32, 32, 32)  # the shipped recipe on a small network, so export takes seconds
    bundle = shipped.model_copy(
        update={
            "network": NetworkConfig(name="unet_small"),
            "patch_size_kji": small,
            "inference": shipped.inference.model_copy(update={"roi_size_kji": small}),
        }
    )
    write_bundle(bundle, bundle_path)
    weights = train_dir / "best_model.pt"
    torch.save(build_network(bundle.network.name, bundle.network.kwargs).state_dict(), weights)
    history = [{"epoch": 1.0, "loss": 0.9, "epoch_seconds": 60.0, "patches_per_s": 3.0}]
    history.append({"epoch": 2.0, "loss": 0.7, "epoch_seconds": 90.0, "cpm": 0.8})
    (train_dir / "history.json").write_text(json.dumps(history))
    save_calibration(
        bundle_path,
        BundleCalibration(
            method="temperature",
            findings=TemperatureCalibrator(temperature=1.4),
            study=TemperatureCalibrator(temperature=1.1),
            operating_point=StoredOperatingPoint(
                threshold=0.42, target_sensitivity=0.9, sensitivity=0.93, specificity=0.8
            ),
            fitted_on=FittedOn(
                data="data/prepared",
                split="val",
                data_sha256="0" * 64,
                n_cases=16,
                n_positive_cases=11,
                n_findings=40,
                n_true_findings=15,
            ),
        ),
    )
    limitations = tmp_path / "limitations.md"
    limitations.write_text("- Trained on synthetic data only.\n")
    return {
        "bundle": calibrated,
        "weights": weights,
        "metrics": _metrics(tmp_path / "metrics.json"),
        "limitations": limitations,
        "out": tmp_path / "release",
    }


def _package(run: dict[str, Path]) -> Path:
    return package_release(
        run["bundle"],
        run["weights"],
        run["metrics"],
        run["out"],
        limitations=run["limitations"],
        trained_on="2 CPU cores",
        export=ExportConfig(check_volume=True, try_variants=False),
    )


def test_release_holds_every_file_with_checksums_that_verify(run):
    bundle_path = _package(run)
    out = run["out"]
    names = {p.name for p in out.iterdir()}
    assert {"bundle.yaml", "model.pt", "calibration.json", "metrics.json", "history.json"} <= names
    assert {"model.onnx", "model.export.json", "MODEL_CARD.md", "SHA256SUMS"} <= names
    bundle = verify_release(out)
    assert bundle_path == out / "bundle.yaml"
    assert bundle.calibration == "calibration.json"
    assert bundle.operating_point == pytest.approx(0.42)
    assert bundle.checksums["model.pt"] == sha256_file(run["weights"])
    assert torch.load(out / "model.pt", weights_only=True).keys()
    assert bundle.checksums["model.onnx"] == sha256_file(out / "model.onnx")
    report = json.loads((out / "model.export.json").read_text())
    assert report["patch_max_abs_diff"] <= 1e-4
    assert report["volume"]["max_abs_diff"] <= 1e-4


def test_model_card_reports_the_metrics_with_intervals_and_the_targets(run):
    _package(run)
    card = (run["out"] / "MODEL_CARD.md").read_text()
    metrics = json.loads(run["metrics"].read_text())
    cpm = metrics["detection"]["cpm"]
    assert f"{cpm['value']:.3f} (95 % CI {cpm['ci_low']:.3f}–{cpm['ci_high']:.3f})" in card
    assert "slice thickness 0.5–3 mm" in card
    assert "| CPM | >= 0.85 |" in card
    assert ("NOT met" in card) == (cpm["value"] < 0.85)
    assert "Trained on synthetic data only." in card
    assert "temperature, fitted on the `val` split (16 studies" in card
    assert "on 2 CPU cores" in card
    assert "Best validation CPM 0.800 at epoch 2" in card


@pytest.mark.parametrize("damage", ["edit", "delete"])
def test_a_damaged_release_is_refused_with_checksum_mismatch(run, damage):
    _package(run)
    weights = run["out"] / "model.pt"
    if damage == "edit":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    else:
        weights.unlink()
    with pytest.raises(ModelIntegrityError) as info:
        verify_release(run["out"])
    assert info.value.code == "model.checksum_mismatch"
    assert "model.pt" in info.value.message


def test_packaging_an_uncalibrated_run_names_the_missing_file(run):
    (run["bundle"] / "calibration.json").unlink()
    with pytest.raises(InputNotFoundError, match=r"calibration\.json"):
        _package(run)


def test_cli_packages_and_verifies_then_refuses_a_tampered_release(run):
    def basira(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(Path(sys.executable).parent / "basira"), "models", *args]
        return subprocess.run(command, capture_output=True, text=True, check=False)

    made = basira(
        "package",
        *("--bundle", str(run["bundle"]), "--weights", str(run["weights"])),
        *("--metrics", str(run["metrics"]), "--out", str(run["out"]), "--no-variants"),
    )
    assert made.returncode == 0, made.stderr
    assert basira("verify", str(run["out"])).returncode == 0
    (run["out"] / "calibration.json").write_text("{}")
    refused = basira("verify", str(run["out"]))
    assert refused.returncode == 1
    assert refused.stderr.strip().startswith("error[model.checksum_mismatch]")
