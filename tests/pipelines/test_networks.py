"""The network registry: every name builds, maps a patch to same-shape logits, refuses typos."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from pipelines.errors import ConfigError
from pipelines.networks import NETWORKS, build_network, known_networks, size_divisor

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
