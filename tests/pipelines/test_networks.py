"""The network registry: every name builds, maps a patch to same-shape logits, refuses typos."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from pipelines.errors import ConfigError
from pipelines.networks import (
    NETWORKS,
    build_network,
    known_networks,
    set_output_prior,
    size_divisor,
)

#: narrow widths so the forward pass takes milliseconds
SMALL: dict[str, dict[str, Any]] = {
    "unet": {"channels": (4, 8, 8, 8, 8)},
    "unet_small": {"channels": (4, 8, 8, 8)},
    "segresnet": {"init_filters": 8},
}


def test_every_registered_network_has_a_small_test_variant() -> None:
    assert sorted(SMALL) == known_networks()


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_every_registered_network_maps_a_patch_to_same_shape_logits(name: str) -> None:
    kwargs = SMALL[name]
    network = build_network(name, kwargs)
    side = size_divisor(name, kwargs)
    with torch.no_grad():
        out = network(torch.zeros(1, 1, side, side * 2, side))
    assert out.shape == (1, 1, side, side * 2, side)


def test_size_divisor_follows_the_strides() -> None:
    assert size_divisor("unet") == 16
    assert size_divisor("unet_small") == 8
    assert size_divisor("unet", {"strides": (2, 2), "channels": (8, 16, 32)}) == 4
    assert size_divisor("segresnet") == 8


def test_unknown_network_raises_config_error_listing_known_names() -> None:
    with pytest.raises(ConfigError) as info:
        build_network("unet3000")
    assert info.value.code == "config.invalid"
    for name in known_networks():
        assert name in info.value.message


def test_bad_kwargs_raise_config_error_naming_the_network() -> None:
    with pytest.raises(ConfigError, match="unet_small"):
        build_network("unet_small", {"no_such_argument": 1})


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_output_prior_starts_every_network_near_that_probability(name: str) -> None:
    torch.manual_seed(0)
    network = build_network(name, {**SMALL[name], "norm": "batch"})
    set_output_prior(network, 0.01)
    side = 2 * size_divisor(name, SMALL[name])
    network.eval()
    with torch.no_grad():
        prob = torch.sigmoid(network(torch.rand(2, 1, side, side, side)))
    # the residual path and untrained weights spread it; the median sits near the prior
    assert 0.002 < float(prob.median()) < 0.05


def test_output_prior_outside_zero_one_is_refused() -> None:
    network = build_network("unet_small", SMALL["unet_small"])
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="output prior"):
            set_output_prior(network, bad)


def test_batch_norm_unet_lets_a_quiet_window_stay_quiet() -> None:
    """MONAI's UNet normalises its one output channel in its last layer. With instance norm that
    channel is rescaled to unit variance in every window, however little the window holds;
    batch norm in eval mode applies fixed statistics, so a near-uniform window stays flat."""
    torch.manual_seed(0)
    quiet = 0.2 + 1e-3 * torch.randn(1, 1, 32, 32, 32)
    spread = {}
    for norm in ("instance", "batch"):
        network = build_network("unet", {**SMALL["unet"], "norm": norm}).eval()
        one_channel_norms = [
            m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._NormBase)
        ]
        seen: list[torch.Tensor] = []
        one_channel_norms[-1].register_forward_hook(lambda _m, _i, out, seen=seen: seen.append(out))
        with torch.no_grad():
            network(quiet)
        spread[norm] = float(seen[0].std())
    assert spread["instance"] == pytest.approx(1.0, abs=0.01)
    assert spread["batch"] < 0.1
