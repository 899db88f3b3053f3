"""Choosing references: each kind of bad photo is rejected with its reason."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from facefix.enroll.select import scan_photos, select_references
from facefix.faces import get_analyzer
from facefix.photos import samples


@pytest.fixture(scope="module")
def analyzer():
    return get_analyzer("dlib")


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, portrait_photo):
    folder = tmp_path_factory.mktemp("refs")
    good = samples.make_variants(portrait_photo, folder, count=4, seed=1)
    sub = folder / "more"
    sub.mkdir()
    shutil.copy(samples.insightface_image("Tom_Hanks_54745.png"), sub / "someone_else.png")
    shutil.copy(samples.skimage_image("coffee.png"), folder / "coffee.png")
    with Image.open(portrait_photo) as im:
        im.convert("RGB").resize((280, 280)).save(folder / "tiny.jpg")
    shutil.copy(good[0], folder / "copy_of_first.JPG")
    (folder / "notes.jpg").write_text("not a photo")
    (folder / "readme.txt").write_text("ignored: not a photo suffix")
    return folder


def test_scan_is_recursive_and_case_insensitive(mixed_folder):
    names = {p.name for p in scan_photos(mixed_folder)}
    assert "someone_else.png" in names and "copy_of_first.JPG" in names
    assert "readme.txt" not in names


def test_each_bad_photo_is_rejected_with_its_reason(mixed_folder, analyzer):
    selection = select_references(scan_photos(mixed_folder), analyzer, min_face=30)
    reasons = {r.path.name: r.reason for r in selection.rejected}
    assert {c.path.name for c in selection.accepted} == {f"astronaut_{i:02d}.jpg" for i in range(4)}
    assert reasons["someone_else.png"].startswith("a different person")
    assert reasons["coffee.png"] == "no face found"
    assert reasons["tiny.jpg"].startswith("too small")
    assert reasons["copy_of_first.JPG"].startswith("duplicate of")
    assert reasons["notes.jpg"].startswith("unreadable") and "notes.jpg" in reasons["notes.jpg"]
    for cand in selection.accepted:
        assert cand.crop.shape == (512, 512, 3) and cand.crop.dtype == np.uint8
        assert len(cand.sha256) == 64


def test_known_references_anchor_the_identity(mixed_folder, analyzer):
    first = select_references(scan_photos(mixed_folder), analyzer, min_face=30)
    known = np.stack([c.face.embedding for c in first.accepted])
    again = select_references(scan_photos(mixed_folder), analyzer, min_face=30, known=known,
                              known_hashes=[c.sha256 for c in first.accepted])
    assert not again.accepted
    assert sum(r.reason.startswith("duplicate") for r in again.rejected) >= 4


def test_group_photo_picks_the_person_by_consensus(tmp_path, analyzer, group_photo):
    # Six faces in one photo: the person's face is chosen against the
    # known references of one of them (as with --add).
    image = np.asarray(Image.open(group_photo).convert("RGB"))
    faces = analyzer.detect(image)
    target = faces[2]
    Image.fromarray(image).save(tmp_path / "group.jpg", quality=95)
    selection = select_references([tmp_path / "group.jpg"], analyzer, min_face=30,
                                  known=target.embedding[None])
    assert len(selection.accepted) == 1
    chosen = selection.accepted[0].face
    assert np.allclose(chosen.landmarks, target.landmarks, atol=3)
