"""The one interface every restorer keeps.

A restorer takes aligned face crops (the 512x512 five-point template of
:mod:`facefix.faces.align`) and returns restored crops of the same shape.
Crops are float32 RGB in [0, 1], shape (N, 512, 512, 3); grayscale faces come
in as three equal channels. Restorers hold their loaded weights; they keep no
state between calls.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Restorer(Protocol):
    #: Short label shown to users and written to reports, e.g. "fast/alice".
    name: str

    def restore(self, crops: np.ndarray) -> np.ndarray:
        """Restore a batch of aligned crops.

        Args:
            crops: float32 array (N, 512, 512, 3), RGB in [0, 1].

        Returns:
            float32 array of the same shape, RGB in [0, 1].
        """
        ...


def check_crops(crops: np.ndarray) -> np.ndarray:
    """Validate a batch of crops and return it as contiguous float32."""
    if crops.ndim != 4 or crops.shape[-1] != 3:
        raise ValueError(f"expected crops of shape (N, H, W, 3), got {crops.shape}")
    return np.ascontiguousarray(crops, dtype=np.float32)
