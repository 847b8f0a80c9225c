"""The engine protocol every inference backend implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Engine(Protocol):
    """Turns one preprocessed volume into a lesion probability map.

    Implementations read their sliding-window settings from the model bundle, never from code
    constants, so every backend sees the same windows.
    """

    def predict(self, image_kji: np.ndarray) -> np.ndarray:
        """Lesion probability for every voxel.

        Args:
            image_kji: ``[k, j, i]`` preprocessed intensities in ``[0, 1]`` (any float dtype).

        Returns:
            ``[k, j, i]`` float32 probabilities in ``[0, 1]``, the input's shape.
        """
        ...
