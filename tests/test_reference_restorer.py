"""The reference-guided restorer: references chosen, warped and fused where they agree.

Real faces from installed packages: scikit-image's astronaut (re-framed,
re-lit copies of it stand in for her references, so a warp that works brings
back her own detail) and the strangers of insightface's t1.jpg.
"""

from __future__ import annotations

import numpy as np
import pytest

from facefix.faces import estimate_alignment, get_analyzer, warp_face
from facefix.faces.landmarks import aligned_landmarks68, face_region_mask, feature_masks
from facefix.photos import read_photo, samples
from facefix.quality.degrade import degrade_fixed
from facefix.quality.metrics import psnr
from facefix.restorers.guides import (
    GuideSet,
    expression_features,
    landmark_map,
    rank_guides,
    warp_guide,
)
from facefix.restorers.reference import (
    FusionSettings,
    ReferenceRestorer,
    estimate_blur,
    fuse,
    gate_features,
)

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


class Identity:
    """A base restorer that changes nothing, so what changes is the references' doing."""

    name = "identity"

    def restore(self, crops):
        return np.asarray(crops, np.float32).copy()


def _aligned(path, index: int = 0) -> np.ndarray:
    analyzer = get_analyzer("dlib")
    rgb = read_photo(path).rgb_float()
    faces = analyzer.detect((rgb * 255).astype(np.uint8), embed=False)
    return np.clip(warp_face(rgb, estimate_alignment(faces[index].landmarks, 512)), 0.0, 1.0)


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory):
    """Her aligned face, and five aligned re-framed, re-lit copies as references."""
    folder = tmp_path_factory.mktemp("astro_refs")
    clean = _aligned(samples.skimage_image("astronaut.png"))
    refs = [_aligned(p) for p in samples.make_variants(samples.skimage_image("astronaut.png"), folder, count=5, seed=1)]
    return clean, np.stack([(r * 255 + 0.5).astype(np.uint8) for r in refs])


@pytest.fixture(scope="module")
def strangers():
    """The six people of t1.jpg, aligned."""
    return np.stack([(_aligned(samples.insightface_image("t1.jpg"), i) * 255 + 0.5).astype(np.uint8)
                     for i in range(6)])


def _sharpness(img, points):
    import cv2

    mask = face_region_mask(points, img.shape[0]) > 0.5
    return float(cv2.Laplacian(img @ _LUMA, cv2.CV_32F)[mask].var())


def test_her_references_bring_back_her_detail(astronaut):
    clean, refs = astronaut
    bad = degrade_fixed(clean, sigma=4.0, scale=2.0, noise=0.0, jpeg=None, seed=0)
    restorer = ReferenceRestorer(Identity(), GuideSet.from_crops(refs, "astro"))
    # what restore() does (the base changes nothing, so the photo is the base's input), with its decisions
    out, info = restorer.restore_one(bad, original=bad)
    np.testing.assert_array_equal(restorer.restore(bad[None])[0], out)
    assert info["photo_features"]
    points = aligned_landmarks68(clean[None])[0]
    assert info["blur"] >= 2.0, info  # the face was found blurred
    assert info["trust"] > 0.3, info  # her own references agree with her face
    assert _sharpness(out, points) > 3 * _sharpness(bad, points)
    assert psnr(out, clean) > psnr(bad, clean) + 0.3
    assert out.shape == bad.shape and out.dtype == np.float32


def test_a_stranger_adds_little_where_he_disagrees(astronaut, strangers):
    """Detail is taken only where a reference agrees with the face: a stranger's far less."""
    clean, refs = astronaut
    bad = degrade_fixed(clean, sigma=4.0, scale=2.0, noise=0.0, jpeg=None, seed=0)
    own = ReferenceRestorer(Identity(), GuideSet.from_crops(refs[:3], "astro"))
    other = ReferenceRestorer(Identity(), GuideSet.from_crops(strangers[:3], "strangers"))
    own_info = own.restore_one(bad)[1]
    other_out, other_info = other.restore_one(bad)
    assert other_info["trust"] < 0.7 * own_info["trust"], (other_info, own_info)
    # Strangers agree with her in places at the blur scale (eyes are dark everywhere), so
    # some of their detail lands (measured: -0.6 dB here): matching, which gives a face
    # only to a person it is sure of, is what keeps strangers' references away.
    assert psnr(other_out, clean) > psnr(bad, clean) - 1.0


