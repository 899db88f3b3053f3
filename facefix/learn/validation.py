"""Held-out faces of a library, degraded as the library is, and how well a restorer brings them back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facefix.learn.degradation import MatchedDegradation
from facefix.quality.degrade import degrade_enlarged, sample_degradation
from facefix.quality.metrics import psnr, sharpness_ratio


@dataclass(frozen=True)
class Score:
    """Mean PSNR (dB) and sharpness ratio (1.0: as sharp as the truth) over the held-out faces."""

    psnr: float
    sharpness: float

    def to_dict(self) -> dict:
        return {"psnr": round(self.psnr, 3), "sharpness": round(self.sharpness, 4)}


def degraded_pairs(crops: np.ndarray, matched: MatchedDegradation, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(clean, degraded)`` float32 (N, 512, 512, 3): each held-out face degraded by one fixed draw of
    ``matched`` (the same every run), small faces as small faces."""
    clean = crops.astype(np.float32) / 255.0
    bad = []
    for i, face in enumerate(clean):
        rng = np.random.default_rng([seed, i])
        enlarge = 1.0
        if rng.random() < matched.enlarge_prob:
            enlarge = float(np.exp(rng.uniform(0.0, np.log(matched.enlarge_max))))
        deg = sample_degradation(matched.recipe, rng)
        bad.append(degrade_enlarged(face, deg, rng, enlarge, kernel_size=matched.recipe.kernel_size))
    return clean, np.stack(bad)


def score(restored: np.ndarray, clean: np.ndarray) -> Score:
    return Score(psnr(restored, clean), sharpness_ratio(restored, clean))
