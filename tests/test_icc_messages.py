"""Warnings about ICC profiles name what the profile is, never "the None ICC profile"."""

from __future__ import annotations

import logging

import numpy as np

from facefix.photos import Photo, PhotoMeta, write_photo
from facefix.photos.metadata import icc_label


def test_an_unreadable_profile_is_called_unreadable(tmp_path, caplog):
    photo = Photo(pixels=np.full((8, 8, 3), 128, np.uint8), meta=PhotoMeta(format="PNG", mode="RGB", icc=b"broken"))
    with caplog.at_level(logging.WARNING, logger="facefix"):
        write_photo(photo, tmp_path / "out.png")
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "unreadable (6-byte) ICC profile" in text and "None" not in text


def test_a_readable_profile_is_named_by_its_colour_space():
    header = bytes(16) + b"GRAY" + bytes(108)
    assert icc_label(header) == "GRAY"
    assert icc_label(None) == "unreadable (0-byte)"
