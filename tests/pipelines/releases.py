"""Build small, real model releases for tests: the shipped recipe on ``unet_small`` at 32³,
fresh weights, a hand-made calibration, test metrics from ``evaluate_cases`` and an ONNX export
with proven parity (seconds, not minutes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from pipelines.bundle import Bundle, NetworkConfig, load_bundle, write_bundle
from pipelines.calibration import TemperatureCalibrator
from pipelines.datasets.manifest import Lesion
from pipelines.evaluation.calibrate import (
    BundleCalibration,
    FittedOn,
    StoredOperatingPoint,
    save_calibration,
)
from pipelines.evaluation.report import CaseRecord, EvaluationConfig, evaluate_cases
from pipelines.findings import Finding
from pipelines.model.export import ExportConfig
from pipelines.model.release import package_release
from pipelines.networks import build_network
from pipelines.transforms import PreprocessConfig

SHIPPED_BUNDLE = Path(__file__).parents[2] / "models" / "lung-nodule-unet" / "bundle.yaml"
NO_VARIANTS = ExportConfig(check_volume=True, try_variants=False)


def small_bundle(preprocess: PreprocessConfig | None = None) -> Bundle:
    """The shipped recipe on a small network (and optionally another preprocessing)."""
    shipped = load_bundle(SHIPPED_BUNDLE)
    small = (32, 32, 32)
    update: dict[str, Any] = {
        "network": NetworkConfig(name="unet_small"),
        "patch_size_kji": small,
        "inference": shipped.inference.model_copy(update={"roi_size_kji": small}),
    }
    if preprocess is not None:
        update["preprocess"] = preprocess
    return shipped.model_copy(update=update)


def write_metrics(path: Path) -> Path:
    """A metrics.json of four hand-made cases (a hit, a miss, a false positive, a clean case)."""

    def finding(center: tuple[float, float, float], score: float) -> Finding:
        return Finding(1, (0.0, 0.0, 0.0), center, 6.0, 0.1, score)

    lesion = Lesion(id=1, center_lps_mm=(0.0, 0.0, 0.0), diameter_mm=8.0)
    records = [
        CaseRecord("a", [lesion], [finding((1, 0, 0), 0.9)], 0.9, 1.0),
        CaseRecord("b", [lesion], [finding((30, 0, 0), 0.6)], 0.6, 2.5),
        CaseRecord("c", [], [finding((5, 5, 5), 0.3)], 0.3, 1.0),
        CaseRecord("d", [], [], 0.1, 1.0),
    ]
    path.write_text(json.dumps(evaluate_cases(records, EvaluationConfig(n_bootstrap=50))))
    return path


def calibrated_run(root: Path, bundle: Bundle) -> tuple[Path, Path]:
    """What ``basira train`` + ``basira calibrate`` leave: (calibrated bundle dir, weights)."""
    train_dir, calibrated = root / "runs" / "ref", root / "runs" / "ref_cal"
    train_dir.mkdir(parents=True)
    calibrated.mkdir()
    write_bundle(bundle, calibrated / "bundle.yaml")
    weights = train_dir / "best_model.pt"
    torch.manual_seed(0)
    torch.save(build_network(bundle.network.name, bundle.network.kwargs).state_dict(), weights)
    history = [{"epoch": 1.0, "loss": 0.9, "epoch_seconds": 60.0, "patches_per_s": 3.0}]
    history.append({"epoch": 2.0, "loss": 0.7, "epoch_seconds": 90.0, "cpm": 0.8})
    (train_dir / "history.json").write_text(json.dumps(history))
    save_calibration(calibrated / "bundle.yaml", _calibration())
    return calibrated, weights


def make_release(root: Path, bundle: Bundle) -> Path:
    """A packaged release folder under ``root``."""
    calibrated, weights = calibrated_run(root, bundle)
    out = root / "release"
    package_release(
        calibrated, weights, write_metrics(root / "metrics.json"), out, export=NO_VARIANTS
    )
    return out


def _calibration() -> BundleCalibration:
    return BundleCalibration(
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
    )
