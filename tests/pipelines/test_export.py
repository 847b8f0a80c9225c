"""ONNX export: one checked file with metadata, dynamic batch, proven torch parity, measured
variants kept only when faster and in agreement, and refusals with their codes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from pipelines.bundle import Bundle, preprocessing_hash, sha256_file, write_bundle
from pipelines.engine.onnx_engine import GraphOptimization, OrtSession, Precision
from pipelines.engine.torch_engine import TorchEngine
from pipelines.errors import CheckpointMismatchError, ExportParityError
from pipelines.model import export as export_module
from pipelines.model.export import (
    ExportConfig,
    check_patch_parity,
    check_volume_parity,
    choose_variant,
    export_model,
    parity_volume,
    random_patches,
    report_path,
    torch_probabilities,
    trace_to_onnx,
)
from pipelines.networks import build_network
from tests.cli import Basira

SMALL = {"channels": (4, 8, 8, 8)}
ROI = (16, 16, 16)
QUICK = ExportConfig(try_variants=False)


@dataclass
class Exported:
    bundle: Bundle
    bundle_path: Path
    weights: Path
    model: Path
    network: torch.nn.Module


def _bundle() -> Bundle:
    return Bundle(
        name="tiny",
        version="0.0.1",
        network={"name": "unet_small", "kwargs": SMALL},
        patch_size_kji=ROI,
        inference={"roi_size_kji": ROI, "overlap": 0.5, "sw_batch_size": 2},
    )


def _network(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network("unet_small", SMALL).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    folder = tmp_path_factory.mktemp("export")
    bundle, network = _bundle(), _network(0)
    write_bundle(bundle, folder / "bundle.yaml")
    torch.save(network.state_dict(), folder / "weights.pt")
    config = ExportConfig(try_variants=False, check_volume=True)
    export_model(folder, folder / "weights.pt", folder / "out" / "model.onnx", config)
    return Exported(
        bundle,
        folder / "bundle.yaml",
        folder / "weights.pt",
        folder / "out" / "model.onnx",
        network,
    )


def test_export_writes_one_checked_file_with_metadata_and_a_report(exported: Exported) -> None:
    model = onnx.load(exported.model)
    onnx.checker.check_model(model, full_check=True)
    assert sorted(p.name for p in exported.model.parent.iterdir()) == [
        "model.export.json",
        "model.onnx",
    ]  # no external-data side file, no leftover partial file
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["basira.model_name"] == "tiny" and meta["basira.model_version"] == "0.0.1"
    assert meta["basira.preprocessing_hash"] == preprocessing_hash(exported.bundle)
    assert meta["basira.weights_sha256"] == sha256_file(exported.weights)
    assert json.loads(meta["basira.roi_size_kji"]) == list(ROI)
    assert meta["basira.opset"] == "17" and model.opset_import[0].version == 17
    report = json.loads(report_path(exported.model).read_text(encoding="utf-8"))
    assert report["onnx_sha256"] == sha256_file(exported.model)
    assert report["info"]["preprocessing_hash"] == meta["basira.preprocessing_hash"]


@pytest.mark.parametrize("batch", [1, 3])
def test_exported_model_takes_any_batch_and_matches_torch(exported: Exported, batch: int) -> None:
    patches = random_patches(ROI, batch, seed=5)
    logits = OrtSession(exported.model).run(patches)
    assert logits.shape == (batch, 1, *ROI) and logits.dtype == np.float32
    expected = torch_probabilities(exported.network, patches)
    np.testing.assert_allclose(torch.sigmoid(torch.from_numpy(logits)).numpy(), expected, atol=1e-5)


def test_patch_and_volume_parity_are_within_tolerance_and_recorded(exported: Exported) -> None:
    report = json.loads(report_path(exported.model).read_text(encoding="utf-8"))
    assert report["patch_max_abs_diff"] <= 1e-4
    assert report["info"]["parity_max_abs_diff"] == report["patch_max_abs_diff"]
    volume = report["volume"]
    assert volume["max_abs_diff"] <= 1e-4 and volume["tolerance"] == 1e-4
    assert volume["findings_torch"] == volume["findings_onnx"]
    assert volume["shape_kji"] == [24, 24, 24]


def test_other_weights_fail_the_patch_parity_check(exported: Exported) -> None:
    with pytest.raises(ExportParityError) as raised:
        check_patch_parity(_network(1), exported.model, ROI, QUICK)
    assert raised.value.code == "export.parity_failed"
    assert raised.value.detail["check"] == "patches"
    assert raised.value.detail["max_abs_diff"] > 1e-4


def test_other_weights_fail_the_volume_parity_check(exported: Exported) -> None:
    from pipelines.engine import load_onnx_engine

    wrong = TorchEngine(_network(1), exported.bundle.inference)
    onnx_engine = load_onnx_engine(exported.bundle, exported.model)
    with pytest.raises(ExportParityError, match="volume") as raised:
        check_volume_parity(
            wrong,
            onnx_engine,
            parity_volume(ROI, 0),
            tolerance=1e-4,
            findings=exported.bundle.findings,
        )
    assert raised.value.detail["check"] == "volume"


def test_a_graph_that_disagrees_is_never_written(
    exported: Exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def trace_other_weights(network, roi_size_kji, opset):  # the exporter gone wrong
        return trace_to_onnx(_network(1), roi_size_kji, opset)

    monkeypatch.setattr(export_module, "trace_to_onnx", trace_other_weights)
    out = tmp_path / "model.onnx"
    with pytest.raises(ExportParityError):
        export_model(exported.bundle_path, exported.weights, out, QUICK)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_volume_check_leaves_no_file(
    exported: Exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disagree(*args, **kwargs):
        raise ExportParityError("volume differs", check="volume")

    monkeypatch.setattr(export_module, "check_volume_parity", disagree)
    config = ExportConfig(try_variants=False, check_volume=True)
    with pytest.raises(ExportParityError):
        export_model(exported.bundle_path, exported.weights, tmp_path / "model.onnx", config)
    assert list(tmp_path.iterdir()) == []


def test_weights_of_another_network_are_refused(exported: Exported, tmp_path: Path) -> None:
    torch.save(build_network("unet_small").state_dict(), tmp_path / "other.pt")
    with pytest.raises(CheckpointMismatchError):
        export_model(exported.bundle_path, tmp_path / "other.pt", tmp_path / "m.onnx", QUICK)


def test_variants_are_kept_only_when_faster_and_in_agreement(exported: Exported) -> None:
    model = onnx.load(exported.model).SerializeToString()
    patches = random_patches(ROI, 2, seed=0)
    parity = (patches, torch_probabilities(exported.network, patches))
    config = ExportConfig(timing_repeats=2)
    choice = choose_variant(model, parity, patches, config)
    names = [r.name for r in choice.results]
    assert names == ["fp32/basic", "fp32/extended", "fp32/all", *names[3:]]
    assert sorted(names[3:]) == sorted(f"{p}/{choice.graph_optimization}" for p in ("fp16", "int8"))
    kept = [r for r in choice.results if r.kept]
    assert len(kept) <= 1
    for result in kept:
        assert result.max_abs_diff is not None and result.max_abs_diff <= result.tolerance
        assert result.speedup is not None and result.speedup >= config.min_speedup
    for result in choice.results:
        assert result.error is not None or result.speedup is not None


def test_no_variant_is_kept_when_none_is_fast_enough(exported: Exported) -> None:
    model = onnx.load(exported.model).SerializeToString()
    patches = random_patches(ROI, 1, seed=0)
    parity = (patches, torch_probabilities(exported.network, patches))
    choice = choose_variant(model, parity, patches, ExportConfig(min_speedup=1e6, timing_repeats=1))
    assert not any(r.kept for r in choice.results)
    assert choice.graph_optimization == GraphOptimization.DISABLE
    assert choice.precision == Precision.FP32 and choice.model == model


def test_export_command_writes_the_model_and_reports_parity(
    basira: Basira,
    exported: Exported,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "model.onnx"
    args = ("export", "--bundle", str(exported.bundle_path), "--weights", str(exported.weights))
    code = basira(*args, "--out", str(out), "--no-variants")
    assert code == 0 and out.is_file()
    assert "patch parity max |diff|" in capsys.readouterr().out
    code = basira(*args[:-1], str(tmp_path / "none.pt"), "--out", str(out))
    assert code == 3 and "error[input.not_found]" in capsys.readouterr().err
