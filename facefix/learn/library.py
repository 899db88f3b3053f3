"""A library's faces judged as clean targets: sharp at their true resolution, or not (and why).

A face is a clean target when the photo holds it at a size that needs little
enlargement into the 512 template, and its aligned crop is sharp and clean
there: a 60-px face enlarged into the template is soft however sharp the photo
was, and it says so itself. Measures, no reference needed:

* **size**: eye-to-mouth distance in the photo (the template has
  :data:`TEMPLATE_EYE_MOUTH`); below ``min_face`` the crop is an enlargement;
* **blur width**: :func:`facefix.restorers.classical.estimate_blur` on the
  aligned crop's luma (template pixels; it includes the enlargement's
  softness): sharp 512 photos measure 0.85-1.2, the public sample photos'
  faces of 35-57 px 1.5-2.3, an old photo's 3-5;
* **noise**: Donoho's estimate at the face's own size (noise the enlargement
  smoothed still counts).

Faces that are not targets are the library's *degraded* faces: what the
restorer must learn to undo (:mod:`facefix.learn.degradation`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from facefix.adapt.album import AlbumFace
from facefix.faces.align import CROP_SIZE, TEMPLATE_512
from facefix.quality.degrade import to_luma
from facefix.restorers.classical import estimate_blur, estimate_noise

#: Eye-to-mouth distance of the 512 template (px).
TEMPLATE_EYE_MOUTH = float(np.linalg.norm(TEMPLATE_512[3:5].mean(axis=0) - TEMPLATE_512[0:2].mean(axis=0)))
#: Default smallest eye-to-mouth distance of a target (source px): enlarged at most ~2x (enroll's references' line).
MIN_FACE = 64.0
#: Default largest blur width of a target (template px).
MAX_BLUR = 1.3
#: Largest noise of a target (1/255, at the face's own size).
MAX_NOISE = 3.0
#: The known blur (template px) :func:`wide_blur` measures through.
WIDE_PROBE = 3.0


@dataclass(frozen=True, eq=False)
class ScoredFace:
    """One library face and its measures.

    Args:
        face: the collected face (photo, detection, crop).
        enlarge: how much the alignment enlarged it (template eye-mouth / its own; ≥ 1 means enlarged).
        blur: blur width of the aligned crop (template px).
        noise: noise at the face's own size (1/255).
        wide_blur: blur width measured through a known blur of :data:`WIDE_PROBE` px (template px, see
            :func:`wide_blur`): what the degradation is matched with.
    """

    face: AlbumFace
    enlarge: float
    blur: float
    noise: float
    wide_blur: float


@dataclass(frozen=True, eq=False)
class Judged:
    """The library's faces sorted into targets (sharpest first) and the rest, each with why."""

    targets: tuple[ScoredFace, ...]
    rejected: tuple[tuple[ScoredFace, str], ...]

    def reasons(self) -> dict[str, int]:
        """How many faces were rejected for each kind of reason ("too small", "too blurry", ...)."""
        counts: dict[str, int] = {}
        for _, reason in self.rejected:
            key = reason.split(" (")[0]
            counts[key] = counts.get(key, 0) + 1
        return counts


def wide_blur(luma: np.ndarray) -> float:
    """Blur width (px) of a degraded face, measured through a known Gaussian of :data:`WIDE_PROBE` px.

    On its own, :func:`~facefix.restorers.classical.estimate_blur` reads noise and JPEG block edges as
    detail: a 512 face blurred with σ 8, halved, noised (8/255) and saved at JPEG q50 reads 2-3.3.
    Blurred first by a known σ_p = 3 and that taken away in quadrature, the same faces read 6.8-8.1
    (σ 6: 5.0-6.5, σ 4: 3.8-4.5, σ 2: 2.4-2.8; sharp faces 0.5-2; three development photos),
    which is what the matching needs.
    """
    measured = estimate_blur(cv2.GaussianBlur(luma, (0, 0), WIDE_PROBE))
    return math.sqrt(max(measured * measured - WIDE_PROBE * WIDE_PROBE, 0.0))


def score_face(face: AlbumFace) -> ScoredFace:
    """Measure one collected face (see the module's docstring)."""
    crop = face.crop.astype(np.float32) / 255.0
    enlarge = TEMPLATE_EYE_MOUTH / max(face.face.eye_mouth, 1.0)
    luma = to_luma(crop)
    native = luma
    if enlarge > 1.0:
        side = max(16, round(CROP_SIZE / enlarge))
        native = cv2.resize(luma, (side, side), interpolation=cv2.INTER_AREA)
    return ScoredFace(face, enlarge, estimate_blur(luma), estimate_noise(native) * 255.0, wide_blur(luma))


def judge_faces(faces: Sequence[AlbumFace], *, min_face: float = MIN_FACE, max_blur: float = MAX_BLUR,
                max_noise: float = MAX_NOISE) -> Judged:
    """Sort faces into clean targets (sharpest first) and the rest, each with its reason."""
    targets: list[ScoredFace] = []
    rejected: list[tuple[ScoredFace, str]] = []
    for scored in map(score_face, faces):
        size = scored.face.face.eye_mouth
        if size < min_face:
            rejected.append((scored, f"too small ({size:.0f} px eye to mouth, needs {min_face:.0f})"))
        elif scored.blur > max_blur:
            rejected.append((scored, f"too blurry (blur width {scored.blur:.2f} px, needs at most {max_blur:.2f})"))
        elif scored.noise > max_noise:
            rejected.append((scored, f"too noisy (noise {scored.noise:.1f}/255, needs at most {max_noise:.1f})"))
        else:
            targets.append(scored)
    targets.sort(key=lambda s: s.blur)
    return Judged(tuple(targets), tuple(rejected))


def split_by_photo(targets: Sequence[ScoredFace], digests: dict, share: float,
                   limit: int) -> tuple[list[ScoredFace], list[ScoredFace]]:
    """``(train, validation)``: whole photos held out (by content hash, so a copy of a photo is not in both),
    about ``share`` of the faces and at most ``limit``, chosen by hash order (the same every run); none when
    the targets come from a single photo."""
    photos = sorted({digests[t.face.source] for t in targets})
    if len(photos) < 2:
        return list(targets), []
    want = min(limit, max(1, round(share * len(targets))))
    held: set[str] = set()
    count = 0
    for digest in photos:
        n = sum(digests[t.face.source] == digest for t in targets)
        if count + n > want and held:
            break
        if len(held) + 1 == len(photos):
            break  # keep at least one photo to learn from
        held.add(digest)
        count += n
    train = [t for t in targets if digests[t.face.source] not in held]
    val = [t for t in targets if digests[t.face.source] in held]
    return train, val
