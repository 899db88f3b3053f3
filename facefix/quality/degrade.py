"""The synthetic degradation model: clean faces in, realistic bad copies out.

    y = JPEG_q( (x ⊛ k_σ)↓r + n_δ )↑r

with a 41-px isotropic or anisotropic Gaussian kernel ``k_σ``, a downscale by
``r``, Gaussian noise of standard deviation ``δ`` (of 255) and JPEG at quality
``q``, then back up to the input size. This is the GFPGAN / DiffBIR face recipe
that Dual-Pivot stage 2 trains with; the fast restorer, diffusion stage 2 and
album adaptation all draw their training pairs here, and ``facefix eval``
degrades held-out faces with :func:`degrade_level`.

Everything works on float32 ``(H, W, 3)`` RGB arrays in [0, 1] (a batch
``(N, H, W, 3)`` is degraded image by image) and is deterministic given a
:class:`numpy.random.Generator` or a seed. Nothing here knows about networks.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from facefix.errors import UsageError

logger = logging.getLogger(__name__)

KERNEL_SIZE = 41


@dataclass(frozen=True)
class DegradationRecipe:
    """Ranges a random degradation is drawn from (uniformly within each range).

    Args:
        sigma: Blur standard deviation range, in pixels of the input.
        scale: Downscale factor range ``r`` (0.8 means a slight upscale).
        noise: Gaussian noise standard deviation range, in units of 1/255.
        jpeg: JPEG quality range.
        anisotropic_prob: Chance the kernel is anisotropic (two sigmas, rotated).
        kernel_size: Side of the blur kernel in pixels (odd).
        log_scale: Draw ``r`` log-uniformly (each doubling equally likely) instead of uniformly.
    """

    sigma: tuple[float, float] = (0.1, 10.0)
    scale: tuple[float, float] = (0.8, 8.0)
    noise: tuple[float, float] = (0.0, 20.0)
    jpeg: tuple[int, int] = (60, 100)
    anisotropic_prob: float = 0.5
    kernel_size: int = KERNEL_SIZE
    log_scale: bool = False


#: Named recipes (FIELD.md's table). "default" is the GFPGAN/DiffBIR face recipe.
RECIPES: dict[str, DegradationRecipe] = {
    "default": DegradationRecipe(),
    "codeformer": DegradationRecipe(scale=(1.0, 12.0), noise=(0.0, 15.0)),
    "kuai": DegradationRecipe(sigma=(0.1, 15.0), scale=(0.8, 32.0), jpeg=(30, 100)),
}


@dataclass(frozen=True)
class Degradation:
    """One concrete degradation (what :func:`sample_degradation` draws).

    Args:
        sigma_x: Blur sigma along the kernel's first axis (pixels).
        sigma_y: Blur sigma along the second axis (equal to ``sigma_x`` when isotropic).
        theta: Rotation of the kernel in radians.
        scale: Downscale factor.
        noise: Noise standard deviation in 1/255 units.
        jpeg: JPEG quality, or ``None`` for no compression.
    """

    sigma_x: float
    sigma_y: float
    theta: float
    scale: float
    noise: float
    jpeg: int | None


@dataclass(frozen=True)
class Level:
    """A fixed evaluation level (isotropic blur)."""

    sigma: float
    scale: float
    noise: float
    jpeg: int


#: Evaluation levels used by ``facefix eval`` and the benchmarks.
LEVELS: dict[str, Level] = {
    "moderate": Level(sigma=3.0, scale=4.0, noise=8.0, jpeg=60),
    "severe": Level(sigma=6.0, scale=8.0, noise=12.0, jpeg=40),
}


def get_recipe(name: str) -> DegradationRecipe:
    """Look up a named recipe ("default", "codeformer", "kuai")."""
    try:
        return RECIPES[name]
    except KeyError:
        raise UsageError(
            f"unknown degradation recipe {name!r}; choose one of {', '.join(sorted(RECIPES))}"
        ) from None


def gaussian_kernel(
    sigma_x: float, sigma_y: float | None = None, theta: float = 0.0, size: int = KERNEL_SIZE
) -> np.ndarray:
    """A normalised (size, size) Gaussian kernel, anisotropic when ``sigma_y`` differs.

    Args:
        sigma_x: Standard deviation along the first principal axis.
        sigma_y: Along the second axis; ``None`` means isotropic.
        theta: Rotation of the principal axes in radians.
        size: Odd kernel side.
    """
    if size % 2 != 1:
        raise UsageError(f"kernel size must be odd, got {size}; use e.g. {size + 1}")
    sigma_y = sigma_x if sigma_y is None else sigma_y
    half = size // 2
    ax = np.arange(-half, half + 1, dtype=np.float64)
    xx, yy = np.meshgrid(ax, ax)
    c, s = math.cos(theta), math.sin(theta)
    u = c * xx + s * yy
    v = -s * xx + c * yy
    k = np.exp(-0.5 * ((u / max(sigma_x, 1e-3)) ** 2 + (v / max(sigma_y, 1e-3)) ** 2))
    return (k / k.sum()).astype(np.float32)


def sample_degradation(recipe: DegradationRecipe, rng: np.random.Generator) -> Degradation:
    """Draw one degradation from ``recipe``."""
    lo, hi = recipe.sigma
    sx = float(rng.uniform(lo, hi))
    if rng.random() < recipe.anisotropic_prob:
        sy = float(rng.uniform(lo, hi))
        theta = float(rng.uniform(0.0, math.pi))
    else:
        sy, theta = sx, 0.0
    if recipe.log_scale:
        scale = float(np.exp(rng.uniform(*np.log(recipe.scale))))
    else:
        scale = float(rng.uniform(*recipe.scale))
    noise = float(rng.uniform(*recipe.noise))
    jpeg = int(rng.integers(recipe.jpeg[0], recipe.jpeg[1] + 1))
    return Degradation(sx, sy, theta, scale, noise, jpeg)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    u8 = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", u8[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - cv2 always encodes a valid uint8 image
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0


def apply_degradation(
    img: np.ndarray, deg: Degradation, rng: np.random.Generator, *, kernel_size: int = KERNEL_SIZE
) -> np.ndarray:
    """Apply one concrete degradation to a float32 (H, W, 3) image in [0, 1].

    Args:
        img: Clean image.
        deg: What to do (blur, downscale, noise, JPEG).
        rng: Source of the noise.
        kernel_size: Blur kernel side.

    Returns:
        The degraded image, same shape, float32 in [0, 1].
    """
    img = np.ascontiguousarray(img, dtype=np.float32)
    h, w = img.shape[:2]
    k = gaussian_kernel(deg.sigma_x, deg.sigma_y, deg.theta, kernel_size)
    x = cv2.filter2D(img, -1, k, borderType=cv2.BORDER_REFLECT_101)
    sh, sw = max(1, round(h / deg.scale)), max(1, round(w / deg.scale))
    if (sh, sw) != (h, w):
        # INTER_LINEAR after the blur: the kernel has already band-limited it.
        x = cv2.resize(x, (sw, sh), interpolation=cv2.INTER_LINEAR)
    if deg.noise > 0:
        x = x + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(deg.noise / 255.0)
    x = np.clip(x, 0.0, 1.0)
    if deg.jpeg is not None:
        x = _jpeg(x, deg.jpeg)
    if (sh, sw) != (h, w):
        x = cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def degrade_enlarged(
    img: np.ndarray,
    deg: Degradation,
    rng: np.random.Generator,
    enlarge: float,
    *,
    kernel_size: int = KERNEL_SIZE,
    max_scale: float = 16.0,
    max_sigma: float = 16.0,
) -> np.ndarray:
    """Degrade a face the way a small face in a photo reaches the 512 template.

    The face is area-shrunk by ``enlarge`` (its size in the photo), degraded there
    with ``deg`` (in the photo's pixels: its noise and JPEG blocks get enlarged
    too), then enlarged back bicubically, as the alignment warp does. ``deg`` is
    capped so that the whole loss of detail stays within ``max_scale`` (downscale)
    and ``max_sigma`` (blur) in template pixels. ``enlarge`` ≤ 1 is
    :func:`apply_degradation` itself. Same shape back, float32 in [0, 1].
    """
    h, w = img.shape[:2]
    sh, sw = max(8, round(h / enlarge)), max(8, round(w / enlarge))
    e = h / sh
    if e <= 1.0:
        return apply_degradation(img, deg, rng, kernel_size=kernel_size)
    deg = replace(
        deg,
        scale=min(deg.scale, max(1.0, max_scale / e)),
        sigma_x=min(deg.sigma_x, max_sigma / e),
        sigma_y=min(deg.sigma_y, max_sigma / e),
    )
    small = resize_like_alignment(img, sw, sh)
    return resize_like_alignment(apply_degradation(small, deg, rng, kernel_size=kernel_size), w, h)


def resize_like_alignment(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resample a float (H, W, 3) face the way a face reaches, or leaves, the template:
    area-averaged when it shrinks, bicubic (as the alignment warp) when it grows.
    float32, clipped to [0, 1]; the same array back when the size already matches."""
    h, w = img.shape[:2]
    if (w, h) == (width, height):
        return img
    interp = cv2.INTER_AREA if width * height < w * h else cv2.INTER_CUBIC
    out = cv2.resize(np.ascontiguousarray(img, dtype=np.float32), (width, height), interpolation=interp)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def degrade(
    img: np.ndarray,
    rng: np.random.Generator | int | None = None,
    recipe: DegradationRecipe | str = "default",
) -> np.ndarray:
    """Degrade an image (or a batch, each with its own draw) with a random recipe draw.

    Args:
        img: float32 (H, W, 3) or (N, H, W, 3) in [0, 1].
        rng: Generator or seed; the same seed gives the same result.
        recipe: A :class:`DegradationRecipe` or the name of one in :data:`RECIPES`.
    """
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    rng = _as_rng(rng)
    if img.ndim == 4:
        return np.stack([degrade(im, rng, recipe) for im in img])
    _check_image(img)
    deg = sample_degradation(recipe, rng)
    return apply_degradation(img, deg, rng, kernel_size=recipe.kernel_size)


