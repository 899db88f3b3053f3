"""Film grain: measured from the photo, given back to restored faces only."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facefix.faces import estimate_alignment, paste_faces, warp_face
from facefix.faces.align import TEMPLATE_512
from facefix.faces.grain import estimate_grain, make_grain


def _smooth_photo(h: int = 600, w: int = 800) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([0.35 + 0.3 * x / w, 0.3 + 0.25 * y / h, 0.25 + 0.1 * (x + y) / (h + w)], -1)


def _grain(shape, std: float, blur: float, rng, tint=(1.0, 0.9, 0.7), mono: bool = True) -> np.ndarray:
    count = 1 if mono else 3
    fields = []
    for _ in range(count):
        n = rng.standard_normal(shape).astype(np.float32)
        if blur:
            n = cv2.GaussianBlur(n, (0, 0), blur)
        fields.append(n / n.std() * std)
    field = np.stack(fields, -1)
    return field * np.asarray(tint, np.float32) if mono else field


@pytest.mark.parametrize("blur", [0.0, 1.0, 2.0])
def test_estimate_grain_reads_strength_size_and_mono(blur):
    rng = np.random.default_rng(1)
    photo = _smooth_photo() + _grain((600, 800), 0.04, blur, rng)
    g = estimate_grain(photo)
    assert g.mono and g.visible
    assert np.allclose(g.sigma, [0.04, 0.036, 0.028], rtol=0.12)
    assert abs(g.blur - blur) < 0.35
    # what make_grain makes reads back as the same grain
    again = estimate_grain(_smooth_photo() + make_grain((600, 800), g, np.array(g.sigma), rng))
    assert np.allclose(again.sigma, g.sigma, rtol=0.12) and abs(again.blur - g.blur) < 0.35


def test_colour_noise_is_not_mono_and_a_clean_photo_has_no_grain():
    rng = np.random.default_rng(2)
    colour = _smooth_photo() + _grain((600, 800), 0.03, 0.0, rng, mono=False)
    g = estimate_grain(colour)
    assert not g.mono and np.allclose(g.sigma, 0.03, rtol=0.12)
    assert not estimate_grain(_smooth_photo()).visible


def _pasted(photo: np.ndarray, face: np.ndarray, alignment, **kwargs) -> np.ndarray:
    return paste_faces(photo, [face], [alignment], **kwargs)


def test_pasted_smooth_face_gets_the_photos_grain_and_nothing_else_changes():
    rng = np.random.default_rng(3)
    clean = _smooth_photo()
    photo = np.clip(clean + _grain((600, 800), 0.04, 1.0, rng), 0, 1)
    alignment = estimate_alignment(TEMPLATE_512 * 0.5 + np.array([250.0, 120.0]))
    smooth = warp_face(clean, alignment)  # a "restored" face: the same picture without grain
    plain = _pasted(photo, smooth, alignment)
    grainy = _pasted(photo, smooth, alignment, grain=estimate_grain(photo), seed=7)
    inner = (slice(220, 280), slice(350, 410))  # inside the pasted face, at full mask weight
    photo_grain = estimate_grain(photo[:200, :200]).sigma[0]
    assert estimate_grain(plain[inner]).sigma[0] < 0.3 * photo_grain  # the smooth face looks pasted on
    assert estimate_grain(grainy[inner]).sigma[0] == pytest.approx(photo_grain, rel=0.2)
    assert abs(float(grainy[inner].mean() - plain[inner].mean())) < 0.005  # tone and colour kept
    outside = np.ones(photo.shape[:2], bool)
    outside[100:480, 200:600] = False
    assert np.array_equal(grainy[outside], plain[outside]) and np.array_equal(plain[outside], photo[outside])
    again = _pasted(photo, smooth, alignment, grain=estimate_grain(photo), seed=7)
    assert np.array_equal(again, grainy)  # the same photo comes out the same


def test_a_face_that_already_has_the_grain_gets_almost_none_added():
    rng = np.random.default_rng(4)
    photo = np.clip(_smooth_photo() + _grain((600, 800), 0.04, 1.0, rng), 0, 1)
    alignment = estimate_alignment(TEMPLATE_512 * 0.5 + np.array([250.0, 120.0]))
    own = warp_face(photo, alignment)  # the face as it was, grain and all
    plain = _pasted(photo, own, alignment)
    grainy = _pasted(photo, own, alignment, grain=estimate_grain(photo))
    inner = (slice(220, 280), slice(350, 410))
    assert estimate_grain(grainy[inner]).sigma[0] < 1.2 * estimate_grain(plain[inner]).sigma[0]


def test_grain_amount_is_checked():
    from facefix.errors import UsageError
    from facefix.restore.pipeline import RestoreOptions

    with pytest.raises(UsageError, match="--grain"):
        RestoreOptions(grain=3.0)


class _SmoothingRestorers:
    """Stands in for a restorer that removes grain: every face comes back blurred."""

    class _Blur:
        name = "blur"

        def restore(self, crops):
            return np.stack([cv2.GaussianBlur(c, (0, 0), 4.0) for c in crops])

    def get(self, person):
        return self._Blur()


def test_restore_with_grain_gives_a_grainy_sepia_scans_face_the_photos_grain(portrait_photo):
    from facefix.faces import get_analyzer
    from facefix.photos import read_photo
    from facefix.restore.matching import Gallery
    from facefix.restore.pipeline import RestoreOptions, restore_image

    rgb = read_photo(portrait_photo).rgb_float()
    gray = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    sepia = np.stack([gray, gray * 0.85, gray * 0.62], -1)
    scan = np.clip(sepia + _grain(gray.shape, 0.03, 1.0, np.random.default_rng(0), tint=(1.0, 0.85, 0.62)), 0, 1)
    scan = np.round(scan * 255) / 255  # as read from an 8-bit file
    analyzer = get_analyzer("dlib")
    runs = {amount: restore_image(scan, analyzer=analyzer, gallery=Gallery("dlib", {}),
                                  restorers=_SmoothingRestorers(), options=RestoreOptions(grain=amount))
            for amount in (0.0, 1.0)}
    (record,) = runs[1.0].faces
    x0, y0, x1, y1 = (int(v) for v in record.box)
    cx, cy, q = (x0 + x1) // 2, (y0 + y1) // 2, (x1 - x0) // 5
    face = (slice(cy - q, cy + q), slice(cx - q, cx + q))  # the middle of the face, fully restored
    photo = estimate_grain(scan)
    assert photo.mono and photo.sigma[0] == pytest.approx(0.03, rel=0.25)
    smooth, grainy = (estimate_grain(runs[a].rgb[face], blur=photo.blur).sigma[0] for a in (0.0, 1.0))
    assert smooth < 0.5 * photo.sigma[0]  # without --grain the face is smoother than the photo around it
    assert grainy == pytest.approx(photo.sigma[0], rel=0.3)  # with it, as grainy as the photo
    assert np.abs(runs[1.0].rgb[face].mean(axis=(0, 1)) - runs[0.0].rgb[face].mean(axis=(0, 1))).max() < 0.01
    far = np.ones(scan.shape[:2], bool)
    w = x1 - x0
    far[max(0, y0 - w):y1 + w, max(0, x0 - w):x1 + w] = False
    assert np.array_equal(runs[1.0].rgb[far], runs[0.0].rgb[far])  # away from the face nothing changed