def test_a_sharp_face_is_left_alone(astronaut):
    _, refs = astronaut
    sharp = refs[0].astype(np.float32) / 255.0
    # her references are enlarged from a small face: as sharp as each other, not more
    restorer = ReferenceRestorer(Identity(), GuideSet.from_crops(refs[1:], "astro"),
                                 FusionSettings(min_blur=3.0))
    out, info = restorer.restore_one(sharp)
    assert info["blur"] < 3.0
    np.testing.assert_array_equal(out, sharp)


def test_guides_are_ranked_by_mouth_opening():
    """Closed lips never get the open-mouthed reference first, whatever else matches."""
    face = aligned_landmarks68(np.full((1, 512, 512, 3), 0.5, np.float32))[0]
    opened = face.copy()
    opened[[61, 62, 63], 1] -= 12  # inner upper lip up
    opened[[65, 66, 67], 1] += 12  # inner lower lip down
    assert expression_features(opened)[0] > expression_features(face)[0] + 0.1
    guides = GuideSet(np.zeros((2, 512, 512, 3), np.uint8), np.stack([opened, face + 1.0]))
    order, _ = rank_guides(face, guides)
    assert list(order) == [1, 0]
    order, _ = rank_guides(opened, guides)
    assert list(order) == [0, 1]


def test_warp_lands_features_on_the_face(astronaut):
    """A reference turned and shifted away from the face is brought back onto it."""
    import cv2

    clean, refs = astronaut
    points = aligned_landmarks68(clean[None])[0]
    luma = clean @ _LUMA
    region = face_region_mask(points, 512) > 0.5

    def agreement(img):
        return np.corrcoef((img @ _LUMA)[region], luma[region])[0, 1]

    # the copy that is not mirrored (a mirrored face is another picture)
    best = max(range(len(refs)), key=lambda i: agreement(refs[i].astype(np.float32) / 255.0))
    moved = cv2.warpAffine(refs[best].astype(np.float32) / 255.0, cv2.getRotationMatrix2D((256, 256), 6.0, 1.05)
                           + np.array([[0, 0, 14.0], [0, 0, -9.0]]), (512, 512), borderMode=cv2.BORDER_REFLECT)
    moved_points = aligned_landmarks68(moved[None])[0]
    warped = warp_guide(moved, landmark_map(moved_points, points, 512), luma, blur=3.0)
    assert agreement(moved) < 0.9
    assert agreement(warped) > 0.97, (agreement(moved), agreement(warped))


def test_blur_estimate_follows_the_blur(astronaut):
    clean, refs = astronaut
    points = aligned_landmarks68(clean[None])[0]
    region = face_region_mask(points, 512)
    guides = [warp_guide(r.astype(np.float32) / 255.0, landmark_map(p, points, 512), clean @ _LUMA, blur=2.0)
              for r, p in zip(refs[:2], aligned_landmarks68(refs[:2]))]
    import cv2

    found = [estimate_blur(cv2.GaussianBlur(clean, (0, 0), s) @ _LUMA, [g @ _LUMA for g in guides], region)
             for s in (2.0, 6.0)]
    assert found[1] > found[0] + 2.0, found


def test_fuse_keeps_a_gray_face_gray(astronaut):
    clean, refs = astronaut
    gray = np.repeat((clean @ _LUMA)[..., None], 3, -1)
    bad = degrade_fixed(gray, sigma=4.0, scale=2.0, noise=0.0, jpeg=None, seed=0)
    bad = np.repeat(bad.mean(-1, keepdims=True), 3, -1).astype(np.float32)
    points = aligned_landmarks68(bad[None])[0]
    warped = [warp_guide(r.astype(np.float32) / 255.0, landmark_map(p, points, 512), bad @ _LUMA, blur=6.0)
              for r, p in zip(refs[:2], aligned_landmarks68(refs[:2]))]
    out, _ = fuse(bad, points, warped, FusionSettings(), blur=6.0)
    assert np.abs(out[..., 0] - out[..., 1]).max() < 1e-5 and np.abs(out[..., 1] - out[..., 2]).max() < 1e-5