def degrade_fixed(
    img: np.ndarray,
    sigma: float,
    scale: float,
    noise: float,
    jpeg: int | None,
    seed: int = 0,
) -> np.ndarray:
    """Degrade with fixed settings (isotropic blur), for evaluation.

    Args:
        img: float32 (H, W, 3) or (N, H, W, 3) in [0, 1].
        sigma: Blur sigma in pixels.
        scale: Downscale factor.
        noise: Noise standard deviation in 1/255 units.
        jpeg: JPEG quality, or ``None`` to skip compression.
        seed: Noise seed (a batch uses one generator in order).
    """
    rng = np.random.default_rng(seed)
    deg = Degradation(sigma, sigma, 0.0, scale, noise, jpeg)
    if img.ndim == 4:
        return np.stack([apply_degradation(im, deg, rng) for im in img])
    _check_image(img)
    return apply_degradation(img, deg, rng)


def degrade_level(img: np.ndarray, level: str, seed: int = 0) -> np.ndarray:
    """Degrade at a named evaluation level ("moderate" or "severe")."""
    try:
        lv = LEVELS[level]
    except KeyError:
        raise UsageError(
            f"unknown degradation level {level!r}; choose one of {', '.join(LEVELS)}"
        ) from None
    return degrade_fixed(img, lv.sigma, lv.scale, lv.noise, lv.jpeg, seed)


