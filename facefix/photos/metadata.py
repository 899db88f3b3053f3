"""Metadata helpers: EXIF/XMP orientation reset, JPEG quality estimate, ICC checks."""

from __future__ import annotations

import logging
import re
import struct

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

EXIF_PREFIX = b"Exif\x00\x00"
ORIENTATION = 0x0112

# The IJG (libjpeg) base tables, natural order, as Pillow reports them.
_IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
])  # fmt: skip
_IJG_CHROMA = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
] + [99] * 32)  # fmt: skip

SUBSAMPLING_NAMES = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}

# IFD0 tags of a TIFF that describe the photo (not its pixel layout); only
# these go into the EXIF written to other formats.
_TIFF_DESCRIPTIVE_TAGS = (
    269, 270, 271, 272, 274, 282, 283, 296, 305, 306, 315, 33432, 0x8769, 0x8825,
)


def _ijg_table(base: np.ndarray, quality: int) -> np.ndarray:
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((base * scale + 50) // 100, 1, 255)


def estimate_jpeg_quality(qtables: dict[int, list[int]] | None) -> int | None:
    """The IJG quality whose scaled standard tables are closest to ``qtables``.

    Exact for files written by libjpeg-based encoders (Pillow, GIMP, most
    software); for cameras and other encoders it is the nearest equivalent.

    Args:
        qtables: Pillow's ``JpegImageFile.quantization`` (natural order).

    Returns:
        A quality in 1..100, or None without tables.
    """
    if not qtables or 0 not in qtables:
        return None
    luma = np.asarray(qtables[0], dtype=np.int64)
    chroma = np.asarray(qtables[1], dtype=np.int64) if 1 in qtables else None
    if luma.size != 64 or (chroma is not None and chroma.size != 64):
        return None
    best, best_err = None, None
    for q in range(1, 101):
        err = np.abs(_ijg_table(_IJG_LUMA, q) - luma).sum()
        if chroma is not None:
            err += np.abs(_ijg_table(_IJG_CHROMA, q) - chroma).sum()
        if best_err is None or err < best_err:
            best, best_err = q, err
    return best


def _tiff_body(exif: bytes) -> bytes:
    return exif[len(EXIF_PREFIX):] if exif.startswith(EXIF_PREFIX) else exif


def reset_exif_orientation(exif: bytes) -> bytes | None:
    """EXIF with Orientation set to 1, everything else byte-identical.

    Patching the value in place keeps maker notes and any offsets valid,
    which re-serialising with Pillow would not. Falls back to Pillow for
    unusual layouts; returns None (with a warning) for unreadable EXIF.

    Args:
        exif: EXIF as found in the file, with or without the ``Exif\\0\\0`` header.

    Returns:
        ``b"Exif\\0\\0"`` + TIFF structure, or None.
    """
    body = _tiff_body(exif)
    try:
        order = {b"II*\x00": "<", b"MM\x00*": ">"}[body[:4]]
        (ifd,) = struct.unpack_from(order + "I", body, 4)
        (count,) = struct.unpack_from(order + "H", body, ifd)
        patched = bytearray(body)
        for i in range(count):
            entry = ifd + 2 + 12 * i
            tag, kind, n = struct.unpack_from(order + "HHI", body, entry)
            if tag != ORIENTATION:
                continue
            if n != 1 or kind not in (3, 4):  # SHORT or LONG, one value
                raise ValueError("unusual Orientation entry")
            struct.pack_into(order + ("H" if kind == 3 else "I"), patched, entry + 8, 1)
        return EXIF_PREFIX + bytes(patched)
    except (KeyError, ValueError, struct.error):
        pass
    try:
        parsed = Image.Exif()
        parsed.load(body)
        if ORIENTATION in parsed:
            parsed[ORIENTATION] = 1
        return parsed.tobytes()
    except Exception as exc:  # Pillow raises many kinds on malformed EXIF
        logger.warning("unreadable EXIF dropped (%s)", exc)
        return None


def exif_from_tiff_tags(exif: Image.Exif) -> bytes | None:
    """EXIF for a TIFF source: its descriptive IFD0 tags and EXIF/GPS sub-IFDs.

    A TIFF's IFD0 also holds its pixel layout (strip offsets, bits per sample);
    copying those into another file's EXIF would describe the wrong image.
    """
    out = Image.Exif()
    found = False
    for tag in _TIFF_DESCRIPTIVE_TAGS:
        if tag in (0x8769, 0x8825):
            sub = exif.get_ifd(tag)
            if sub:  # get_ifd on the new Exif creates the sub-IFD tobytes() writes
                out.get_ifd(tag).update(sub)
                found = True
        elif tag in exif:
            out[tag] = exif[tag]
            found = True
    if ORIENTATION in out:
        out[ORIENTATION] = 1
    return out.tobytes() if found else None


_XMP_ORIENTATION = [
    re.compile(rb"(tiff:Orientation\s*=\s*[\"'])\d([\"'])"),
    re.compile(rb"(<tiff:Orientation>\s*)\d(\s*</tiff:Orientation>)"),
]


def reset_xmp_orientation(xmp: bytes) -> bytes:
    """XMP with any tiff:Orientation set to 1, so no viewer rotates again."""
    for pattern in _XMP_ORIENTATION:
        xmp = pattern.sub(rb"\g<1>1\g<2>", xmp)
    return xmp


#: The data colour-space signatures the ICC specification defines (ICC.1:2022, table 19):
#: the header's bytes 16-20 hold one of these in a profile that can be read.
ICC_COLOR_SPACES = frozenset(
    [b"XYZ ", b"Lab ", b"Luv ", b"YCbr", b"Yxy ", b"RGB ", b"GRAY", b"HSV ", b"HLS ", b"CMYK", b"CMY "]
    + [f"{n:X}CLR".encode() for n in range(2, 16)]  # 2CLR .. FCLR: 2 to 15 colorants
)


def icc_color_space(icc: bytes | None) -> str | None:
    """The data colour space an ICC profile declares ("RGB", "GRAY", "CMYK", ...), or None
    when its header holds no colour-space signature the ICC specification defines (junk
    read as a profile: its bytes 16-20 are not a colour space and are never shown)."""
    if not icc or len(icc) < 20 or icc[16:20] not in ICC_COLOR_SPACES:
        return None
    return icc[16:20].decode("ascii").strip()


def icc_label(icc: bytes | None) -> str:
    """How to name a profile in a message: its colour space, or that it cannot be read."""
    space = icc_color_space(icc)
    return space if space else f"unreadable ({len(icc or b'')}-byte)"


def icc_fits(icc: bytes | None, channels: int) -> bool:
    """Whether an ICC profile describes pixels with this many colour channels."""
    space = icc_color_space(icc)
    return space == ("GRAY" if channels <= 2 else "RGB")


def normalize_dpi(dpi: object) -> tuple[float, float] | None:
    """(x, y) DPI rounded to 0.01 (PNG stores dots per metre), or None if unset."""
    try:
        x, y = (round(float(v), 2) for v in dpi[:2])  # type: ignore[index]
    except (TypeError, ValueError, IndexError):
        return None
    return (x, y) if x > 0 and y > 0 else None
