"""Sharpness against the truth, and expression fidelity: a pasted mouth or gaze is caught.

The faces are public photos (insightface's t1.jpg, scikit-image's astronaut),
aligned with facefix's own detector and template. The pasted cases are made
from them here: the astronaut's open, toothy smile blended into Jennifer
Aniston's closed-lipped one (t1.jpg's leftmost face), and the astronaut's
open eyes looking at the camera blended into Aniston's downcast ones.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facefix.errors import UsageError
from facefix.faces import estimate_alignment, get_analyzer, warp_face
from facefix.faces.landmarks import LEFT_EYE, OUTER_LIPS, RIGHT_EYE, aligned_landmarks68
from facefix.photos import read_photo, samples
from facefix.quality.degrade import degrade_level, resize_like_alignment
from facefix.quality.metrics import (
    expression_error,
    expression_errors,
    face_sharpness,
    psnr,
    sharpness_ratio,
    template_face_mask,
)


def _aligned(path, pick) -> np.ndarray:
    """One face of a photo aligned to the 512 template, float RGB; ``pick`` chooses among
    the detected faces sorted left to right."""
    rgb = read_photo(path).pixels[..., :3]
    faces = sorted(get_analyzer("dlib").detect(rgb, embed=False), key=lambda f: f.box[0])
    return warp_face(rgb, estimate_alignment(faces[pick].landmarks, 512)).astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def faces() -> dict:
    """The two faces at 512 and their 68 landmarks (found on these sharp originals)."""
    aniston = _aligned(samples.insightface_image("t1.jpg"), 0)
    astronaut = _aligned(samples.skimage_image(), 0)
    points = aligned_landmarks68(np.stack([aniston, astronaut]))
    return {"aniston": aniston, "astronaut": astronaut, "points": points}


def _hull_mask(points: np.ndarray, size: int, grow: float) -> np.ndarray:
    mask = np.zeros((size, size), np.float32)
    centre = points.mean(axis=0)
    hull = cv2.convexHull(((points - centre) * grow + centre).astype(np.float32))
    cv2.fillConvexPoly(mask, np.round(hull).astype(np.int32), 1.0, cv2.LINE_AA)
    return mask


def paste_feature(target, source, target_points, source_points, feature: str) -> np.ndarray:
    """``source``'s mouth or eyes blended into ``target`` (both aligned, same size), as a
    restorer that copies a reference's feature would: the feature's landmark hull in
    both faces, grown, feathered, the source's colour matched to the target's there.
    The mask is built from the hulls, not from the measure's own regions."""
    size = target.shape[0]
    parts, grow = ((OUTER_LIPS,), 1.35) if feature == "mouth" else ((LEFT_EYE, RIGHT_EYE), 1.9)
    mask = np.zeros((size, size), np.float32)
    for part in parts:
        mask = np.maximum(mask, _hull_mask(target_points[part], size, grow))
        mask = np.maximum(mask, _hull_mask(source_points[part], size, grow))
    mask = cv2.GaussianBlur(mask, (0, 0), size * 0.012)[..., None]
    gain = (target * mask).sum((0, 1)) / np.maximum((source * mask).sum((0, 1)), 1e-6)
    return np.clip(target * (1 - mask) + np.clip(source * gain, 0, 1) * mask, 0, 1).astype(np.float32)


def _blur_to(clean: np.ndarray, target_psnr: float) -> np.ndarray:
    """The least Gaussian blur that brings ``clean`` down to ``target_psnr``."""
    for sigma in np.linspace(0.3, 8.0, 78):
        out = cv2.GaussianBlur(clean, (0, 0), sigma)
        if psnr(out, clean) <= target_psnr:
            return out
    raise AssertionError("no blur reached the PSNR")


def _noise_to(clean: np.ndarray, target_psnr: float) -> np.ndarray:
    """The least Gaussian noise (seeded) that brings ``clean`` down to ``target_psnr``."""
    for std in np.linspace(0.005, 0.3, 119):
        out = np.clip(clean + np.random.default_rng(0).normal(0, std, clean.shape), 0, 1).astype(np.float32)
        if psnr(out, clean) <= target_psnr:
            return out
    raise AssertionError("no noise reached the PSNR")