def test_the_learned_fusions_guides_lose_a_mouth_that_disagrees(astronaut):
    """A guide whose mouth is another mouth (here: her lips painted over with a dark closed line) shows
    the face's own mouth to the learned fusion; her own guide passes whole."""
    import cv2

    clean, refs = astronaut
    bad = degrade_fixed(clean, sigma=8.0, scale=4.0, noise=4.0, jpeg=None, seed=0).astype(np.float32)
    points = aligned_landmarks68(bad[None])[0]
    # refs[2] is not mirrored (0, 1 and 3 are: her lop-sided smile mirrored is another mouth, and the gate
    # refuses those too)
    own = warp_guide(refs[2].astype(np.float32) / 255.0, landmark_map(aligned_landmarks68(refs[2:3])[0], points, 512),
                     bad @ _LUMA, blur=8.0)
    _, mouth = feature_masks(points, 512)
    closed = own.copy()
    lips = mouth > 0.3
    closed[lips] = own[lips].mean(0) * 0.8  # flat lips...
    centre = np.round(points[60:68].mean(0)).astype(int)
    cv2.line(closed, (int(points[48][0]), centre[1]), (int(points[54][0]), centre[1]), (0.15, 0.05, 0.05), 6)
    gated, gates = gate_features(bad, points, [own, closed], 8.0, FusionSettings())
    assert gates[0]["mouth"] > 0.5 and min(gates[0]["left_eye"], gates[0]["right_eye"]) > 0.5
    assert gates[1]["mouth"] == 0.0 and gates[1]["left_eye"] == gates[0]["left_eye"]
    inside = mouth > 0.5
    assert np.abs(gated[1][inside] - bad[inside]).max() < 1e-5  # the face's own mouth, nothing of the guide's
    far = np.ones_like(inside)
    far[int(points[27][1]):, :] = False  # above the nose: eyes and brows untouched by the mouth's gate
    assert np.abs(gated[1][far] - gated[0][far]).max() < 1e-3


def test_two_restore_threads_give_what_one_gives(astronaut):
    """Folder runs restore on several threads (``--devices cpu,cpu``): the landmark predictor
    and the optical flow must not be shared between them (a shared one crashed a run)."""
    from concurrent.futures import ThreadPoolExecutor

    clean, refs = astronaut
    faces = [degrade_fixed(clean, sigma=s, scale=2.0, noise=0.0, jpeg=None, seed=0) for s in (3.0, 4.0, 5.0, 6.0)]
    restorer = ReferenceRestorer(Identity(), GuideSet.from_crops(refs[:3], "astro"))
    alone = [restorer.restore_one(f)[0] for f in faces]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda f: restorer.restore_one(f)[0], faces * 2))
    for i, out in enumerate(together):
        np.testing.assert_array_equal(out, alone[i % len(faces)])


def test_restore_keeps_the_photos_eyes_and_mouth(astronaut):
    """restore() puts the photo's coarse eye and mouth structure back (facefix.restorers.fidelity):
    the references' detail stays everywhere else."""
    from facefix.restorers.fidelity import FidelitySettings, feature_region

    clean, refs = astronaut
    bad = degrade_fixed(clean, sigma=6.0, scale=4.0, noise=0.0, jpeg=None, seed=0)
    guides = GuideSet.from_crops(refs[:3], "astro")
    kept = ReferenceRestorer(Identity(), guides).restore(bad[None])[0]
    free, free_info = ReferenceRestorer(Identity(), guides, fidelity=FidelitySettings(sigma=0)).restore_one(bad, bad)
    assert not free_info["photo_features"]
    np.testing.assert_array_equal(ReferenceRestorer(Identity(), guides).restore_one(bad)[0], free)  # no photo given
    points = aligned_landmarks68(bad[None])[0]
    far = feature_region(points, 512, FidelitySettings()) < 1e-4
    np.testing.assert_allclose(kept[far], free[far], atol=1e-4)
    assert np.abs(kept[~far] - free[~far]).max() > 2.0 / 255  # the features did change
