"""ONNX Runtime engine: the torch engine's windows and blending, refusals of foreign models,
providers, settings, and test-time augmentation's equivariance and cost."""

from __future__ import annotations

import logging
import platform
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from pipelines.bundle import BlendMode, Bundle
from pipelines.engine import Engine, EngineKind, load_engine, load_onnx_engine, onnx_engine
from pipelines.engine.onnx_engine import (
    GraphOptimization,
    OnnxEngine,
    OnnxEngineConfig,
    OnnxModelInfo,
    OrtSession,
    provider_entries,
    select_providers,
)
from pipelines.engine.torch_engine import TorchEngine
from pipelines.errors import ConfigError, ModelMismatchError, ModelUnreadableError
from pipelines.model.export import ExportConfig, export_model
from pipelines.networks import build_network

SMALL = {"channels": (4, 8, 8, 8)}
ROI = (16, 16, 16)


def _bundle(**preprocess: object) -> Bundle:
    return Bundle(
        name="tiny",
        version="1",
        network={"name": "unet_small", "kwargs": SMALL},
        patch_size_kji=ROI,
        preprocess=preprocess,
        inference={"roi_size_kji": ROI, "overlap": 0.5, "sw_batch_size": 3},
    )


@pytest.fixture(scope="module")
def network() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network("unet_small", SMALL).eval()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, network: torch.nn.Module) -> Path:
    folder = tmp_path_factory.mktemp("onnx")
    torch.save(network.state_dict(), folder / "weights.pt")
    (folder / "bundle.yaml").write_text(_bundle().model_dump_json(), encoding="utf-8")
    export_model(
        folder / "bundle.yaml",
        folder / "weights.pt",
        folder / "model.onnx",
        ExportConfig(try_variants=False),
    )
    return folder / "model.onnx"


@pytest.mark.parametrize("blend", list(BlendMode))
def test_onnx_engine_equals_torch_engine_on_a_volume(
    model: Path, network: torch.nn.Module, blend: BlendMode
) -> None:
    bundle = _bundle().model_copy(
        update={"inference": _bundle().inference.model_copy(update={"blend": blend})}
    )
    image = np.random.default_rng(3).random((24, 40, 20)).astype(np.float16)
    onnx_engine = OnnxEngine(OrtSession(model), bundle.inference)
    prob = onnx_engine.predict(image)
    assert isinstance(onnx_engine, Engine)
    assert prob.shape == image.shape and prob.dtype == np.float32
    reference = TorchEngine(network, bundle.inference).predict(image)
    assert float(np.abs(prob - reference).max()) <= 1e-4


def test_model_exported_for_other_preprocessing_is_refused(model: Path) -> None:
    other = _bundle(window_hu=(-1200.0, 600.0))
    with pytest.raises(ModelMismatchError) as raised:
        load_onnx_engine(other, model)
    assert raised.value.code == "model.preprocess_mismatch"
    assert raised.value.detail["found"] != raised.value.detail["expected"]


def test_model_without_basira_metadata_is_refused(model: Path, tmp_path: Path) -> None:
    bare = onnx.load(model)
    del bare.metadata_props[:]
    onnx.save_model(bare, tmp_path / "bare.onnx")
    with pytest.raises(ModelMismatchError, match="no complete Basira metadata"):
        load_onnx_engine(_bundle(), tmp_path / "bare.onnx")


def test_a_file_that_is_not_onnx_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelUnreadableError) as raised:
        load_onnx_engine(_bundle(), tmp_path / "model.onnx")
    assert raised.value.code == "model.unreadable"


def test_metadata_round_trips(model: Path) -> None:
    info = OrtSession(model).info
    assert info is not None and info.roi_size_kji == ROI and info.opset == 17
    assert OnnxModelInfo.from_metadata(info.to_metadata()) == info
    assert OnnxModelInfo.from_metadata({"producer": "x"}) is None
    assert OnnxModelInfo.from_metadata({"basira.model_name": "tiny"}) is None  # incomplete


