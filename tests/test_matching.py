"""Who gets whose restorer: conservative matching on real embeddings."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facefix.faces import get_analyzer
from facefix.restore.matching import Gallery, assign


@pytest.fixture(scope="module")
def faces(group_photo):
    return get_analyzer("dlib").detect(np.asarray(Image.open(group_photo).convert("RGB")))


def gallery_of(**people) -> Gallery:
    return Gallery(backend="dlib", people={k: np.stack(v) for k, v in people.items()})


def test_auto_matches_only_the_enrolled_face(faces):
    gallery = gallery_of(ross=[faces[1].embedding], phoebe=[faces[4].embedding])
    matches = assign(faces, gallery, threshold=0.92)
    assert [m.person for m in matches] == [None, "ross", None, None, "phoebe", None]
    assert matches[1].reason == "matched" and matches[0].reason == "no-match"


def test_nobody_enrolled_means_generic_for_all(faces):
    matches = assign(faces, Gallery(backend="dlib", people={}), threshold=0.92)
    assert all(m.person is None for m in matches)


def test_requested_person_takes_their_face_or_the_largest(faces, caplog):
    gallery = gallery_of(ross=[faces[1].embedding])
    matches = assign(faces, gallery, person="ross", threshold=0.92)
    assert matches[1].person == "ross" and matches[1].reason == "requested"
    assert sum(m.person == "ross" for m in matches) == 1
    # a name whose references match nobody here: the largest face, with a warning
    stranger = gallery_of(ross=[-faces[1].embedding])
    matches = assign(faces, stranger, person="ross", threshold=0.92)
    assert matches[0].person == "ross" and matches[0].reason == "requested-unmatched"
    assert "no face matches ross" in caplog.text


def test_close_call_between_two_people_goes_to_generic(faces):
    same = faces[1].embedding
    gallery = gallery_of(ross=[same], twin=[same])
    matches = assign(faces, gallery, threshold=0.92)
    assert matches[1].person is None, "no clear lead over the runner-up: not matched"
