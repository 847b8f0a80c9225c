"""3-D segmentation networks chosen by name: the bundle says ``network: {name, kwargs}``.

Every network maps a one-channel CT patch ``[batch, 1, k, j, i]`` to one channel of lesion
logits of the same spatial shape (a sigmoid gives the lesion probability). The registry is
explicit: :data:`NETWORKS` lists every name, and :func:`build_network` is the only way code
makes one, so a bundle can never name a network that the engine cannot rebuild.

MONAI is imported inside the factories: importing this module stays cheap (the CLI's help and
the bundle validation use the registry without building anything).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipelines.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class NetworkSpec:
    """One registered network: how to build it and what input sizes it accepts.

    ``defaults`` are the factory keyword arguments a bundle's ``kwargs`` override;
    ``size_divisor`` gives, for the merged kwargs, the number every patch side must divide by
    (the product of the down-sampling strides).
    """

    factory: Callable[..., nn.Module]
    size_divisor: Callable[[Mapping[str, Any]], int]
    description: str
    defaults: Mapping[str, Any] = field(default_factory=dict)


def _unet(**kwargs: Any) -> nn.Module:
    from monai.networks.nets import UNet

    return UNet(spatial_dims=3, in_channels=1, out_channels=1, **kwargs)


def _segresnet(**kwargs: Any) -> nn.Module:
    from monai.networks.nets import SegResNet

    return SegResNet(spatial_dims=3, in_channels=1, out_channels=1, **kwargs)


def _stride_product(kwargs: Mapping[str, Any]) -> int:
    return math.prod(int(s) for s in kwargs["strides"])


def _segresnet_divisor(kwargs: Mapping[str, Any]) -> int:
    return 2 ** (len(kwargs["blocks_down"]) - 1)


#: name → spec. "unet" is the CPU-fast default (strided convolutions, no pooling: several times
#: faster per patch than SegResNet on a CPU, see BASELINES.md); "unet_small" halves the widths
#: and drops one level for smoke runs and tiny machines.
NETWORKS: dict[str, NetworkSpec] = {
    "unet": NetworkSpec(
        factory=_unet,
        size_divisor=_stride_product,
        description="MONAI UNet, strided convolutions, 16-32-64-128-256, 2 residual units",
        defaults={
            "channels": (16, 32, 64, 128, 256),
            "strides": (2, 2, 2, 2),
            "num_res_units": 2,
            "norm": "instance",
        },
    ),
    "unet_small": NetworkSpec(
        factory=_unet,
        size_divisor=_stride_product,
        description="MONAI UNet, strided convolutions, 8-16-32-64, 1 residual unit",
        defaults={
            "channels": (8, 16, 32, 64),
            "strides": (2, 2, 2),
            "num_res_units": 1,
            "norm": "instance",
        },
    ),
    "segresnet": NetworkSpec(
        factory=_segresnet,
        size_divisor=_segresnet_divisor,
        description="MONAI SegResNet, 16 initial filters (slower on CPU, stronger context)",
        defaults={"init_filters": 16, "blocks_down": (1, 2, 2, 4), "blocks_up": (1, 1, 1)},
    ),
}


def known_networks() -> list[str]:
    """Every registered network name, sorted."""
    return sorted(NETWORKS)


def network_spec(name: str) -> NetworkSpec:
    """The registered spec for ``name``.

    Raises:
        ConfigError: ``name`` is not registered (the message lists the known names).
    """
    try:
        return NETWORKS[name]
    except KeyError:
        raise ConfigError(
            f"Unknown network '{name}'; known networks: {', '.join(known_networks())}.",
            network=name,
            known=known_networks(),
        ) from None


def size_divisor(name: str, kwargs: Mapping[str, Any] | None = None) -> int:
    """What every patch side of network ``name`` (with ``kwargs``) must be a multiple of."""
    spec = network_spec(name)
    return spec.size_divisor({**spec.defaults, **(kwargs or {})})


def build_network(name: str, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """Build network ``name`` with its defaults overridden by ``kwargs``.

    Raises:
        ConfigError: unknown name, or keyword arguments the network refuses.
    """
    spec = network_spec(name)
    merged = {**spec.defaults, **(kwargs or {})}
    try:
        return spec.factory(**merged)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(
            f"Network '{name}' refuses its kwargs {sorted(kwargs or {})}: {exc}", network=name
        ) from exc


def set_output_prior(model: nn.Module, probability: float) -> None:
    """Start ``model`` predicting ``probability`` everywhere: the bias of its last convolution
    (the one producing the single logit channel) becomes ``logit(probability)``.

    Lesion voxels are a fraction of a percent of every patch; a network that starts at 0.5
    spends its first hundreds of steps learning that, while its false-positive mass swamps the
    Dice denominator. RetinaNet's prior initialisation (Lin et al., 2017) starts it near the
    base rate instead.

    Raises:
        ValueError: ``probability`` is not in (0, 1), or the model has no convolution with one
            output channel and a bias.
    """
    import torch
    from torch import nn as torch_nn

    if not 0.0 < probability < 1.0:
        raise ValueError(f"output prior must be in (0, 1), got {probability}")
    convolutions = (torch_nn.Conv3d, torch_nn.ConvTranspose3d)
    last = [
        module
        for module in model.modules()
        if isinstance(module, convolutions) and module.out_channels == 1
    ]
    if not last or last[-1].bias is None:
        raise ValueError("the model has no one-channel output convolution with a bias")
    with torch.no_grad():
        last[-1].bias.fill_(math.log(probability / (1.0 - probability)))
