"""A release folder ships everything serving needs, its card says what the metrics say, and a
corrupt or edited file is refused before a model is served."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipelines.bundle import sha256_file
from pipelines.errors import ExportParityError, InputNotFoundError, ModelIntegrityError
from pipelines.model.export import ExportConfig
from pipelines.model.release import package_release, verify_release
from tests.pipelines.releases import NO_VARIANTS, calibrated_run, small_bundle, write_metrics


@pytest.fixture
def run(tmp_path: Path) -> dict[str, Path]:
    """A trained-and-calibrated run as `basira train` + `basira calibrate` leave it."""
    calibrated, weights = calibrated_run(tmp_path, small_bundle())
    limitations = tmp_path / "limitations.md"
    limitations.write_text("- Trained on synthetic data only.\n")
    return {
        "bundle": calibrated,
        "weights": weights,
        "metrics": write_metrics(tmp_path / "metrics.json"),
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
        export=NO_VARIANTS,
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
    met = "met" if cpm["value"] >= 0.85 else "NOT met"
    assert f"| CPM | >= 0.85 | {cpm['value']:.3f} | {met} |" in card
    # the four hand-made cases: one 8 mm lesion found with a 6 mm finding; of the two
    # lesion-free studies one shows a finding
    assert "| Diameter error (median absolute, mm) | <= 1.5 | 2.000 | NOT met |" in card
    assert "| Findings on a lesion-free study (median) | <= 1.0 | 0.500 | met |" in card
    assert "Lesion-free studies (2): 0.5 findings reported at the median" in card
    assert "median absolute error 2.00 mm, mean error -2.00 mm (6-10 mm 2.00 mm (n=1))" in card
    assert "| subgroup | lesions | sensitivity at 1 FP/scan |" in card
    assert "lesion location: interior | 2 |" in card
    assert "Study score: the best finding's score (`max`)" in card
    assert "Finding confidence on the test split (ECE" in card
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


def test_a_failed_export_leaves_the_previous_release_untouched(run):
    _package(run)
    before = (run["out"] / "SHA256SUMS").read_text()
    with pytest.raises(ExportParityError):
        package_release(
            run["bundle"],
            run["weights"],
            run["metrics"],
            run["out"],
            export=ExportConfig(tolerance=1e-12, try_variants=False),
        )
    assert (run["out"] / "SHA256SUMS").read_text() == before
    verify_release(run["out"])
    assert not run["out"].with_name("release.partial").exists()


def test_model_card_performance_names_the_cpu_the_export_timed_the_variants_on(run):
    from pipelines.cpu import cpu_info

    package_release(
        run["bundle"],
        run["weights"],
        run["metrics"],
        run["out"],
        export=ExportConfig(try_variants=True, timing_repeats=1),
    )
    report = json.loads((run["out"] / "model.export.json").read_text())
    card = (run["out"] / "MODEL_CARD.md").read_text()
    cpu = cpu_info()

    assert report["cpu"] == cpu.model_dump(mode="json")
    assert "## Performance" in card
    assert f"timed at export on {cpu.model}, {cpu.logical_cpus} CPUs, {' '.join(cpu.isa)}" in card
    timed = [v for v in report["variants"] if v["seconds_median"]]
    assert timed and f"| fp32/{timed[0]['graph_optimization']} | " in card


def test_model_card_without_export_timings_says_so(run):
    _package(run)
    card = (run["out"] / "MODEL_CARD.md").read_text()
    assert "## Performance" in card and "No timing was recorded at export." in card
