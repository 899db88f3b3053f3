"""Warnings about ICC profiles name what the profile is, never "the None ICC profile"."""

from __future__ import annotations

import logging

import numpy as np

from facefix.photos import Photo, PhotoMeta, write_photo
from facefix.photos.metadata import icc_fits, icc_label


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


def test_junk_of_twenty_bytes_or_more_is_unreadable_not_named_by_its_bytes(tmp_path, caplog):
    # A bad iCCP chunk: bytes 16-20 of this text are "le a", which used to be printed as
    # "the le a ICC profile does not fit RGB pixels".
    junk = b"not an ICC profile a bad chunk"
    assert junk[16:20] == b"le a"
    assert icc_label(junk) == f"unreadable ({len(junk)}-byte)"
    photo = Photo(pixels=np.full((8, 8, 3), 128, np.uint8), meta=PhotoMeta(format="PNG", mode="RGB", icc=junk))
    with caplog.at_level(logging.WARNING, logger="facefix"):
        write_photo(photo, tmp_path / "out.png")
    text = " ".join(r.getMessage() for r in caplog.records)
    assert f"the unreadable ({len(junk)}-byte) ICC profile does not fit RGB pixels" in text and "le a" not in text


def test_every_colour_space_signature_of_the_icc_spec_is_named_and_nothing_else():
    def header(signature: bytes) -> bytes:
        return bytes(16) + signature + bytes(108)

    spec = [b"XYZ ", b"Lab ", b"Luv ", b"YCbr", b"Yxy ", b"RGB ", b"GRAY", b"HSV ", b"HLS ", b"CMYK", b"CMY ",
            *(f"{c}CLR".encode() for c in "23456789ABCDEF")]
    assert len(spec) == 25
    for signature in spec:
        assert icc_label(header(signature)) == signature.decode().strip()
    # Near misses: wrong case, no padding, one colorant, a device class or the file signature.
    for signature in (b"rgb ", b"RGB\x00", b"1CLR", b"GCLR", b"mntr", b"acsp", b"\xff\xfe\x00\x01"):
        assert icc_label(header(signature)) == "unreadable (128-byte)"
    assert icc_fits(header(b"RGB "), 3) and not icc_fits(header(b"le a"), 3)
