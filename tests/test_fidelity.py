"""The photo's own eyes and mouth: a restorer's invented shapes there go, its fine detail stays.

A real face (scikit-image's astronaut); the "restored" face is her sharp face with an
open mouth painted in -- the pasted-mouth failure a restorer makes when her references
smile and the photo does not.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facefix.faces import estimate_alignment, get_analyzer, warp_face
from facefix.faces.landmarks import aligned_landmarks68, feature_masks
from facefix.photos import read_photo, samples
from facefix.quality.degrade import degrade_fixed, to_luma
from facefix.quality.metrics import expression_errors
from facefix.restorers.fidelity import FidelitySettings, feature_region, keep_photo_features


@pytest.fixture(scope="module")
def face():
    rgb = read_photo(samples.skimage_image("astronaut.png")).rgb_float()
    found = get_analyzer("dlib").detect((rgb * 255).astype(np.uint8), embed=False)
    clean = np.clip(warp_face(rgb, estimate_alignment(found[0].landmarks, 512)), 0, 1).astype(np.float32)
    return clean, aligned_landmarks68(clean[None])[0]


def _pasted_mouth(clean: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Her face with teeth and a dark open mouth painted between her closed lips."""
    out = clean.copy()
    left, right = points[48].astype(int), points[54].astype(int)
    top, bottom = int(points[62][1]) - 6, int(points[66][1]) + 10
    cv2.rectangle(out, (left[0] + 6, top), (right[0] - 6, bottom), (0.12, 0.04, 0.04), -1)
    cv2.rectangle(out, (left[0] + 10, top), (right[0] - 10, top + 7), (0.92, 0.9, 0.85), -1)  # teeth
    return out


def _fine(img: np.ndarray) -> np.ndarray:
    y = to_luma(img)
    return y - cv2.GaussianBlur(y, (0, 0), 1.5)


def test_a_pasted_mouth_goes_back_to_the_photos(face):
    clean, points = face
    photo = degrade_fixed(clean, sigma=6.0, scale=4.0, noise=4.0, jpeg=None, seed=0).astype(np.float32)
    pasted = _pasted_mouth(clean, points)
    out = keep_photo_features(pasted, photo, points, FidelitySettings())
    before = expression_errors(pasted, clean, points)["mouth"]
    after = expression_errors(out, clean, points)["mouth"]
    assert before > 0.8, before  # the measure sees the pasted mouth...
    assert after < 0.5 * before, (before, after)  # ... and the photo's closed mouth is back
    # the truth itself loses little: its shapes are the photo's shapes
    assert expression_errors(keep_photo_features(clean, photo, points, FidelitySettings()), clean,
                             points)["mouth"] < expression_errors(photo, clean, points)["mouth"]


def test_fine_detail_stays_and_nothing_outside_the_features_moves(face):
    clean, points = face
    photo = degrade_fixed(clean, sigma=6.0, scale=4.0, noise=4.0, jpeg=None, seed=0).astype(np.float32)
    out = keep_photo_features(clean, photo, points, FidelitySettings())
    region = feature_region(points, 512, FidelitySettings())
    assert region.max() > 0.99
    far = region < 1e-4
    assert far.mean() > 0.5  # most of the crop: cheeks, forehead, nose, hair, background
    np.testing.assert_allclose(out[far], clean[far], atol=1e-4)
    (left, right), mouth = feature_masks(points, 512)
    inside = np.maximum(np.maximum(left, right), mouth) > 0.5
    fine_out, fine_clean = _fine(out)[inside], _fine(clean)[inside]
    # her lashes and lip lines: the same fine detail, at nearly the same strength
    assert np.corrcoef(fine_out, fine_clean)[0, 1] > 0.9
    assert 0.8 < fine_out.std() / fine_clean.std() < 1.1
    assert out.dtype == np.float32 and out.shape == clean.shape


def test_it_scales_with_the_crop_and_can_be_turned_off(face):
    clean, points = face
    photo = degrade_fixed(clean, sigma=6.0, scale=4.0, noise=0.0, jpeg=None, seed=0).astype(np.float32)
    off = keep_photo_features(clean, photo, points, FidelitySettings(sigma=0))
    assert off is clean
    half = lambda x: cv2.resize(x, (256, 256), interpolation=cv2.INTER_AREA)  # noqa: E731
    small = keep_photo_features(half(clean), half(photo), points / 2, FidelitySettings())
    full = keep_photo_features(clean, photo, points, FidelitySettings())
    # the same split at either size: what a 512-px crop gets, a 256-px one gets at half the scale
    assert np.abs(small - half(full)).mean() < 2.0 / 255
    with pytest.raises(ValueError, match="differ"):
        keep_photo_features(clean, half(photo), points, FidelitySettings())


def test_blurrier_faces_keep_only_the_photos_mouth(face):
    """Past ``eyes_until`` the photo's eyes are blobs and the references' carry the likeness:
    only the mouth is the photo's."""
    clean, points = face
    settings = FidelitySettings()
    assert settings.parts(8.0) == ("eyes", "mouth")
    assert settings.parts(settings.eyes_until) == ("mouth",)
    assert FidelitySettings(sigma=0).parts(8.0) == ()
    photo = degrade_fixed(clean, sigma=8.0, scale=8.0, noise=0.0, jpeg=None, seed=0).astype(np.float32)
    out = keep_photo_features(clean, photo, points, settings, ("mouth",))
    (left, right), mouth = feature_masks(points, 512)
    eyes = np.maximum(left, right) > 0.5
    np.testing.assert_allclose(out[eyes], clean[eyes], atol=1e-4)
    assert np.abs(out[mouth > 0.5] - clean[mouth > 0.5]).max() > 0.05
    assert keep_photo_features(clean, photo, points, settings, ()) is clean
    with pytest.raises(ValueError, match="nose"):
        keep_photo_features(clean, photo, points, settings, ("nose",))
