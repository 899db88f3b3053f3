"""Image-quality and identity metrics: PSNR, SSIM, identity similarity.

Images are float32 RGB in [0, 1], (H, W, 3) or a batch (N, H, W, 3); a batch
gives the mean over images. PSNR is over all RGB values. SSIM is computed on
the BT.601 luma (Y) channel with the usual 11-px Gaussian window (σ 1.5,
K1 0.01, K2 0.03), which is how the face-restoration papers report it; pass
``channel="rgb"`` for the mean over R, G and B instead.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .errors import UsageError


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise UsageError(f"images differ in shape: {a.shape} vs {b.shape}; compare same-size crops")
    return a, b


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB (mean over a batch; inf for identical images)."""
    a, b = _pair(a, b)
    if a.ndim == 4:
        return float(np.mean([psnr(x, y, data_range) for x, y in zip(a, b)]))
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def _luma(img: np.ndarray) -> np.ndarray:
    return img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114


def _ssim_plane(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2

    def blur(z: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT_101)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    num = (2 * mx * my + c1) * (2 * sxy + c2)
    den = (mx * mx + my * my + c1) * (sxx + syy + c2)
    smap = num / den
    # Drop the 5-px border the window cannot see fully (as skimage does).
    return float(smap[5:-5, 5:-5].mean())


def ssim(a: np.ndarray, b: np.ndarray, *, channel: str = "y", data_range: float = 1.0) -> float:
    """Structural similarity (mean over a batch).

    Args:
        a: First image(s), float RGB.
        b: Second image(s), same shape.
        channel: "y" for luma (default) or "rgb" for the mean over the three channels.
        data_range: Value range of the images.
    """
    a, b = _pair(a, b)
    if channel not in ("y", "rgb"):
        raise UsageError(f"unknown SSIM channel {channel!r}; use 'y' or 'rgb'")
    if a.ndim == 4:
        return float(np.mean([ssim(x, y, channel=channel, data_range=data_range) for x, y in zip(a, b)]))
    if channel == "y":
        return _ssim_plane(_luma(a), _luma(b), data_range)
    return float(np.mean([_ssim_plane(a[..., c], b[..., c], data_range) for c in range(a.shape[-1])]))


def identity_similarity(emb_a: np.ndarray, emb_b: np.ndarray) -> np.ndarray | float:
    """Cosine similarity of identity embeddings (1 = same direction).

    Works on single vectors (returns a float) or row-wise on (N, D) arrays
    (returns an (N,) array). Embeddings need not be unit length; they are
    normalised here.
    """
    a = np.asarray(emb_a, dtype=np.float64)
    b = np.asarray(emb_b, dtype=np.float64)
    if a.shape[-1] != b.shape[-1]:
        raise UsageError(f"embedding sizes differ: {a.shape[-1]} vs {b.shape[-1]}; use one analyzer backend")
    a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    sim = np.sum(a * b, axis=-1)
    return float(sim) if np.ndim(sim) == 0 else sim


def embedding_distance(emb_a: np.ndarray, emb_b: np.ndarray) -> np.ndarray | float:
    """Euclidean distance of embeddings (dlib's 128-D: ~0.6 is the same-person line)."""
    d = np.linalg.norm(np.asarray(emb_a, np.float64) - np.asarray(emb_b, np.float64), axis=-1)
    return float(d) if np.ndim(d) == 0 else d
