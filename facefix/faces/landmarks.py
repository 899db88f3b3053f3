"""68-point landmarks of template-aligned face crops (dlib's shape predictor).

In a crop aligned to the 512 five-point template the face sits in a known box,
so no detector runs: the predictor is started from that box (the same one
:meth:`facefix.faces.dlib_backend.DlibAnalyzer.embed_aligned` uses). On a
heavily degraded crop the predictor leans on its prior and its points move
little, so callers that need expression (mouth open, gaze) should not trust
them alone on blurred inputs.

Point groups (dlib's iBUG 300-W order): jaw 0-16, brows 17-26, nose 27-35,
eyes 36-41 / 42-47, outer lips 48-59, inner lips 60-67.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from facefix.errors import FaceError
from facefix.faces.dlib_backend import PREDICTOR, models_dir

#: The face box of the 512 template, (left, top, right, bottom).
TEMPLATE_BOX_512 = (95, 130, 405, 439)

JAW = slice(0, 17)
BROWS = slice(17, 27)
NOSE = slice(27, 36)
LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)
OUTER_LIPS = slice(48, 60)
INNER_LIPS = slice(60, 68)


class _PerThread(threading.local):
    def __init__(self) -> None:
        self.predictor = None  # made on first use in each thread


_LOCAL = _PerThread()


def _predictor():
    """This thread's predictor: folder runs restore on several threads, and one shared
    native predictor is not something to call from two of them at once."""
    if _LOCAL.predictor is None:
        import dlib

        folder = models_dir()
        if folder is None or not (folder / PREDICTOR).is_file():
            raise FaceError(f"dlib's {PREDICTOR} is missing; fix: pip install face-recognition-models")
        _LOCAL.predictor = dlib.shape_predictor(str(folder / PREDICTOR))
    return _LOCAL.predictor


def aligned_landmarks68(crops: np.ndarray) -> np.ndarray:
    """68 landmarks of each aligned crop, in that crop's pixel coordinates.

    Args:
        crops: (N, S, S, 3) aligned crops, uint8 or float in [0, 1]; any size S
            (the template box is scaled to it).

    Returns:
        float32 (N, 68, 2) array of (x, y).
    """
    import dlib

    crops = np.asarray(crops)
    if crops.ndim == 3:
        crops = crops[None]
    if crops.dtype != np.uint8:
        crops = np.clip(crops * 255.0 + 0.5, 0, 255).astype(np.uint8)
    size = crops.shape[1]
    k = size / 512.0
    rect = dlib.rectangle(*(int(round(v * k)) for v in TEMPLATE_BOX_512))
    predictor = _predictor()
    out = np.zeros((len(crops), 68, 2), np.float32)
    for i, crop in enumerate(crops):
        shape = predictor(np.ascontiguousarray(crop), rect)
        out[i] = [(shape.part(j).x, shape.part(j).y) for j in range(68)]
    return out


def face_region_mask(points: np.ndarray, size: int, *, forehead: float = 0.35, feather: float = 0.04,
                     grow: float = 1.0) -> np.ndarray:
    """A soft mask of the face: the hull of the 68 points, raised to cover the forehead.

    Args:
        points: (68, 2) landmarks in a ``size``-px crop.
        size: side of the crop.
        forehead: how far above the brows the region reaches, as a share of
            the brow-to-chin height.
        feather: Gaussian fall-off width as a share of ``size``.
        grow: scale of the region about its centre (above 1: hair, ears and the head's
            outline too).

    Returns:
        float32 (size, size) mask in [0, 1].
    """
    pts = np.asarray(points, np.float32)
    height = pts[8, 1] - pts[BROWS, 1].min()
    brows = pts[BROWS].copy()
    brows[:, 1] -= forehead * height
    outline = np.concatenate([pts[JAW], brows])
    centre = outline.mean(0)
    outline = centre + (outline - centre) * grow
    hull = cv2.convexHull(outline.astype(np.float32))
    mask = np.zeros((size, size), np.float32)
    cv2.fillConvexPoly(mask, np.round(hull).astype(np.int32), 1.0, lineType=cv2.LINE_AA)
    sigma = max(0.5, feather * size)
    return cv2.GaussianBlur(mask, (0, 0), sigma)


def feature_masks(points: np.ndarray, size: int) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """Soft masks of each eye and of the mouth (each feature's hull, grown by half its width)."""

    def grown(group_points: np.ndarray) -> np.ndarray:
        mask = np.zeros((size, size), np.float32)
        centre = group_points.mean(0)
        width = np.ptp(group_points[:, 0]) + 1e-3
        pts = group_points + np.sign(group_points - centre) * 0.25 * width
        cv2.fillConvexPoly(mask, np.round(cv2.convexHull(pts.astype(np.float32))).astype(np.int32), 1.0)
        return cv2.GaussianBlur(mask, (0, 0), max(0.5, 0.15 * width))

    p = np.asarray(points, np.float32)
    return (grown(p[LEFT_EYE]), grown(p[RIGHT_EYE])), grown(p[OUTER_LIPS])
