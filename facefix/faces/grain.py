"""Film grain: measure a photo's own grain and give a restored face the same.

A restored face is smooth. Pasted into a grainy scan it looks stuck on: the
skin has no grain while the hair, clothes and background around it do. With
``--grain`` the restore puts back grain of the photo's own strength and size,
only where the face was pasted and only as much as the restored face lacks.

How grain is measured (robust to edges and texture, so no segmentation is needed):

* strength: Donoho's median estimator on the finest diagonal Haar band,
  ``median(|HH|) / 0.6745``, per channel;
* size: the same estimate on the 2× area-reduced photo, divided by the first,
  is 0.5 for white noise and grows as the grain gets coarser (a scan enlarges
  the print's grain); a table made from blurred white noise turns that ratio
  into the Gaussian blur that makes grain of that size;
* mono or colour: film grain in a scanned black-and-white or sepia print moves
  all channels together; the channels' HH bands are then strongly correlated.

The synthetic grain is measured with the same estimator, so "as strong as the
photo's" means the same number on the same scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

#: Donoho's constant: the median of |N(0, 1)|.
_MAD = 0.6745
#: Below this strength (standard deviation, 1.0 = full scale) a photo is called grain-free.
MIN_SIGMA = 1.0 / 255.0
#: Photos larger than this many pixels are measured on a grid of tiles.
_TILE, _MAX_TILES = 256, 64


@dataclass(frozen=True)
class Grain:
    """A photo's grain.

    Attributes:
        sigma: strength per channel (R, G, B): the grain's standard deviation in [0, 1] units.
        blur: Gaussian sigma (pixels) that turns white noise into grain of this size.
        mono: all channels move together (film grain of a gray or toned print).
    """

    sigma: tuple[float, float, float]
    blur: float
    mono: bool

    @property
    def visible(self) -> bool:
        return max(self.sigma) >= MIN_SIGMA


def _haar_hh(x: np.ndarray) -> np.ndarray:
    """Finest diagonal Haar coefficients of (H, W) or (H, W, C); unit gain for white noise."""
    h, w = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
    x = x[:h, :w]
    return (x[0::2, 0::2] - x[0::2, 1::2] - x[1::2, 0::2] + x[1::2, 1::2]) * 0.5


def _reduce2(x: np.ndarray) -> np.ndarray:
    """2× area reduction of (H, W[, C]) (white noise comes out at half its strength)."""
    h, w = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
    x = x[:h, :w]
    return (x[0::2, 0::2] + x[0::2, 1::2] + x[1::2, 0::2] + x[1::2, 1::2]) * 0.25


def _sigma(hh: np.ndarray, select: np.ndarray | None = None) -> np.ndarray:
    """Per-channel robust strength from HH coefficients (H, W, C), optionally only where ``select``."""
    flat = hh.reshape(-1, hh.shape[-1]) if select is None else hh[select]
    if flat.shape[0] == 0:
        return np.zeros(hh.shape[-1])
    return np.median(np.abs(flat), axis=0) / _MAD


def _tiles(image: np.ndarray) -> list[np.ndarray]:
    """The whole image, or a spread grid of tiles from a large one (bounded cost)."""
    h, w = image.shape[:2]
    if h * w <= _TILE * _TILE * _MAX_TILES:
        return [image]
    n = int(np.sqrt(_MAX_TILES))
    ys = np.linspace(0, h - _TILE, n).astype(int)
    xs = np.linspace(0, w - _TILE, n).astype(int)
    return [image[y:y + _TILE, x:x + _TILE] for y in ys for x in xs]


def _ratio_and_sigma(tiles: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(per-channel sigma at full size, at half size, the HH coefficients) over ``tiles``."""
    hh = np.concatenate([_haar_hh(t).reshape(-1, t.shape[-1]) for t in tiles])
    hh2 = np.concatenate([_haar_hh(_reduce2(t)).reshape(-1, t.shape[-1]) for t in tiles])
    return _sigma(hh[:, None, :]), _sigma(hh2[:, None, :]), hh


