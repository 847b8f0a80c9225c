"""Inference engines: one protocol (:class:`Engine`), a torch implementation for training and
validation; ONNX Runtime joins it for serving. Engines are imported from their own modules so
that importing this package loads neither torch nor onnxruntime."""

from pipelines.engine.base import Engine

__all__ = ["Engine"]
