"""Keep the photo's own eyes and mouth: the restored face's coarse structure there is the photo's.

A blurred face holds little of what its eyes and mouth looked like at the scale of
a lid line, an iris, teeth or the corner of a smile. Whatever a restorer draws
there is invented: the person's CNN draws what their references showed most
often (a smile, open eyes), and references warped a few pixels off draw their
own lids and lips. On the development set every sharpening restorer made the
eyes and mouth *less* like the truth than the blurred input was (expression
error 0.44 against 0.32 at eval's moderate level, docs/references.md): the wrong
structure a user sees as "that is not her smile".

So inside the eyes and the mouth (grown to take in the lids, brows' ends and
lip corners), the restored face keeps only its detail finer than ``sigma``: its
coarser structure -- the shapes -- is replaced by the photo's. Lashes, lip lines
and skin texture stay; the shape of the mouth and where the eyes look are what
the photo shows. Outside them nothing changes. A consistency step fitted to the
photo's blur (Wiener, a range/null-space split as in DDNM) did not do it: the
invented structure sits where the photo has no information, which such a step
leaves alone by design (measured: expression 0.42 against 0.44).

Past a blur of ``eyes_until`` only the mouth is kept (the photo's eyes are blobs
there, and the references' eyes carry the likeness). It needs the photo's face
(the crop before the pre-cleaner): where there is none, nothing is done. A sharp
photo loses nothing to it: its coarse structure is the restored face's already,
up to the noise the pre-cleaner removed (little, that coarse).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facefix.faces.landmarks import feature_masks


@dataclass(frozen=True)
class FidelitySettings:
    """Where and how much of the photo's structure is kept.

    Attributes:
        sigma: Gaussian width (512-px crop) splitting kept detail (finer) from the photo's
            structure (coarser). 0 turns the step off. 5: on the development set's moderate
            faces the expression error comes to the input's (8: sharper, 0.372 against
            0.324; 4: softer; docs/references.md).
        grow: how far (512-px) the eye and mouth regions are grown. Ungrown, the lids' and
            lip corners' surroundings kept the restorer's shapes (expression 0.339 against
            0.322 at 16; 24 gave 0.321 and less sharpness).
        feather: soft edge of the regions (512-px Gaussian width).
        eyes_until: the eyes are kept only for faces less blurred than this (512-px sigma):
            past it the photo's eyes are blobs, and the references' eyes carry most of
            the likeness (at eval's severe level keeping them cost a third of the identity
            gain, -11.3 % to -7.7 %). The mouth is kept at every blur: a pasted smile is the
            worst failure there is. 12: as :data:`facefix.restorers.reference.LEARNED_FROM`.
    """

    sigma: float = 5.0
    grow: float = 16.0
    feather: float = 6.0
    eyes_until: float = 12.0

    def parts(self, blur: float) -> tuple[str, ...]:
        """Which features keep the photo's shapes for a face this blurred (512-px sigma)."""
        if self.sigma <= 0:
            return ()
        return ("eyes", "mouth") if blur < self.eyes_until else ("mouth",)


def feature_region(points: np.ndarray, size: int, settings: FidelitySettings,
                   parts: tuple[str, ...] = ("eyes", "mouth")) -> np.ndarray:
    """Soft mask (float32 (size, size) in [0, 1]) of the eyes and/or the mouth, grown and feathered."""
    unknown = set(parts) - {"eyes", "mouth"}
    if unknown:
        raise ValueError(f"unknown feature(s) {sorted(unknown)}: the parts are 'eyes' and 'mouth'")
    k = size / 512.0
    (left, right), mouth = feature_masks(points, size)
    mask = np.zeros((size, size), np.float32)
    if "eyes" in parts:
        mask = np.maximum(left, right)
    if "mouth" in parts:
        mask = np.maximum(mask, mouth)
    # the features' hulls (their soft masks peak below 1 and have long tails, which the
    # dilation would carry from the mouth up to the eyes)
    mask = (mask > 0.25).astype(np.float32)
    radius = int(round(settings.grow * k))
    if radius > 0:
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)))
    return cv2.GaussianBlur(mask, (0, 0), max(0.5, settings.feather * k))


def keep_photo_features(restored: np.ndarray, photo: np.ndarray, points: np.ndarray,
                        settings: FidelitySettings, parts: tuple[str, ...] = ("eyes", "mouth")) -> np.ndarray:
    """The restored face with the photo's eye and mouth structure coarser than ``settings.sigma``.

    Args:
        restored: float32 (S, S, 3) restored face in [0, 1].
        photo: float32 (S, S, 3) the same crop as the photo holds it (before any restorer).
        points: (68, 2) the face's landmarks in the crop's pixels.
        settings: see :class:`FidelitySettings`.
        parts: which features (``"eyes"``, ``"mouth"``; :meth:`FidelitySettings.parts` by blur).

    Returns:
        float32 (S, S, 3) in [0, 1]; ``restored`` itself when ``settings.sigma`` is 0 or no part is given.
    """
    if settings.sigma <= 0 or not parts:
        return restored
    size = restored.shape[0]
    photo = np.asarray(photo, np.float32)
    if photo.shape != restored.shape:
        raise ValueError(f"the photo's crop {photo.shape} and the restored face {restored.shape} differ")
    sigma = settings.sigma * size / 512.0
    # restored - blur(restored) + blur(photo): its finer detail on the photo's shapes
    correction = cv2.GaussianBlur(photo - restored, (0, 0), sigma)
    mask = feature_region(points, size, settings, parts)[..., None]
    return np.clip(restored + mask * correction, 0, 1).astype(np.float32)
