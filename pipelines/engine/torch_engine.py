"""The torch engine: MONAI sliding-window inference over a whole preprocessed volume.

Used by validation during training (the production path, on the model being trained) and by
evaluation before export. Memory stays bounded by the window batch: the volume and the stitched
output live on the CPU, only ``sw_batch_size`` windows at a time go to the compute device.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from pipelines.bundle import Bundle, InferenceConfig
from pipelines.networks import build_network

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
        inference: window size, overlap, blending and window batch from the bundle.
        device: where windows are computed (``"cpu"``, ``"cuda"``).
        threads: intra-op CPU threads during :meth:`predict` (``None``: torch's default).
    """

    def __init__(
        self,
        network: nn.Module,
        inference: InferenceConfig,
        *,
        device: str | torch.device = "cpu",
        threads: int | None = None,
    ) -> None:
        self.network = network
        self.inference = inference
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
        return cls(network.to(device), bundle.inference, device=device, threads=threads)

    def predict(self, image_kji: np.ndarray) -> np.ndarray:
        """Probability map ``[k, j, i]`` float32 for a ``[k, j, i]`` image in ``[0, 1]``."""
        from monai.inferers import sliding_window_inference

        if image_kji.ndim != 3:
            raise ValueError(f"expected a [k, j, i] volume, got shape {image_kji.shape}")
        inputs = torch.from_numpy(np.ascontiguousarray(image_kji, dtype=np.float32))[None, None]
        was_training = self.network.training
        self.network.eval()
        try:
            with torch_threads(self.threads), torch.inference_mode():
                logits = sliding_window_inference(
                    inputs,
                    roi_size=self.inference.roi_size_kji,
                    sw_batch_size=self.inference.sw_batch_size,
                    predictor=self.network,
                    overlap=self.inference.overlap,
                    mode=self.inference.blend.value,
                    sw_device=self.device,
                    device="cpu",
                )
                probs = torch.sigmoid(cast(torch.Tensor, logits).float())[0, 0]
        finally:
            self.network.train(was_training)
        return np.asarray(probs.detach().cpu(), dtype=np.float32)
