"""A restorer without weights: denoise, remove JPEG blocks, deblur — and nothing more.

It is what restores a face when no generic model has been trained yet (a
fresh install) and what a person without a model falls back to. It only
undoes what the degradation did to the pixels that are there: it never paints
detail in, so it cannot give a face someone else's features.

For each aligned crop (float32 RGB in [0, 1]):

1. **How blurred is it?** The reblur ratio: at the strongest edges of the face,
   an edge blurred with σ keeps ``σ / sqrt(σ² + b²)`` of its gradient when it
   is blurred again with a known ``b``, so σ follows from that ratio.
2. **Work where the detail is.** A face blurred with σ px holds no detail finer
   than ~σ px, so it is area-shrunk by ``σ / detail_px`` (at most
   ``max_shrink``). There the noise and the JPEG blocks that the alignment warp
   enlarged are fine-grained again, which is what non-local means can remove,
   and the filter runs on a sixteenth of the pixels.
3. **Denoise.** Donoho's robust noise estimate (median absolute value of the
   finest diagonal Haar band of luma / 0.6745) sets the strength of
   :func:`cv2.fastNlMeansDenoisingColored` (chroma, which JPEG subsamples,
   a little stronger).
4. **Deblur, guarded.** Back at full size, a few Richardson–Lucy iterations on
   luma with a Gaussian PSF of the re-measured width (a share of it: the
   estimate includes the face's own softness), then every pixel is held within
   the local minimum and maximum of its neighbourhood (plus a small margin), so
   no edge gets a halo or ringing. Only luma changes, by the same amount in R,
   G and B: colours keep their hue and a gray face stays gray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from facefix.quality.degrade import to_luma
from facefix.quality.metrics import template_face_region
from facefix.restorers.base import check_crops

#: Name shown to users and in reports.
NAME = "classical/generic"


@dataclass(frozen=True)
class ClassicalConfig:
    """Settings of :class:`ClassicalRestorer` (tuned on aligned faces; see benchmarks/bench_generic.py).

    Args:
        probe_sigma: σ (px) of the known reblur that measures the blur.
        edge_percentile: edges at or above this percentile of gradient strength are measured.
        detail_px: finest detail, in px of the working size, that a crop is shrunk to keep.
        max_shrink: largest shrink factor before denoising.
        nlm_luma: non-local means strength ``h`` per unit of the estimated noise σ (both in 1/255).
        nlm_chroma: the same for chroma.
        nlm_floor: smallest ``h`` (1/255), for the residue of JPEG on nearly noise-free faces.
        rl_share: share of the measured blur σ that Richardson–Lucy undoes.
        rl_min_sigma: below this PSF σ (px) the crop is left unsharpened (already sharp).
        rl_iterations: Richardson–Lucy iterations.
        clamp_radius: radius (px, per px of PSF σ) of the neighbourhood whose min/max bound each pixel.
        clamp_margin: how far (in 1/255) a pixel may go beyond that bound.
    """

    probe_sigma: float = 3.0
    edge_percentile: float = 98.0
    detail_px: float = 1.5
    max_shrink: float = 4.0
    nlm_luma: float = 1.0
    nlm_chroma: float = 1.3
    nlm_floor: float = 3.0
    rl_share: float = 1.1
    rl_min_sigma: float = 0.8
    rl_iterations: int = 8
    clamp_radius: float = 0.5
    clamp_margin: float = 2.0


def _gradient(y: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(y, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(y, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    return np.sqrt(gx * gx + gy * gy)


def estimate_blur(luma: np.ndarray, *, probe_sigma: float = 3.0, percentile: float = 98.0) -> float:
    """Width σ (px) of the blur of a face's luma, from how much its strongest edges lose when reblurred.

    Args:
        luma: float32 (H, W) in [0, 1], an aligned face.
        probe_sigma: σ of the known reblur.
        percentile: only gradients at or above this percentile inside the face count.

    Returns:
        The estimated σ; ~0.9 for a sharp 512-px face, 0 for a flat one.
    """
    y = np.ascontiguousarray(luma, dtype=np.float32)
    g = _gradient(y)
    gb = _gradient(cv2.GaussianBlur(y, (0, 0), probe_sigma, borderType=cv2.BORDER_REFLECT_101))
    # The face's part of an aligned crop: the template's face ellipse, brows to chin.
    inside = template_face_region(y.shape[0]) if y.shape[0] == y.shape[1] else np.ones(y.shape, bool)
    values = g[inside]
    threshold = np.percentile(values, percentile)
    if threshold <= 1e-4:  # a flat crop has no edge to measure
        return 0.0
    chosen = inside & (g >= threshold)
    ratio = float(np.median(gb[chosen] / g[chosen]))
    ratio = min(ratio, 0.995)  # the ratio tends to 1 as σ grows without bound
    return probe_sigma * ratio / math.sqrt(1.0 - ratio * ratio)


def estimate_noise(luma: np.ndarray) -> float:
    """Donoho's robust noise σ (in [0, 1] units) from the finest diagonal Haar band of ``luma``."""
    h, w = (luma.shape[0] // 2) * 2, (luma.shape[1] // 2) * 2
    y = luma[:h, :w].astype(np.float32)
    hh = (y[0::2, 0::2] - y[0::2, 1::2] - y[1::2, 0::2] + y[1::2, 1::2]) / 2.0
    return float(np.median(np.abs(hh)) / 0.6745)


def richardson_lucy(y: np.ndarray, sigma: float, iterations: int) -> np.ndarray:
    """Richardson–Lucy deconvolution of ``y`` (float32, > 0) with a Gaussian PSF of ``sigma`` px."""
    estimate = y.copy()
    for _ in range(iterations):
        reblurred = cv2.GaussianBlur(estimate, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
        ratio = y / np.maximum(reblurred, 1e-4)
        # The Gaussian PSF is symmetric: its adjoint is itself.
        estimate = estimate * cv2.GaussianBlur(ratio, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    return estimate


class ClassicalRestorer:
    """Restore aligned faces with classical filters only (no weights, no learned prior).

    Args:
        config: the filter settings.
        name: label shown to users and in reports.
    """

    def __init__(self, config: ClassicalConfig | None = None, *, name: str = NAME):
        self.config = config or ClassicalConfig()
        self.name = name

    def restore(self, crops: np.ndarray) -> np.ndarray:
        """Restore a batch of aligned crops.

        Args:
            crops: float32 array (N, H, W, 3), RGB in [0, 1].

        Returns:
            float32 array of the same shape, RGB in [0, 1].
        """
        crops = check_crops(crops)
        return np.stack([self.restore_one(c) for c in crops]) if len(crops) else crops.copy()

    def restore_one(self, crop: np.ndarray) -> np.ndarray:
        """Restore one float32 (H, W, 3) crop; see the module's docstring for the steps."""
        return self.deblur_one(self.denoise_one(crop))

    def denoise_one(self, crop: np.ndarray) -> np.ndarray:
        """Steps 1-3: measure the blur, shrink to where the detail is, non-local means, enlarge back."""
        cfg = self.config
        h, w = crop.shape[:2]
        sigma_in = estimate_blur(to_luma(crop), probe_sigma=cfg.probe_sigma, percentile=cfg.edge_percentile)
        # 2. shrink to where the detail is (never enlarge)
        shrink = float(np.clip(sigma_in / cfg.detail_px, 1.0, cfg.max_shrink))
        sw, sh = max(16, round(w / shrink)), max(16, round(h / shrink))
        small = cv2.resize(crop, (sw, sh), interpolation=cv2.INTER_AREA) if (sw, sh) != (w, h) else crop
        # 3. denoise where noise and blocks are fine-grained again
        noise = estimate_noise(to_luma(small)) * 255.0
        h_luma = max(cfg.nlm_floor, cfg.nlm_luma * noise)
        h_chroma = max(cfg.nlm_floor, cfg.nlm_chroma * noise)
        u8 = np.clip(small * 255.0 + 0.5, 0, 255).astype(np.uint8)
        # OpenCV's colored NLM works in Lab on BGR input.
        clean = cv2.fastNlMeansDenoisingColored(u8[..., ::-1].copy(), None, h_luma, h_chroma, 5, 15)
        # The 8-bit round trip costs ≤ 0.5/255; keep the input's sub-level precision where NLM changed nothing.
        den = small + (clean[..., ::-1].astype(np.float32) / 255.0 - u8.astype(np.float32) / 255.0)
        if (sw, sh) != (w, h):
            den = cv2.resize(den, (w, h), interpolation=cv2.INTER_CUBIC)
        return np.clip(den, 0.0, 1.0).astype(np.float32)

    def deblur_one(self, den: np.ndarray) -> np.ndarray:
        """Step 4: Richardson–Lucy on luma with the measured blur, held within the local min/max."""
        cfg = self.config
        y = to_luma(den)
        psf = cfg.rl_share * estimate_blur(y, probe_sigma=cfg.probe_sigma, percentile=cfg.edge_percentile)
        if psf < cfg.rl_min_sigma:
            return den
        offset = 0.02  # RL needs positive values; black must not be a fixed point that divides by ~0
        sharp = richardson_lucy(y + offset, psf, cfg.rl_iterations) - offset
        radius = max(1, round(cfg.clamp_radius * psf))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        margin = cfg.clamp_margin / 255.0
        sharp = np.clip(sharp, cv2.erode(y, kernel) - margin, cv2.dilate(y, kernel) + margin)
        out = den + (sharp - y)[..., None]
        return np.clip(out, 0.0, 1.0).astype(np.float32)
