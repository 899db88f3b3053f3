"""The degradation a library's faces show, as training degradations drawn to match it.

From the faces that are not clean targets (:mod:`facefix.learn.library`):
their size (how much alignment enlarges them), their blur beyond what the
sharp faces show, their noise at their own size and their photos' JPEG
quality. The training pairs are then drawn from those ranges (the 10th to
90th percentiles) with :mod:`facefix.quality.degrade`'s model: a face degraded
at its own size and enlarged into the template, as in the library.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from facefix.learn.library import ScoredFace
from facefix.quality.degrade import DegradationRecipe

#: Quantiles of the degraded faces' measures that bound each range.
LOW, HIGH = 10, 90
#: Faces enlarged by more than this count as small faces.
SMALL = 1.25
#: JPEG range when no degraded face comes from a JPEG (the pairs still get a light compression).
LOSSLESS_JPEG = (90, 100)


@dataclass(frozen=True)
class MatchedDegradation:
    """Training degradations matched to a library.

    Args:
        recipe: blur (in the face's own pixels), noise, JPEG ranges.
        enlarge_prob: share of training faces made as small faces enlarged into the template.
        enlarge_max: largest enlargement drawn.
        faces: how many degraded faces it was measured on (0: the default mix, none to measure).
    """

    recipe: DegradationRecipe
    enlarge_prob: float
    enlarge_max: float
    faces: int

    def describe(self) -> str:
        r = self.recipe
        if not self.faces:
            return "no degraded faces to match: the default degradation mix"
        return (f"matched to {self.faces} degraded face(s): blur σ {r.sigma[0]:.1f}-{r.sigma[1]:.1f} px, "
                f"noise {r.noise[0]:.0f}-{r.noise[1]:.0f}/255, JPEG q{r.jpeg[0]}-{r.jpeg[1]}, "
                f"{self.enlarge_prob:.0%} small faces (enlarged up to {self.enlarge_max:.1f}x)")

    def to_dict(self) -> dict:
        r = self.recipe
        return {"faces": self.faces, "sigma": list(r.sigma), "noise": list(r.noise), "jpeg": list(r.jpeg),
                "scale": list(r.scale), "enlarge_prob": self.enlarge_prob, "enlarge_max": self.enlarge_max}


def _span(values: Sequence[float], lo: float, hi: float, least: float) -> tuple[float, float]:
    """The LOW-HIGH percentile range of ``values`` within [lo, hi], at least ``least`` wide."""
    a, b = (float(np.clip(np.percentile(values, q), lo, hi)) for q in (LOW, HIGH))
    if b - a < least:
        mid = float(np.clip((a + b) / 2, lo + least / 2, hi - least / 2))
        a, b = mid - least / 2, mid + least / 2
    return round(a, 2), round(b, 2)


def match_degradation(degraded: Sequence[ScoredFace], sharp_blur: float, jpeg_qualities: Sequence[int | None],
                      *, default: DegradationRecipe, default_enlarge: tuple[float, float]) -> MatchedDegradation:
    """Training degradations that look like ``degraded``.

    Args:
        degraded: the library's faces that are not targets.
        sharp_blur: the targets' median :attr:`~facefix.learn.library.ScoredFace.wide_blur` (template px):
            what a sharp face measures.
        jpeg_qualities: the degraded faces' photos' JPEG quality (None: not a JPEG), in their order.
        default, default_enlarge: the recipe and ``(enlarge_prob, enlarge_max)`` when there is nothing to measure.
    """
    if not degraded:
        return MatchedDegradation(default, default_enlarge[0], default_enlarge[1], 0)
    enlarge = np.array([min(max(s.enlarge, 1.0), 8.0) for s in degraded])
    # Blur beyond a sharp face's, in the face's own pixels (it is applied before the enlargement).
    extra = np.array([math.sqrt(max(s.wide_blur**2 - sharp_blur**2, 0.0)) for s in degraded]) / enlarge
    sigma = _span(extra, 0.1, 10.0, 0.5)
    noise = _span([s.noise for s in degraded], 0.0, 20.0, 2.0)
    qualities = [q for q in jpeg_qualities if q is not None]
    jpeg = tuple(int(round(v)) for v in _span(qualities, 20, 100, 10)) if qualities else LOSSLESS_JPEG
    small = enlarge > SMALL
    recipe = DegradationRecipe(sigma=sigma, scale=(1.0, 1.5), noise=noise, jpeg=jpeg)
    enlarge_max = round(float(np.percentile(enlarge[small], HIGH)), 2) if small.any() else SMALL
    return MatchedDegradation(recipe, round(float(small.mean()), 3), max(enlarge_max, SMALL), len(degraded))