def test_sharpness_ratio_is_one_for_the_truth_and_drops_with_blur(faces):
    clean = resize_like_alignment(faces["astronaut"], 256, 256)
    points = faces["points"][1] / 2
    assert sharpness_ratio(clean, clean, points) == pytest.approx(1.0)
    slight, strong = (cv2.GaussianBlur(clean, (0, 0), s) for s in (0.7, 1.5))
    assert 1.0 > sharpness_ratio(slight, clean, points) > sharpness_ratio(strong, clean, points)
    assert sharpness_ratio(strong, clean, points) < 0.5
    assert sharpness_ratio(degrade_level(clean, "moderate", seed=0), clean, points) < 0.3
    # the 1-px smoothing before the Laplacian keeps moderate noise from passing for detail
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 4 / 255, clean.shape), 0, 1).astype(np.float32)
    assert sharpness_ratio(noisy, clean, points) < 1.2
    # the template's fixed face region gives the same verdicts without landmarks
    assert sharpness_ratio(clean, clean) == pytest.approx(1.0)
    assert sharpness_ratio(strong, clean) < sharpness_ratio(slight, clean) < 1.0


def test_sharpness_does_not_depend_on_the_crop_size(faces):
    """Measured at 256 px: the 512 crop and its 256 copy read the same."""
    big = faces["astronaut"]
    small = resize_like_alignment(big, 256, 256)
    assert face_sharpness(big) == pytest.approx(face_sharpness(small), rel=1e-6)
    assert face_sharpness(big, faces["points"][1]) == pytest.approx(face_sharpness(small, faces["points"][1] / 2),
                                                                    rel=1e-6)
    mask = template_face_mask(512)
    assert mask[282, 256] > 0.99 and mask[10, 10] < 0.01 and mask[282, 256 + 142 + 60] < 0.01
    assert 0.3 < mask[282, 256 + 142] < 0.7  # the ellipse's edge, feathered
    with pytest.raises(UsageError, match="square aligned RGB"):
        face_sharpness(big[:, :400])


@pytest.mark.parametrize("feature, source_region", [("mouth", "mouth"), ("eyes", "eyes")])
def test_a_pasted_mouth_or_gaze_is_worse_than_the_degraded_input(faces, feature, source_region):
    """The measure's point: a restorer that copies a reference's toothy smile or open gaze
    into a closed-lipped, downcast face scores clearly worse than the blurry input, and
    blur or noise alone never score worse than the degraded input at the same PSNR."""
    target, source = faces["aniston"], faces["astronaut"]
    pasted = paste_feature(target, source, faces["points"][0], faces["points"][1], feature)
    clean, pasted = (resize_like_alignment(x, 256, 256) for x in (target, pasted))
    points = faces["points"][0] / 2
    moderate = degrade_level(clean, "moderate", seed=0)
    severe = degrade_level(clean, "severe", seed=1)
    degraded = max(expression_error(moderate, clean, points), expression_error(severe, clean, points))
    errors = expression_errors(pasted, clean, points)
    assert errors[source_region] > 2.0 * degraded, (errors, degraded)
    assert expression_error(pasted, clean, points) == max(errors.values())
    # the untouched region is the truth's
    other = "eyes" if source_region == "mouth" else "mouth"
    assert errors[other] < 0.05
    # a pasted face mildly softened, as a restorer's output is, is still caught
    assert expression_error(cv2.GaussianBlur(pasted, (0, 0), 1.0), clean, points) > 1.5 * degraded
    # blur or noise alone, at the degraded input's PSNR, score no worse than it
    level = psnr(moderate, clean)
    baseline = expression_error(moderate, clean, points)
    assert expression_error(_blur_to(clean, level), clean, points) <= baseline
    assert expression_error(_noise_to(clean, level), clean, points) <= baseline
    # ... and at the pasted face's own (higher) PSNR, far below it
    level = psnr(pasted, clean)
    assert expression_error(_blur_to(clean, level), clean, points) < 0.5 * errors[source_region]
    assert expression_error(_noise_to(clean, level), clean, points) < 0.5 * errors[source_region]


def test_expression_error_is_zero_for_the_truth_and_finds_landmarks_itself(faces):
    clean = resize_like_alignment(faces["aniston"], 256, 256)
    assert expression_error(clean, clean, faces["points"][0] / 2) == pytest.approx(0.0, abs=1e-9)
    moderate = degrade_level(clean, "moderate", seed=0)
    # without points, the clean face's own landmarks are found (same regions, within a pixel)
    found = expression_errors(moderate, clean)
    given = expression_errors(moderate, clean, faces["points"][0] / 2)
    assert found == pytest.approx(given, abs=0.03)
    # a batch gives the mean
    batch = expression_error(np.stack([moderate, clean]), np.stack([clean, clean]),
                             np.stack([faces["points"][0] / 2] * 2))
    assert batch == pytest.approx(expression_error(moderate, clean, faces["points"][0] / 2) / 2)
    with pytest.raises(UsageError, match="68 landmarks"):
        expression_errors(moderate, clean, faces["points"][0][:5])
