"""Torch engine: probability maps of the input's shape, equal to a direct forward on one window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.bundle import BlendMode, Bundle, InferenceConfig
from pipelines.engine import Engine
from pipelines.engine.torch_engine import TorchEngine, torch_threads
from pipelines.networks import build_network

SMALL = {"channels": (4, 8, 8, 8)}


@pytest.fixture(scope="module")
def network() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network("unet_small", SMALL).eval()


def test_engine_returns_float32_probabilities_of_the_input_shape(network: torch.nn.Module) -> None:
    engine = TorchEngine(network, InferenceConfig(roi_size_kji=(16, 16, 16), overlap=0.5))
    image = np.random.default_rng(0).random((21, 35, 18)).astype(np.float16)
    prob = engine.predict(image)
    assert isinstance(engine, Engine)
    assert prob.shape == image.shape and prob.dtype == np.float32
    assert prob.min() >= 0.0 and prob.max() <= 1.0


@pytest.mark.parametrize("blend", list(BlendMode))
def test_single_window_equals_a_direct_forward(network: torch.nn.Module, blend: BlendMode) -> None:
    image = np.random.default_rng(1).random((16, 24, 32)).astype(np.float32)
    engine = TorchEngine(network, InferenceConfig(roi_size_kji=(16, 24, 32), blend=blend))
    with torch.no_grad():
        direct = torch.sigmoid(network(torch.from_numpy(image)[None, None]))[0, 0].numpy()
    np.testing.assert_allclose(engine.predict(image), direct, atol=1e-5)


def test_engine_leaves_training_mode_and_thread_count_as_found(network: torch.nn.Module) -> None:
    before = torch.get_num_threads()
    network.train()
    engine = TorchEngine(network, InferenceConfig(roi_size_kji=(16, 16, 16)), threads=1)
    engine.predict(np.zeros((16, 16, 16), np.float32))
    assert network.training and torch.get_num_threads() == before
    network.eval()
    with torch_threads(1):
        assert torch.get_num_threads() == 1


def test_engine_from_bundle_loads_saved_weights(tmp_path: Path, network: torch.nn.Module) -> None:
    bundle = Bundle(
        name="tiny",
        version="1",
        network={"name": "unet_small", "kwargs": SMALL},
        patch_size_kji=(16, 16, 16),
        inference={"roi_size_kji": (16, 16, 16)},
    )
    torch.save(network.state_dict(), tmp_path / "weights.pt")
    engine = TorchEngine.from_bundle(bundle, tmp_path / "weights.pt")
    image = np.random.default_rng(2).random((16, 16, 16)).astype(np.float32)
    reference = TorchEngine(network, bundle.inference)
    np.testing.assert_array_equal(engine.predict(image), reference.predict(image))


def test_engine_refuses_a_non_volume(network: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="k, j, i"):
        TorchEngine(network, InferenceConfig()).predict(np.zeros((4, 4), np.float32))
