"""Inference engines: one protocol (:class:`Engine`), two backends chosen by name.

``onnx`` (ONNX Runtime, the serving default) runs a model written by ``basira export``;
``torch`` (training-time validation, evaluation before export) runs the bundle's network with
a training ``state_dict``. :func:`load_engine` is the one way code picks a backend. Engines are
imported inside the loaders, so importing this package loads neither torch nor onnxruntime.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.engine.base import Engine
from pipelines.errors import CheckpointMismatchError, ConfigError, InputNotFoundError

if TYPE_CHECKING:
    from pipelines.bundle import Bundle
    from pipelines.engine.onnx_engine import OnnxEngine, OnnxEngineConfig
    from pipelines.engine.torch_engine import TorchEngine

__all__ = ["Engine", "EngineKind", "load_engine", "load_onnx_engine", "load_torch_engine"]


class EngineKind(StrEnum):
    """The inference backends :func:`load_engine` knows."""

    ONNX = "onnx"
    TORCH = "torch"


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise InputNotFoundError(f"Model file {path} does not exist.", path=str(path))


def load_torch_engine(
    bundle: Bundle, weights: Path, *, device: str = "cpu", threads: int | None = None
) -> TorchEngine:
    """The bundle's network with a training ``state_dict`` behind the torch engine.

    Raises:
        InputNotFoundError: ``weights`` does not exist.
        CheckpointMismatchError: the weights belong to another network.
    """
    from pipelines.engine.torch_engine import TorchEngine

    _require_file(weights)
    try:
        return TorchEngine.from_bundle(bundle, weights, device=device, threads=threads)
    except RuntimeError as exc:
        raise CheckpointMismatchError(
            f"{weights} does not fit network '{bundle.network.name}' of bundle '{bundle.name}'.",
            path=str(weights),
        ) from exc


def load_onnx_engine(
    bundle: Bundle, model: Path, config: OnnxEngineConfig | None = None
) -> OnnxEngine:
    """An exported model behind the ONNX Runtime engine, checked against ``bundle``.

    Raises:
        InputNotFoundError: ``model`` does not exist.
        ModelUnreadableError: ONNX Runtime cannot load it.
        ModelMismatchError: it was exported for another preprocessing contract.
    """
    from pipelines.engine.onnx_engine import OnnxEngine

    _require_file(model)
    return OnnxEngine.from_bundle(bundle, model, config)


_Providers = Sequence[str] | None


def _torch(
    bundle: Bundle, path: Path, threads: int | None, device: str, providers: _Providers
) -> Engine:
    if providers is not None:
        raise ConfigError(
            "Execution providers choose how ONNX Runtime runs; the torch engine has none.",
            providers=list(providers),
        )
    return load_torch_engine(bundle, path, device=device, threads=threads)


def _onnx(
    bundle: Bundle, path: Path, threads: int | None, device: str, providers: _Providers
) -> Engine:
    from pipelines.engine.onnx_engine import OnnxEngineConfig

    # the device follows from the execution providers, not from ``device``
    config = OnnxEngineConfig(
        threads=threads, providers=None if providers is None else tuple(providers)
    )
    return load_onnx_engine(bundle, path, config)


_LOADERS: dict[EngineKind, Callable[[Bundle, Path, int | None, str, _Providers], Engine]] = {
    EngineKind.ONNX: _onnx,
    EngineKind.TORCH: _torch,
}


def load_engine(
    kind: EngineKind | str,
    bundle: Bundle,
    model: Path,
    *,
    threads: int | None = None,
    device: str = "cpu",
    providers: Sequence[str] | None = None,
) -> Engine:
    """Load backend ``kind`` for ``bundle``: ``model`` is an ``.onnx`` file for ``onnx`` and a
    ``state_dict`` for ``torch``. ``device`` applies to torch only, ``providers`` (ONNX Runtime's
    execution providers in order; ``None``: the installed ones by preference) to onnx only. For
    more ONNX options (graph optimisation, TTA) call :func:`load_onnx_engine`.

    Raises:
        ValueError: ``kind`` is not an :class:`EngineKind`.
        ConfigError: ``providers`` given for the torch engine.
        and whatever the backend's loader raises (see :func:`load_torch_engine`,
        :func:`load_onnx_engine`).
    """
    return _LOADERS[EngineKind(kind)](bundle, model, threads, device, providers)
