"""Paste restored face crops back into the photo without a seam.

Each crop goes back through its alignment's inverse with a soft mask: full
weight over the face, a feathered edge sized relative to the crop (so to the
face), zero outside the crop. Only the face's bounding region of the photo is
touched, so a 50 MP scan costs no more than a small one per face.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import cv2
import numpy as np

from facefix.faces.align import Alignment
from facefix.faces.grain import Grain, make_grain, missing_sigma


@lru_cache(maxsize=8)
def face_mask(size: int = 512, inset: float = 0.06, feather: float = 0.07) -> np.ndarray:
    """Soft blending mask in crop space: 1 inside, smooth fall-off to 0 at the edge.

    Args:
        size: crop side.
        inset: fraction of the side left at zero weight along each edge, so the
            interpolated border of the crop is never used.
        feather: Gaussian sigma of the fall-off, as a fraction of the side.
    """
    mask = np.zeros((size, size), np.float32)
    a = int(round(size * (inset + 2 * feather)))
    mask[a : size - a, a : size - a] = 1.0
    sigma = max(size * feather, 1.0)
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, sigmaY=sigma)
    edge = int(round(size * inset))
    mask[:edge, :] = 0
    mask[size - edge :, :] = 0
    mask[:, :edge] = 0
    mask[:, size - edge :] = 0
    mask.setflags(write=False)
    return mask


def _region(alignment: Alignment, height: int, width: int) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1) in the photo of the crop square, clipped."""
    s = alignment.size
    corners = np.array([[0, 0, 1], [s, 0, 1], [0, s, 1], [s, s, 1]], np.float64)
    pts = corners @ alignment.inverse.T
    x0 = max(int(np.floor(pts[:, 0].min())) - 2, 0)
    y0 = max(int(np.floor(pts[:, 1].min())) - 2, 0)
    x1 = min(int(np.ceil(pts[:, 0].max())) + 2, width)
    y1 = min(int(np.ceil(pts[:, 1].max())) + 2, height)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def paste_faces(
    image: np.ndarray,
    crops: Sequence[np.ndarray],
    alignments: Sequence[Alignment],
    *,
    mask: np.ndarray | None = None,
    grain: Grain | None = None,
    grain_amount: float = 1.0,
    seed: int = 0,
) -> np.ndarray:
    """Return a copy of ``image`` with each crop blended back in place.

    Args:
        image: float32 HxWx3 photo in [0, 1], at the output size (already
            upscaled if an upscale factor is used; pass ``alignment.scaled(f)``).
        crops: float32 (S, S, 3) restored crops, one per alignment.
        alignments: where each crop came from.
        mask: optional (S, S) weights replacing :func:`face_mask`.
        grain: the photo's grain (:func:`facefix.faces.grain.estimate_grain`): each
            pasted face gets what it lacks of it, ``grain_amount`` times, under its mask.
        seed: seeds the grain, so the same photo comes out the same.

    Overlapping faces are blended in order, each over the result so far.
    """
    if len(crops) != len(alignments):
        raise ValueError(f"{len(crops)} crops but {len(alignments)} alignments")
    out = np.array(image, dtype=np.float32, copy=True)
    h, w = out.shape[:2]
    for index, (crop, alignment) in enumerate(zip(crops, alignments)):
        region = _region(alignment, h, w)
        if region is None:
            continue
        x0, y0, x1, y1 = region
        m = face_mask(alignment.size) if mask is None else mask
        shifted = alignment.matrix.copy()
        # Map region pixel (u, v) = photo pixel (u + x0, v + y0) into the crop.
        shifted[:, 2] += shifted[:, :2] @ np.array([x0, y0], np.float64)
        flags = cv2.WARP_INVERSE_MAP
        warped = cv2.warpAffine(
            np.asarray(crop, np.float32), shifted, (x1 - x0, y1 - y0),
            flags=cv2.INTER_CUBIC | flags, borderMode=cv2.BORDER_REPLICATE,
        )
        weight = cv2.warpAffine(
            m, shifted, (x1 - x0, y1 - y0),
            flags=cv2.INTER_LINEAR | flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0,
        )
        if warped.ndim == 2:
            warped = warped[:, :, None]
        weight = np.clip(weight, 0.0, 1.0)[:, :, None]
        patch = out[y0:y1, x0:x1]
        out[y0:y1, x0:x1] = patch + (warped - patch) * weight
        if grain is not None and grain.visible and grain_amount > 0:
            sigma = missing_sigma(grain, np.broadcast_to(warped, patch.shape), weight[:, :, 0] > 0.9, grain_amount)
            if sigma.max() > 0:
                noise = make_grain((y1 - y0, x1 - x0), grain, sigma, np.random.default_rng([seed, index]))
                out[y0:y1, x0:x1] += noise * weight
    if grain is not None:
        np.clip(out, 0.0, 1.0, out=out)
    return out
