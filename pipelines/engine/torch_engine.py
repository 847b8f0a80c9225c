"""The torch engine: sliding-window inference over a preprocessed volume with a torch module.

Used by validation during training (the production path, on the model being trained) and by
evaluation before export. The windows, their blending and the lung crop are
:class:`~pipelines.engine.sliding_window.SlidingWindow`'s, shared with the ONNX engine. Memory
stays bounded by the window batch: the volume and the stitched output live on the CPU, only
``sw_batch_size`` windows at a time go to the compute device.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from pipelines.bundle import Bundle, InferenceConfig
from pipelines.engine.sliding_window import SlidingWindow
from pipelines.networks import build_network
from pipelines.transforms import PreprocessConfig

if TYPE_CHECKING:
    from torch import nn


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads (``None``: leave torch's setting)."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class TorchEngine:
    """:class:`~pipelines.engine.base.Engine` backed by a torch module.

    Args:
        network: maps ``[b, 1, k, j, i]`` to one channel of logits of the same shape.
        inference: window size, overlap, blending, window batch and lung crop from the bundle.
        preprocess: the bundle's preprocessing, to find the lungs (``None``: whole volume).
        device: where windows are computed (``"cpu"``, ``"cuda"``).
        threads: intra-op CPU threads during :meth:`predict` (``None``: torch's default).
    """

    def __init__(
        self,
        network: nn.Module,
        inference: InferenceConfig,
        *,
        preprocess: PreprocessConfig | None = None,
        device: str | torch.device = "cpu",
        threads: int | None = None,
    ) -> None:
        self.network = network
        self.inference = inference
        self.window = SlidingWindow(inference, preprocess)
        self.device = torch.device(device)
        self.threads = threads

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        weights: Path,
        *,
        device: str | torch.device = "cpu",
        threads: int | None = None,
    ) -> TorchEngine:
        """Rebuild the bundle's network and load a ``state_dict`` saved by training."""
        network = build_network(bundle.network.name, bundle.network.kwargs)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        network.load_state_dict(state)
        return cls(
            network.to(device),
            bundle.inference,
            preprocess=bundle.preprocess,
            device=device,
            threads=threads,
        )

    @contextmanager
    def _inference(self) -> Iterator[None]:
        """Evaluation mode, the engine's threads and no autograd for the block; the network's
        training mode restored after (validation runs it mid-training)."""
        was_training = self.network.training
        self.network.eval()
        try:
            with torch_threads(self.threads), torch.inference_mode():
                yield
        finally:
            self.network.train(was_training)

    def predict(self, image_kji: np.ndarray) -> np.ndarray:
        """Probability map ``[k, j, i]`` float32 for a ``[k, j, i]`` image in ``[0, 1]``."""
        with self._inference():
            return self.window.probabilities(image_kji, self._logits)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """The network's logits for one ``[b, 1, k, j, i]`` window batch, as :meth:`predict` runs
        it: what the engine chooser times."""
        with self._inference():
            return self._logits(batch)

    def _logits(self, batch: np.ndarray) -> np.ndarray:
        """The network's logits for a ``[b, 1, k, j, i]`` window batch, computed on ``device``."""
        logits = self.network(torch.from_numpy(batch).to(self.device))
        return cast(torch.Tensor, logits).float().cpu().numpy()