# ----------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class Augmentation:
    """Random changes to a clean training face, before it is degraded.

    Applied to the target; the degraded input is then made from the augmented
    target, so both always agree.

    Args:
        flip_prob: Chance of a horizontal flip (faces are roughly symmetric).
        shift: Largest shift as a fraction of the side.
        scale: Range of zoom factors.
        rotate: Largest rotation in degrees.
        brightness: Largest multiplicative brightness change (0.1 = ±10 %).
        contrast: Largest contrast change around the mean.
        saturation: Largest saturation change.
        hue: Largest per-channel gain tilt (a cheap hue/white-balance jitter).
        gray_prob: Chance the face is turned grayscale (three equal channels).
    """

    flip_prob: float = 0.5
    shift: float = 0.03
    scale: tuple[float, float] = (0.95, 1.05)
    rotate: float = 3.0
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.15
    hue: float = 0.04
    gray_prob: float = 0.1


def augment(
    img: np.ndarray,
    rng: np.random.Generator | int | None = None,
    aug: Augmentation = Augmentation(),
    *,
    out_size: int | None = None,
    crop: int | None = None,
    with_box: bool = False,
) -> np.ndarray | tuple[np.ndarray, tuple[float, float, float, float]]:
    """Randomly flip, shift, zoom, rotate, colour-jitter and maybe gray a clean face.

    Args:
        img: float32 (H, W, 3) in [0, 1], or uint8 (warped first, then scaled to [0, 1]).
        rng: Generator or seed.
        aug: The ranges.
        out_size: Resample to this square side in the same warp (``None`` keeps the size).
        crop: Return only a random ``crop`` x ``crop`` window of the result, warped
            directly (cheaper than warping everything and cutting afterwards).
        with_box: Also return where the window lies in the (augmented) face:
            (x0, y0, x1, y1) as fractions of its width and height.

    Returns:
        float32 (out_size, out_size, 3) in [0, 1], or (crop, crop, 3); with
        ``with_box``, the pair (image, box).
    """
    _check_image(img)
    rng = _as_rng(rng)
    h, w = img.shape[:2]
    oh = ow = out_size if out_size else None
    oh, ow = (oh or h), (ow or w)
    zoom = float(rng.uniform(*aug.scale))
    angle = float(rng.uniform(-aug.rotate, aug.rotate))
    tx, ty = (rng.uniform(-aug.shift, aug.shift, size=2) * np.array([w, h])).tolist()
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, zoom)
    m[:, 2] += (tx, ty)
    if rng.random() < aug.flip_prob:
        flip = np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        m = m @ flip
    m = np.diag([ow / w, oh / h]) @ m  # then resample to the output size
    box = (0.0, 0.0, 1.0, 1.0)
    if crop is not None:
        if crop > min(oh, ow):
            raise UsageError(f"crop size {crop} is larger than the image {ow}x{oh}; use at most {min(oh, ow)}")
        y0, x0 = int(rng.integers(0, oh - crop + 1)), int(rng.integers(0, ow - crop + 1))
        m[:, 2] -= (x0, y0)
        box = (x0 / ow, y0 / oh, (x0 + crop) / ow, (y0 + crop) / oh)
        oh = ow = crop
    interp = cv2.INTER_AREA if (out_size or w) < w else cv2.INTER_LINEAR
    x = cv2.warpAffine(img, m, (ow, oh), flags=interp, borderMode=cv2.BORDER_REFLECT_101)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(255.0)
    # Colour jitter: gains per channel, brightness, contrast, saturation.
    gains = 1.0 + rng.uniform(-aug.hue, aug.hue, size=3)
    x = x * gains.astype(np.float32) * np.float32(1.0 + rng.uniform(-aug.brightness, aug.brightness))
    mean = x.mean()
    x = (x - mean) * np.float32(1.0 + rng.uniform(-aug.contrast, aug.contrast)) + mean
    gray = x.mean(axis=2, keepdims=True)
    x = gray + (x - gray) * np.float32(1.0 + rng.uniform(-aug.saturation, aug.saturation))
    if rng.random() < aug.gray_prob:
        x = np.repeat(to_luma(x)[..., None], 3, axis=2)
    x = np.clip(x, 0.0, 1.0).astype(np.float32)
    return (x, box) if with_box else x


def random_crop(
    img: np.ndarray, size: int, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """A random ``size`` x ``size`` window (pixel scale unchanged)."""
    rng = _as_rng(rng)
    h, w = img.shape[:2]
    if size > min(h, w):
        raise UsageError(f"crop size {size} is larger than the image {w}x{h}; use at most {min(h, w)}")
    y0 = int(rng.integers(0, h - size + 1))
    x0 = int(rng.integers(0, w - size + 1))
    return img[y0 : y0 + size, x0 : x0 + size]


def to_luma(img: np.ndarray) -> np.ndarray:
    """BT.601 luma of RGB in [0, 1] (the Y that JPEG and SSIM papers use)."""
    return (img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114).astype(np.float32)


def is_grayscale(img: np.ndarray, tol: float = 2.0 / 255.0) -> bool:
    """True when the three channels agree to within ``tol`` on average."""
    return bool(np.abs(img[..., 0] - img[..., 1]).mean() < tol and np.abs(img[..., 1] - img[..., 2]).mean() < tol)


def _check_image(img: np.ndarray) -> None:
    if img.ndim != 3 or img.shape[-1] != 3:
        raise UsageError(f"expected an image of shape (H, W, 3), got {img.shape}")
