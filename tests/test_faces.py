"""Face analysis, alignment and paste-back on real photos (dlib backend, offline)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facefix.errors import FaceError, UsageError
from facefix.faces import (
    TEMPLATE_512,
    estimate_alignment,
    face_mask,
    get_analyzer,
    paste_faces,
    resolve_backend,
    warp_face,
)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


@pytest.fixture(scope="module")
def dlib_analyzer():
    return get_analyzer("dlib")


@pytest.fixture(scope="module")
def group(group_photo):
    return np.asarray(Image.open(group_photo).convert("RGB"))


@pytest.fixture(scope="module")
def group_faces(dlib_analyzer, group):
    return dlib_analyzer.detect(group)


def test_group_photo_has_six_faces_with_landmarks_inside_boxes(group_faces):
    assert len(group_faces) == 6
    for face in group_faces:
        x0, y0, x1, y1 = face.box
        assert face.backend == "dlib"
        assert face.landmarks.shape == (5, 2)
        lx, ly = face.landmarks[:, 0], face.landmarks[:, 1]
        assert np.all((lx > x0 - 5) & (lx < x1 + 5) & (ly > y0 - 5) & (ly < y1 + 5))
        # left eye is left of the right eye, eyes above the nose above the mouth
        assert face.landmarks[0, 0] < face.landmarks[1, 0]
        assert face.landmarks[:2, 1].mean() < face.landmarks[2, 1] < face.landmarks[3:, 1].mean()
        assert face.embedding is not None and abs(np.linalg.norm(face.embedding) - 1) < 1e-4
    sizes = [f.eye_mouth for f in group_faces]
    assert sizes == sorted(sizes, reverse=True), "faces come largest first"


def test_alignment_puts_landmarks_on_the_template(group_faces):
    for face in group_faces:
        alignment = estimate_alignment(face.landmarks)
        pts = np.c_[face.landmarks, np.ones(5)] @ alignment.matrix.T
        # a similarity transform cannot fit five points of a turned face
        # exactly, but the eyes land on the template's eye line
        assert np.abs(pts - TEMPLATE_512).mean() < 15
        eyes, template_eyes = pts[:2].mean(axis=0), TEMPLATE_512[:2].mean(axis=0)
        assert np.linalg.norm(eyes - template_eyes) < 12
        back = np.c_[pts, np.ones(5)] @ alignment.inverse.T
        np.testing.assert_allclose(back, face.landmarks, atol=1e-3)


def test_alignment_is_frozen(group_faces):
    alignment = estimate_alignment(group_faces[0].landmarks)
    with pytest.raises(ValueError):
        alignment.inverse[0, 2] = 5.0
    with pytest.raises(ValueError):
        alignment.matrix[0, 0] = 5.0


def test_identity_round_trip_reproduces_the_photo(group, group_faces):
    image = group.astype(np.float32) / 255.0
    alignments = [estimate_alignment(f.landmarks) for f in group_faces]
    crops = [warp_face(image, a) for a in alignments]
    restored = paste_faces(image, crops, alignments)
    assert psnr(restored, image) >= 45.0
    # pasting twice with the same alignments gives the same photo (no state kept)
    again = paste_faces(image, crops, alignments)
    np.testing.assert_array_equal(again, restored)


def test_paste_changes_only_the_faces(group, group_faces):
    image = group.astype(np.float32) / 255.0
    alignments = [estimate_alignment(f.landmarks) for f in group_faces]
    gray = [np.full((512, 512, 3), 0.5, np.float32) for _ in alignments]
    out = paste_faces(image, gray, alignments)
    changed = np.abs(out - image).max(axis=2) > 1e-6
    for face in group_faces:
        cx, cy = face.landmarks[2]
        assert abs(out[int(cy), int(cx)] - 0.5).max() < 1e-2, "face centre replaced"
    # far from every face nothing moves
    assert not changed[-40:, :].any()
    # the blend is soft: pixels between replaced and untouched exist
    weights = np.abs(out - image).max(axis=2)
    partial = (weights > 0.02) & (np.abs(out - 0.5).max(axis=2) > 0.02)
    assert partial.sum() > 100


def test_faces_at_the_border_and_overlapping(group, group_faces):
    face = group_faces[-1]
    x0, y0, x1, y1 = (int(v) for v in face.box)
    # cut the photo through the middle of the face: half of it is outside
    cut = group[:, (x0 + x1) // 2 :].astype(np.float32) / 255.0
    landmarks = face.landmarks - np.array([(x0 + x1) // 2, 0], np.float32)
    alignment = estimate_alignment(landmarks)
    crop = warp_face(cut, alignment)
    assert crop.shape == (512, 512, 3)
    out = paste_faces(cut, [crop], [alignment])
    assert out.shape == cut.shape and psnr(out, cut) >= 45.0
    # two overlapping pastes of the same face: still the photo
    out2 = paste_faces(cut, [crop, crop], [alignment, alignment])
    assert psnr(out2, cut) >= 45.0


def test_upscaled_paste_lands_on_the_scaled_landmarks(group, group_faces):
    image = group.astype(np.float32) / 255.0
    factor = 2
    big = np.zeros((image.shape[0] * factor, image.shape[1] * factor, 3), np.float32)
    face = group_faces[0]
    alignment = estimate_alignment(face.landmarks)
    marker = np.zeros((512, 512, 3), np.float32)
    x, y = TEMPLATE_512[2]  # nose tip
    marker[int(y) - 6 : int(y) + 6, int(x) - 6 : int(x) + 6] = 1.0
    out = paste_faces(big, [marker], [alignment.scaled(factor)])
    ys, xs = np.nonzero(out[:, :, 0] > 0.5)
    expected = (np.r_[TEMPLATE_512[2], 1.0] @ alignment.inverse.T) * factor
    assert abs(xs.mean() - expected[0]) < 4 and abs(ys.mean() - expected[1]) < 4


def test_mask_is_soft_and_zero_at_the_edge():
    mask = face_mask(512)
    assert mask[256, 256] == pytest.approx(1.0, abs=1e-3)
    assert mask[0].max() == 0 and mask[:, -1].max() == 0
    row = mask[256, :256]
    assert np.all(np.diff(row) >= -1e-6), "weights rise monotonically towards the centre"
    assert ((row > 0.05) & (row < 0.95)).sum() > 20, "the fall-off is gradual"


def test_aligned_embedding_matches_detection_embedding(dlib_analyzer, group, group_faces):
    crops = np.stack([warp_face(group, estimate_alignment(f.landmarks)) for f in group_faces])
    emb = dlib_analyzer.embed_aligned(crops)
    detected = np.stack([f.embedding for f in group_faces])
    same = (emb * detected).sum(axis=1)
    assert same.min() > 0.97
    # a face is closer to itself than to any other person in the photo
    sims = emb @ detected.T
    assert np.all(np.argmax(sims, axis=1) == np.arange(len(group_faces)))


def test_portrait_has_one_face(dlib_analyzer, portrait_photo):
    faces = dlib_analyzer.detect(np.asarray(Image.open(portrait_photo).convert("RGB")))
    assert len(faces) == 1


def test_no_face_in_a_flat_image(dlib_analyzer):
    assert dlib_analyzer.detect(np.full((300, 400, 3), 128, np.uint8)) == []


def test_degenerate_landmarks_raise_a_clear_error():
    with pytest.raises(FaceError, match="landmarks are degenerate"):
        estimate_alignment(np.zeros((5, 2), np.float32))


def test_backend_choice_offline():
    assert resolve_backend("auto") == "dlib"  # no insightface pack in a fresh home
    with pytest.raises(UsageError, match="choose one of"):
        resolve_backend("opencv")
    with pytest.raises(FaceError, match="FACEFIX_OFFLINE"):
        get_analyzer("insightface")
