"""The one interface every restorer keeps.

A restorer takes aligned face crops (the 512x512 five-point template of
:mod:`facefix.faces.align`) and returns restored crops of the same shape.
Crops are float32 RGB in [0, 1], shape (N, 512, 512, 3); grayscale faces come
in as three equal channels. Restorers hold their loaded weights; they keep no
state between calls.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, Protocol, runtime_checkable

import numpy as np

from facefix.errors import ModelError


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


def config_from_dict(cls, data: dict[str, Any], what: str, defaults: dict[str, Any] | None = None):
    """A network's settings dataclass ``cls`` from the JSON stored with its weights (lists back to tuples).

    ``defaults`` fill settings that weights made before them do not record; a key ``cls``
    does not know means newer weights, said in one line naming ``what``.
    """
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ModelError(f"{what} settings have unknown keys {sorted(unknown)}; "
                         "the weights were made by a newer facefix — upgrade facefix")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**{**(defaults or {}), **values})


def config_to_dict(config) -> dict[str, Any]:
    """A settings dataclass as JSON (tuples as lists): what :func:`config_from_dict` reads back."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}
