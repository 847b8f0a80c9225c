"""Checkpoints that let ``--resume`` continue a run exactly where it stopped.

``<run>/checkpoint.pt`` is rewritten atomically after every epoch with the model, optimizer,
scheduler and AMP scaler states, the :class:`TrainState` (epochs done, best metric, patience
counter, history, tracking run id) and the torch / numpy / Python RNG states. The bundle's
network name and preprocessing hash are stored too: resuming with another bundle is refused.
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.bundle import Bundle, preprocessing_hash
from pipelines.errors import CheckpointMismatchError, CheckpointNotFoundError

CHECKPOINT_NAME = "checkpoint.pt"
BEST_WEIGHTS_NAME = "best_model.pt"


@dataclass
class TrainState:
    """Progress of a run: ``epoch`` counts completed epochs; metrics are validation CPM."""

    epoch: int = 0
    best_metric: float = float("-inf")
    best_epoch: int = 0
    validations_without_improvement: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    tracking_run_id: str | None = None
    #: the last mining round's patch centres: training case index (as text) -> [[k, j, i], ...]
    mined: dict[str, list[list[int]]] = field(default_factory=dict)


def _rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "cached_gaussian": float(numpy_state["gauss"]),
        },
        "python": random.getstate(),
    }


def _restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["bit_generator"],
            numpy_state["key"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(
    path: Path, bundle: Bundle, state: TrainState, components: dict[str, Any]
) -> None:
    """Write the checkpoint atomically.

    ``components`` maps ``model``, ``optimizer``, ``scheduler``, ``scaler`` to objects with a
    ``state_dict()`` (the bare model, not its DDP wrapper).
    """
    payload = {
        "network": bundle.network.model_dump(mode="json"),
        "preprocessing_hash": preprocessing_hash(bundle),
        "state": asdict(state),
        "rng": _rng_state(),
        **{name: component.state_dict() for name, component in components.items()},
    }
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, partial)
    os.replace(partial, path)


def load_checkpoint(path: Path, bundle: Bundle, components: dict[str, Any]) -> TrainState:
    """Restore ``components`` and the RNG states from ``path``; return the saved state.

    Raises:
        CheckpointNotFoundError: ``path`` does not exist.
        CheckpointMismatchError: it was written for another network or preprocessing contract.
    """
    if not path.is_file():
        raise CheckpointNotFoundError(
            f"No checkpoint at {path}; start without --resume.", path=str(path)
        )
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload["network"] != bundle.network.model_dump(mode="json") or payload[
        "preprocessing_hash"
    ] != preprocessing_hash(bundle):
        raise CheckpointMismatchError(
            f"{path} was written for another network or preprocessing than bundle "
            f"'{bundle.name}'; use a new --out folder.",
            path=str(path),
        )
    for name, component in components.items():
        component.load_state_dict(payload[name])
    _restore_rng(payload["rng"])
    return TrainState(**payload["state"])


def save_weights(path: Path, model: torch.nn.Module) -> None:
    """Write the bare ``state_dict`` (what the engine and the export load), atomically."""
    partial = path.with_name(path.name + ".partial")
    torch.save(model.state_dict(), partial)
    os.replace(partial, path)