@lru_cache(maxsize=1)
def _size_table() -> tuple[np.ndarray, np.ndarray]:
    """(ratio, blur) pairs from blurred white noise: the half-size/full-size strength ratio."""
    rng = np.random.default_rng(0)
    blurs = np.array([0.0, 0.3, 0.5, 0.7, 1.0, 1.3, 1.6, 2.0, 2.5, 3.0, 4.0])
    ratios = []
    for b in blurs:
        field = _blurred_field(rng.standard_normal((512, 512)).astype(np.float32), b)[..., None]
        s1, s2, _ = _ratio_and_sigma([field])
        ratios.append(float(s2[0] / s1[0]))
    return np.maximum.accumulate(np.array(ratios)), blurs


def _blurred_field(field: np.ndarray, blur: float) -> np.ndarray:
    return cv2.GaussianBlur(field, (0, 0), blur) if blur >= 0.3 else field


def estimate_grain(image: np.ndarray, blur: float | None = None) -> Grain:
    """Measure the grain of a float (H, W, 3) photo in [0, 1].

    ``blur``: the grain's size when already known (e.g. a region of a photo whose
    grain was measured as a whole: a small region's content would mislead the size).
    """
    tiles = _tiles(np.asarray(image, np.float32))
    s1, s2, hh = _ratio_and_sigma(tiles)
    if blur is None:
        main = int(np.argmax(s1))
        ratio = float(s2[main] / s1[main]) if s1[main] > 0 else 0.5
        table_r, table_b = _size_table()
        blur = float(np.interp(ratio, table_r, table_b))
    blur = round(blur, 2)
    if s1.min() <= 0 or np.allclose(hh[:, 0], hh[:, 1]) and np.allclose(hh[:, 1], hh[:, 2]):
        mono = True
    else:
        c = np.corrcoef(hh.T)
        mono = bool(min(c[0, 1], c[1, 2], c[0, 2]) > 0.7)
    return Grain(tuple(float(v) for v in s1 * _per_estimate(blur)), blur, mono)


@lru_cache(maxsize=16)
def _reference(blur: float) -> tuple[float, float]:
    """(standard deviation, robust estimate) of unit white noise blurred by ``blur``."""
    field = _blurred_field(np.random.default_rng(1).standard_normal((512, 512)).astype(np.float32), blur)
    return float(field.std()), float(_sigma(_haar_hh(field)[..., None])[0])


def _per_estimate(blur: float) -> float:
    """Standard deviation of grain of size ``blur`` per unit of its robust estimate."""
    std, estimate = _reference(blur)
    return std / estimate


def make_grain(shape: tuple[int, int], grain: Grain, sigma: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Grain of ``grain``'s size over an (H, W) region with per-channel standard deviation
    ``sigma`` (mono grain: one field scaled per channel): float32 (H, W, 3)."""
    h, w = shape
    count = 1 if grain.mono else 3
    fields = [_blurred_field(rng.standard_normal((h, w)).astype(np.float32), grain.blur) for _ in range(count)]
    unit = np.stack(fields, axis=-1) / _reference(grain.blur)[0]
    return unit * np.asarray(sigma, np.float32)


def missing_sigma(grain: Grain, face: np.ndarray, where: np.ndarray, amount: float = 1.0) -> np.ndarray:
    """Per-channel strength of grain to add to ``face`` (H, W, 3) where ``where`` (H, W) is true:
    what it lacks of the photo's, ``amount`` times (strengths add in quadrature)."""
    hh = _haar_hh(np.asarray(face, np.float32))
    own = _sigma(hh, where[: 2 * hh.shape[0] : 2, : 2 * hh.shape[1] : 2]) * _per_estimate(grain.blur)
    target = np.asarray(grain.sigma)
    return amount * np.sqrt(np.maximum(0.0, target**2 - own**2))


__all__ = ["Grain", "MIN_SIGMA", "estimate_grain", "make_grain", "missing_sigma"]
