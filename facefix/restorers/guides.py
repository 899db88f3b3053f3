"""A person's references as guides: chosen by pose and expression, warped onto a face.

Used by :mod:`facefix.restorers.reference` at restore time. Everything works on
template-aligned crops, so pose differences are small and a landmark warp plus
a dense optical-flow correction brings a reference onto the face:

1. :func:`expression_features` -- mouth and eye openness, gaze and head turn
   from 68 landmarks, in units of the face's own size;
2. :func:`rank_guides` -- references ordered by how close their landmarks
   and expression are to the face's;
3. :func:`landmark_map` and :func:`warp_guide` -- thin-plate spline from the reference's landmarks to
   the face's, then DIS optical flow between blurred, contrast-normalised
   brightness images, composed into one remap.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import cv2
import numpy as np

from facefix.faces.landmarks import INNER_LIPS, LEFT_EYE, RIGHT_EYE, aligned_landmarks68
from facefix.quality.degrade import to_luma


@dataclass(frozen=True, eq=False)
class GuideSet:
    """A person's aligned references with what is needed to use them as guides.

    Args:
        crops: uint8 (N, 512, 512, 3) aligned references.
        points: float32 (N, 68, 2) their landmarks.
        name: whose references they are (for labels).
    """

    crops: np.ndarray = field(repr=False)
    points: np.ndarray = field(repr=False)
    name: str = ""

    @classmethod
    def from_crops(cls, crops: np.ndarray, name: str = "") -> "GuideSet":
        crops = np.asarray(crops, np.uint8)
        return cls(crops, aligned_landmarks68(crops) if len(crops) else np.zeros((0, 68, 2), np.float32), name)

    def __len__(self) -> int:
        return len(self.crops)


def _ratio(points: np.ndarray, top: int, bottom: int, left: int, right: int) -> float:
    return float(np.linalg.norm(points[top] - points[bottom]) / (np.linalg.norm(points[left] - points[right]) + 1e-6))


def expression_features(points: np.ndarray) -> np.ndarray:
    """Mouth opening, eye openness (both), mouth width and head turn, size-free.

    Args:
        points: (68, 2) landmarks.

    Returns:
        float32 vector of 5 features.
    """
    p = np.asarray(points, np.float32)
    scale = np.linalg.norm(p[LEFT_EYE].mean(0) - p[RIGHT_EYE].mean(0)) + 1e-6
    mouth_open = np.linalg.norm(p[INNER_LIPS][[1, 2, 3]].mean(0) - p[INNER_LIPS][[7, 6, 5]].mean(0)) / scale
    eye_l = (_ratio(p, 37, 41, 36, 39) + _ratio(p, 38, 40, 36, 39)) / 2
    eye_r = (_ratio(p, 43, 47, 42, 45) + _ratio(p, 44, 46, 42, 45)) / 2
    mouth_w = np.linalg.norm(p[48] - p[54]) / scale
    # nose tip's offset from the eyes' midpoint: the head's turn
    turn = (p[30, 0] - (p[39, 0] + p[42, 0]) / 2) / scale
    return np.array([mouth_open, eye_l, eye_r, mouth_w, turn], np.float32)


#: Weights of :func:`expression_features` in the guide distance: mouth opening
#: matters most (teeth pasted into closed lips is the worst failure).
FEATURE_WEIGHTS = np.array([3.0, 1.5, 1.5, 1.0, 1.0], np.float32)


def landmark_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean distance between two landmark sets after a similarity fit, over the eye-mouth span."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    m, _ = cv2.estimateAffinePartial2D(a, b)
    fitted = a @ m[:, :2].T + m[:, 2]
    span = np.linalg.norm(b[LEFT_EYE].mean(0) - b[INNER_LIPS].mean(0)) + 1e-6
    return float(np.mean(np.linalg.norm(fitted - b, axis=1)) / span)


def rank_guides(points: np.ndarray, guides: GuideSet) -> tuple[np.ndarray, np.ndarray]:
    """Order references by pose and expression distance to a face.

    Args:
        points: (68, 2) landmarks of the face.
        guides: the references.

    Returns:
        ``(order, distance)``: indices of the references, best first, and their distances.
    """
    mine = expression_features(points)
    dist = np.array([
        landmark_distance(q, points) * 4.0 + float(np.sum(FEATURE_WEIGHTS * np.abs(expression_features(q) - mine)))
        for q in guides.points
    ], np.float32)
    order = np.argsort(dist, kind="stable")
    return order, dist[order]


# --------------------------------------------------------------------------- warping


def landmark_map(src: np.ndarray, dst: np.ndarray, size: int, grid: int = 64, reg: float = 1e-3) -> np.ndarray:
    """Backward map (size, size, 2) sending each face pixel to where it lies in the reference.

    A thin-plate spline fitted from the face's points (dst) to the reference's
    points (src), evaluated on a coarse grid and resized (it is smooth).
    """
    # Anchor the border so the spline does not swing the background around.
    edge = np.linspace(0, size - 1, 5)
    border = np.array([(x, y) for x in edge for y in (0, size - 1)] + [(x, y) for y in edge[1:-1] for x in (0, size - 1)],
                      np.float64)
    d = np.concatenate([np.asarray(dst, np.float64), border]) / size
    s = np.concatenate([np.asarray(src, np.float64), border]) / size
    n = len(d)

    def kernel(r2):
        return np.where(r2 > 0, r2 * np.log(np.maximum(r2, 1e-12)), 0.0)

    r2 = np.sum((d[:, None] - d[None]) ** 2, -1)
    k = kernel(r2) + reg * np.eye(n)
    p = np.concatenate([np.ones((n, 1)), d], 1)
    a = np.zeros((n + 3, n + 3))
    a[:n, :n], a[:n, n:], a[n:, :n] = k, p, p.T
    rhs = np.zeros((n + 3, 2))
    rhs[:n] = s
    coef = np.linalg.solve(a, rhs)
    g = np.linspace(0, 1, grid) * (size - 1) / size
    gx, gy = np.meshgrid(g, g)
    q = np.stack([gx.ravel(), gy.ravel()], 1)
    u = kernel(np.sum((q[:, None] - d[None]) ** 2, -1))
    out = u @ coef[:n] + np.concatenate([np.ones((len(q), 1)), q], 1) @ coef[n:]
    coarse = (out * size).reshape(grid, grid, 2).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_LINEAR)


def _normalised(y: np.ndarray, sigma: float) -> np.ndarray:
    """Blurred brightness with local mean and contrast removed (flow sees shape, not lighting)."""
    b = cv2.GaussianBlur(y, (0, 0), sigma)
    mu = cv2.GaussianBlur(b, (0, 0), 8 * sigma)
    sd = np.sqrt(np.maximum(cv2.GaussianBlur((b - mu) ** 2, (0, 0), 8 * sigma), 1e-6))
    z = (b - mu) / (sd + 0.02)
    return np.clip(z * 40 + 128, 0, 255).astype(np.uint8)


class _PerThread(threading.local):
    def __init__(self) -> None:
        self.flow = None  # made on first use in each thread


_LOCAL = _PerThread()


def _flow_engine():
    """This thread's DIS optical flow: an OpenCV algorithm object keeps its buffers between
    calls, so two restore workers (``--devices cpu,cpu``) must not share one (it crashed)."""
    if _LOCAL.flow is None:
        _LOCAL.flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return _LOCAL.flow


def warp_guide(guide: np.ndarray, base: np.ndarray, face_luma: np.ndarray,
               *, blur: float, flow: bool = True, max_shift: float = 0.025) -> np.ndarray:
    """Warp one reference onto a face.

    Args:
        guide: float32 (S, S, 3) reference crop.
        base: the landmark warp from the face to the reference, :func:`landmark_map` of
            their (68, 2) landmarks (made once per reference and face, used for both the
            rough and the refined warp).
        face_luma: float32 (S, S) brightness of the (pre-cleaned) face.
        blur: the face's blur (Gaussian sigma in S-px): the flow is computed at that scale, and
            smoothed over a few times it, since finer misalignments cannot be seen in the face.
        flow: refine the landmark warp with optical flow.
        max_shift: the flow's correction is clipped to this share of S (it only fixes what the
            landmarks missed; a larger move is a mismatch, not a misalignment).

    Returns:
        float32 (S, S, 3) the reference warped onto the face.
    """
    size = guide.shape[0]
    warped = cv2.remap(guide, base[..., 0], base[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if not flow:
        return warped
    # work where the face's blur is ~1.5 px: finer than that the face holds nothing to align to
    work = int(np.clip(round(size * 1.5 / max(blur, 1.0) / 8) * 8, 64, 256))
    k = work / size
    sigma = 1.0
    small_face = cv2.resize(face_luma, (work, work), interpolation=cv2.INTER_AREA)
    small_guide = cv2.resize(to_luma(warped), (work, work), interpolation=cv2.INTER_AREA)
    field = _flow_engine().calc(_normalised(small_face, sigma), _normalised(small_guide, sigma), None)
    field = cv2.GaussianBlur(field, (0, 0), 3.0)
    limit = max_shift * work
    mag = np.sqrt(np.sum(field ** 2, -1, keepdims=True))
    field = field * np.minimum(1.0, limit / (mag + 1e-6))
    field = cv2.resize(field, (size, size), interpolation=cv2.INTER_LINEAR) / k
    # compose: face pixel p -> p + flow(p) in the TPS-warped guide -> base map there
    gx, gy = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    fx, fy = gx + field[..., 0], gy + field[..., 1]
    mx = cv2.remap(base[..., 0], fx, fy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    my = cv2.remap(base[..., 1], fx, fy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.remap(guide, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

