"""Image-quality and identity metrics: PSNR, SSIM, identity similarity, and two
measures of what people see in a restored face: its sharpness against the
truth's, and whether its expression (mouth, gaze) is the truth's.

Images are float32 RGB in [0, 1], (H, W, 3) or a batch (N, H, W, 3); a batch
gives the mean over images. PSNR is over all RGB values. SSIM is computed on
the BT.601 luma (Y) channel with the usual 11-px Gaussian window (σ 1.5,
K1 0.01, K2 0.03), which is how the face-restoration papers report it; pass
``channel="rgb"`` for the mean over R, G and B instead.

The face measures (:func:`face_sharpness`, :func:`sharpness_ratio`,
:func:`expression_errors`, :func:`expression_error`) take template-aligned
crops of any size and look at them at :data:`ANALYSIS_SIZE` px, so a 512 and a
256 crop of one face give the same numbers. Their regions come from the
*clean* face's 68 landmarks (:func:`facefix.faces.landmarks.aligned_landmarks68`):
on a sharp photo those are reliable; on a degraded or restored face the
predictor leans on its prior, and its 68 points have no iris at all, so
landmarks of the restored face cannot say whether its gaze is right.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from facefix.errors import UsageError


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


# --- what people see: sharpness and expression -------------------------------------------

#: Side (px) at which the face measures look at a crop: ``facefix eval``'s main face size
#: and the scale of enrolment's blur check (:func:`facefix.enroll.select.sharpness`), so a number
#: means the same whatever size the crop has.
ANALYSIS_SIZE = 256

#: The face region of the 512 template when no landmarks are given: an ellipse, centre
#: and semi-axes in template pixels, on the template's midline from above the brows
#: (y 100) to below the chin (y 464). Its IoU with the mean landmark face region
#: (:func:`facefix.faces.landmarks.face_region_mask`) of the seven public sample faces
#: (t1.jpg, astronaut; several turned away) is 0.79. The one definition of the template's
#: face region: the measures here (:func:`template_face_mask`) and the classical restorer's
#: blur estimate (:func:`template_face_region`) both use it.
TEMPLATE_FACE_ELLIPSE_512 = ((256.0, 282.0), (142.0, 182.0))

#: Gaussian sigmas (px at :data:`ANALYSIS_SIZE`) of the band the expression measure
#: compares: below 1.5 px is texture and noise (lashes, pores, grain), above 6 px lighting
#: and skin tone; between lie the iris within the eye's white, the lid line, teeth
#: between the lips, the lips' parting (structures ~4-15 px at 256, an iris is ~12).
EXPRESSION_BAND = (1.5, 6.0)

#: Regions of the expression measure, as multiples of the feature's width (eye corner to
#: corner, mouth corner to corner): semi-axes of an ellipse around the feature's centre.
#: The mouth's reaches below the closed lips so that an opened mouth lies inside it.
EYE_REGION = (0.9, 0.6)
MOUTH_REGION = (0.75, 0.5)

#: Floor (luma levels of 255, RMS) added to the truth's band energy in a region, so a
#: region with next to no structure (a face in deep shadow) does not turn faint noise
#: into a large error.
EXPRESSION_FLOOR = 2.0


def _analysis_luma(img: np.ndarray) -> np.ndarray:
    """Luma (0-255, float64) of one crop at :data:`ANALYSIS_SIZE`: area-averaged when it
    shrinks (as enrolment's blur check), bicubic when it grows (as alignment)."""
    img = np.asarray(img, dtype=np.float32)
    if img.ndim != 3 or img.shape[0] != img.shape[1] or img.shape[2] != 3:
        raise UsageError(f"face measures take square aligned RGB crops, got shape {img.shape}")
    size = img.shape[0]
    if size != ANALYSIS_SIZE:
        interp = cv2.INTER_AREA if size > ANALYSIS_SIZE else cv2.INTER_CUBIC
        img = cv2.resize(img, (ANALYSIS_SIZE, ANALYSIS_SIZE), interpolation=interp)
    return _luma(img.astype(np.float64)) * 255.0


def _analysis_points(points: np.ndarray, size: int) -> np.ndarray:
    """68 landmarks of a ``size``-px crop, in :data:`ANALYSIS_SIZE` pixels."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape != (68, 2):
        raise UsageError(f"expected 68 landmarks (68, 2), got {pts.shape}; use aligned_landmarks68")
    return pts * (ANALYSIS_SIZE / size)


def template_face_mask(size: int = ANALYSIS_SIZE) -> np.ndarray:
    """The fixed face region of the template, scaled to a ``size``-px crop.

    Args:
        size: side of the crop.

    Returns:
        float32 (size, size) soft mask in [0, 1].
    """
    (cx, cy), (ax, ay) = TEMPLATE_FACE_ELLIPSE_512
    k = size / 512.0
    return _soft_ellipse(size, (cx * k, cy * k), (ax * k, ay * k), feather=0.04 * size)


def template_face_region(size: int = ANALYSIS_SIZE) -> np.ndarray:
    """The template's face ellipse (:data:`TEMPLATE_FACE_ELLIPSE_512`) in a ``size``-px crop, hard-edged.

    Returns:
        bool (size, size): True inside the ellipse (:func:`template_face_mask` is its soft-edged form).
    """
    (cx, cy), (ax, ay) = TEMPLATE_FACE_ELLIPSE_512
    k = size / 512.0
    mask = np.zeros((size, size), np.uint8)
    cv2.ellipse(mask, (int(round(cx * k * 16)), int(round(cy * k * 16))),
                (max(1, int(round(ax * k * 16))), max(1, int(round(ay * k * 16)))), 0, 0, 360, 1, -1, cv2.LINE_8, 4)
    return mask.astype(bool)


def _soft_ellipse(size: int, centre, axes, feather: float) -> np.ndarray:
    mask = np.zeros((size, size), np.float32)
    shift = 4  # cv2 draws at 1/16 px with shift 4, so small regions keep their shape
    cv2.ellipse(mask, (int(round(centre[0] * 16)), int(round(centre[1] * 16))),
                (max(1, int(round(axes[0] * 16))), max(1, int(round(axes[1] * 16)))),
                0, 0, 360, 1.0, -1, cv2.LINE_AA, shift)
    return cv2.GaussianBlur(mask, (0, 0), max(0.5, feather))


def _face_mask(points: np.ndarray | None, size: int) -> np.ndarray:
    if points is None:
        return template_face_mask(ANALYSIS_SIZE)
    from facefix.faces.landmarks import face_region_mask

    return face_region_mask(_analysis_points(points, size), ANALYSIS_SIZE)


#: Gaussian sigma (px at :data:`ANALYSIS_SIZE`) applied before the Laplacian. The bare 3x3
#: Laplacian at 256 px is mostly pixel noise: noise of 8/255 reads as 2.6x the clean face's
#: detail energy, JPEG at q60 as 0.66. After a 1-px Gaussian they read 1.13 and 1.00, while
#: a 0.7-px blur still reads 0.62 and a 1.5-px blur 0.24 (six development faces).
SHARPNESS_SIGMA = 1.0


def _laplacian_variance(luma: np.ndarray, mask: np.ndarray) -> float:
    lap = cv2.Laplacian(cv2.GaussianBlur(luma, (0, 0), SHARPNESS_SIGMA), cv2.CV_64F)
    w = mask.astype(np.float64)
    mean = float((w * lap).sum() / w.sum())
    return float((w * (lap - mean) ** 2).sum() / w.sum())


def face_sharpness(img: np.ndarray, points: np.ndarray | None = None) -> float:
    """Detail energy of an aligned face: variance of the Laplacian of its luma inside the face.

    The crop is brought to :data:`ANALYSIS_SIZE` px first (the scale of enrolment's blur
    check, luma on 0-255 as there), so crops of one face at 512 and 256 px agree, and
    smoothed by :data:`SHARPNESS_SIGMA` so that pixel noise and JPEG do not pass for
    detail; the weighted variance is taken inside the face region only, so background
    and hair do not count. A number to compare with the truth's (:func:`sharpness_ratio`).

    Args:
        img: aligned crop (S, S, 3) float RGB in [0, 1], or a batch (N, S, S, 3) (mean).
        points: 68 landmarks of the face in the crop's pixels ((68, 2), or (N, 68, 2)
            for a batch), whose face region is measured; ``None``: the template's
            fixed face region (:func:`template_face_mask`).
    """
    img = np.asarray(img)
    if img.ndim == 4:
        pts = [None] * len(img) if points is None else list(points)
        return float(np.mean([face_sharpness(x, p) for x, p in zip(img, pts)]))
    return _laplacian_variance(_analysis_luma(img), _face_mask(points, img.shape[0]))


def sharpness_ratio(restored: np.ndarray, clean: np.ndarray, points: np.ndarray | None = None) -> float:
    """The restored face's detail energy over the clean face's (1.0: as sharp as the truth).

    Below 1: detail lost (blur, an over-smoothing restorer). Above 1: more fine energy
    than the truth has: noise, JPEG blocks, over-sharpening or invented texture. Both
    faces are measured in the same region.

    Args:
        restored: aligned crop(s), float RGB in [0, 1]; a batch gives the mean ratio.
        clean: the truth, same shape.
        points: the *clean* face's 68 landmarks in the crop's pixels (``None``: the
            template's face region), as for :func:`face_sharpness`.
    """
    restored, clean = _pair(restored, clean)
    if restored.ndim == 4:
        pts = [None] * len(restored) if points is None else list(points)
        return float(np.mean([sharpness_ratio(r, c, p) for r, c, p in zip(restored, clean, pts)]))
    mask = _face_mask(points, clean.shape[0])
    truth = _laplacian_variance(_analysis_luma(clean), mask)
    if truth <= 0.0:
        raise UsageError("the clean face has no detail at all (a flat image); sharpness_ratio needs a real face")
    return _laplacian_variance(_analysis_luma(restored), mask) / truth


def expression_regions(points: np.ndarray, size: int = ANALYSIS_SIZE) -> dict[str, list[np.ndarray]]:
    """Soft masks of the eyes and the mouth, where expression shows, from 68 landmarks.

    Args:
        points: (68, 2) landmarks in a ``size``-px crop (of the clean face: reliable).
        size: side of the crop.

    Returns:
        ``{"eyes": [left, right], "mouth": [mouth]}``, float32 (size, size) masks in [0, 1].
    """
    from facefix.faces.landmarks import LEFT_EYE, OUTER_LIPS, RIGHT_EYE

    pts = np.asarray(points, dtype=np.float64)
    regions: dict[str, list[np.ndarray]] = {"eyes": [], "mouth": []}
    for group, part, shape, feather in (("eyes", LEFT_EYE, EYE_REGION, 0.15), ("eyes", RIGHT_EYE, EYE_REGION, 0.15),
                                        ("mouth", OUTER_LIPS, MOUTH_REGION, 0.1)):
        p = pts[part]
        width = float(np.linalg.norm(p[6 if group == "mouth" else 3] - p[0]))  # corner to corner
        regions[group].append(_soft_ellipse(size, p.mean(axis=0), (shape[0] * width, shape[1] * width),
                                            feather=feather * width))
    return regions


def _band(luma: np.ndarray) -> np.ndarray:
    fine, coarse = EXPRESSION_BAND
    return cv2.GaussianBlur(luma, (0, 0), fine) - cv2.GaussianBlur(luma, (0, 0), coarse)


def expression_errors(restored: np.ndarray, clean: np.ndarray, points: np.ndarray | None = None) -> dict[str, float]:
    """How much of the restored face's eye and mouth structure is not the truth's.

    In each region (both eyes together; the mouth) the two faces' mid-band luma
    (:data:`EXPRESSION_BAND`) is compared: the restored band is split into a multiple
    ``a`` of the truth's band plus a residual that the truth does not explain, and the
    error is that residual's RMS over the truth's. Detail that is merely missing (blur,
    a faint copy of the truth's structure) only lowers ``a`` and costs little; that is
    :func:`sharpness_ratio`'s business. Structure that is there but different -- teeth
    where the lips are closed, an iris where the white was, a lid line moved -- is
    residual, and raises the error. 0 = the truth's structure (at some strength);
    plain degradations score ~0.2-0.4, a pasted mouth or gaze ~0.6-3 (development photos).

    Args:
        restored: aligned crop (S, S, 3) float RGB in [0, 1], or a batch (mean per region).
        clean: the truth, same shape.
        points: the *clean* face's 68 landmarks in the crop's pixels, (68, 2) or
            (N, 68, 2); ``None``: found on ``clean`` with
            :func:`facefix.faces.landmarks.aligned_landmarks68`.

    Returns:
        ``{"eyes": error, "mouth": error}``.
    """
    restored, clean = _pair(restored, clean)
    if points is None:
        from facefix.faces.landmarks import aligned_landmarks68

        points = aligned_landmarks68(clean.astype(np.float32))
        if clean.ndim == 3:
            points = points[0]
    if restored.ndim == 4:
        each = [expression_errors(r, c, p) for r, c, p in zip(restored, clean, points)]
        return {k: float(np.mean([e[k] for e in each])) for k in each[0]}
    truth, guess = _band(_analysis_luma(clean)), _band(_analysis_luma(restored))
    out = {}
    for group, masks in expression_regions(_analysis_points(points, clean.shape[0])).items():
        w = np.sum(masks, axis=0, dtype=np.float64)
        energy = float((w * truth * truth).sum())
        gain = float((w * guess * truth).sum()) / max(energy, 1e-12)
        residual = guess - gain * truth
        out[group] = math.sqrt(float((w * residual * residual).sum()) / (energy + EXPRESSION_FLOOR**2 * float(w.sum())))
    return out


def expression_error(restored: np.ndarray, clean: np.ndarray, points: np.ndarray | None = None) -> float:
    """Expression fidelity as one error: the worse of the eyes and the mouth (lower = truer).

    The worse region, not the mean, so that a pasted mouth is not halved by right eyes.
    See :func:`expression_errors` for the arguments and the measure.
    """
    restored, clean = _pair(restored, clean)
    if restored.ndim == 4:
        pts = [None] * len(restored) if points is None else list(points)
        return float(np.mean([expression_error(r, c, p) for r, c, p in zip(restored, clean, pts)]))
    return max(expression_errors(restored, clean, points).values())