def test_providers_prefer_tensorrt_then_cuda_then_openvino_then_cpu() -> None:
    available = ["AzureExecutionProvider", "CPUExecutionProvider", "CUDAExecutionProvider"]
    assert select_providers(available) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert select_providers(available, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(ConfigError, match="TensorrtExecutionProvider"):
        select_providers(available, ["TensorrtExecutionProvider"])
    cpu_box = ["CPUExecutionProvider", "OpenVINOExecutionProvider"]
    assert select_providers(cpu_box) == ["OpenVINOExecutionProvider", "CPUExecutionProvider"]


def test_openvino_is_pinned_to_float32_on_the_cpu_with_the_thread_count() -> None:
    assert provider_entries(["OpenVINOExecutionProvider", "CPUExecutionProvider"], 3) == [
        (
            "OpenVINOExecutionProvider",
            {"device_type": "CPU", "precision": "FP32", "num_of_threads": "3"},
        ),
        "CPUExecutionProvider",
    ]
    assert provider_entries(["OpenVINOExecutionProvider"], None) == [
        ("OpenVINOExecutionProvider", {"device_type": "CPU", "precision": "FP32"})
    ]


#: Where pyproject.toml installs onnxruntime-openvino; there a runtime without OpenVINO fails.
OPENVINO_PLATFORM = sys.platform == "linux" and platform.machine() == "x86_64"
needs_openvino = pytest.mark.skipif(
    not OPENVINO_PLATFORM,
    reason="onnxruntime-openvino is installed on x86-64 Linux only",
)


@needs_openvino
def test_openvino_serves_by_default_and_agrees_with_onnx_runtimes_cpu_kernels(
    model: Path,
) -> None:
    assert "OpenVINOExecutionProvider" in ort.get_available_providers()
    image = np.random.default_rng(6).random((20, 24, 18)).astype(np.float32)
    served = load_onnx_engine(_bundle(), model, OnnxEngineConfig(threads=1))
    mlas = load_onnx_engine(
        _bundle(), model, OnnxEngineConfig(providers=("CPUExecutionProvider",), threads=1)
    )
    assert served.session.providers[0] == "OpenVINOExecutionProvider"
    assert mlas.session.providers == ["CPUExecutionProvider"]
    np.testing.assert_allclose(served.predict(image), mlas.predict(image), atol=1e-5)


@needs_openvino
def test_an_execution_provider_that_cannot_start_is_logged_and_the_cpu_kernels_run(
    model: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(onnx_engine, "OPENVINO_OPTIONS", {"device_type": "NO_SUCH_DEVICE"})
    with caplog.at_level(logging.WARNING, logger=onnx_engine.__name__):
        session = OrtSession(model, threads=1)
    assert session.providers == ["CPUExecutionProvider"]
    assert "['OpenVINOExecutionProvider'] could not start" in caplog.text
    image = np.random.default_rng(7).random((1, 1, *ROI)).astype(np.float32)
    assert session.run(image).shape == (1, 1, *ROI)


def test_settings_choose_threads_and_level_else_the_exported_level(model: Path) -> None:
    config = OnnxEngineConfig(
        threads=1, spin_wait=False, graph_optimization=GraphOptimization.BASIC
    )
    engine = load_onnx_engine(_bundle(), model, config)
    assert engine.session.graph_optimization == GraphOptimization.BASIC
    assert engine.session.providers == select_providers(ort.get_available_providers())
    assert engine.session.threads == 1 and not engine.session.spin_wait
    default = load_onnx_engine(_bundle(), model)
    info = default.session.info
    assert info is not None and default.session.graph_optimization == info.graph_optimization
    assert default.session.threads == 0 and default.session.spin_wait  # ONNX Runtime's defaults
    assert load_engine("onnx", _bundle(), model, threads=3).session.threads == 3  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="spatial axes"):
        OnnxEngineConfig(tta_flip_axes=(0, 3))


def test_load_engine_builds_both_backends(model: Path, network: torch.nn.Module) -> None:
    weights = model.parent / "weights.pt"
    image = np.random.default_rng(4).random(ROI).astype(np.float32)
    onnx_engine = load_engine("onnx", _bundle(), model, threads=1)
    torch_engine = load_engine(EngineKind.TORCH, _bundle(), weights)
    assert isinstance(onnx_engine, OnnxEngine) and isinstance(torch_engine, TorchEngine)
    np.testing.assert_allclose(onnx_engine.predict(image), torch_engine.predict(image), atol=1e-4)
    with pytest.raises(ValueError):
        load_engine("tensorflow", _bundle(), model)


class CountingSession:
    """An :class:`OrtSession` stand-in that counts the windows it is given."""

    def __init__(self, session: OrtSession) -> None:
        self.session, self.windows = session, 0

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.windows += len(batch)
        return self.session.run(batch)


def test_tta_is_flip_equivariant_and_costs_one_pass_per_flip(model: Path) -> None:
    inference = _bundle().inference
    plain, flipped = CountingSession(OrtSession(model)), CountingSession(OrtSession(model))
    tta = OnnxEngine(flipped, inference, tta_flip_axes=(0, 1, 2))  # type: ignore[arg-type]
    image = np.random.default_rng(5).random(ROI).astype(np.float32)
    OnnxEngine(plain, inference).predict(image)  # type: ignore[arg-type]
    prob = tta.predict(image)
    assert len(tta.flips) == 8 and flipped.windows == 8 * plain.windows
    np.testing.assert_allclose(tta.predict(image[::-1, :, ::-1]), prob[::-1, :, ::-1], atol=1e-6)
    constant = tta.predict(np.full(ROI, 0.3, np.float32))  # flip-symmetric input, output too
    np.testing.assert_allclose(constant, constant[::-1, ::-1, ::-1], atol=1e-6)
    assert OnnxEngine(OrtSession(model), inference).flips == [()]  # off by default
