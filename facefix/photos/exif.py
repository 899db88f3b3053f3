"""EXIF that matches upright pixels: orientation 1, the right size, an upright thumbnail.

Everything is patched in place in the TIFF structure, so maker notes and every
other offset stay valid (re-serialising with Pillow would move them). A new
thumbnail that does not fit where the old one was is appended at the end.
"""

from __future__ import annotations

import io
import logging
import struct

from PIL import Image, JpegImagePlugin

from facefix.photos import metadata as md

logger = logging.getLogger(__name__)

EXIF_IFD, EXIF_WIDTH, EXIF_HEIGHT = 0x8769, 0xA002, 0xA003
THUMB_OFFSET, THUMB_LENGTH = 0x0201, 0x0202
IMAGE_WIDTH, IMAGE_LENGTH = 0x0100, 0x0101
MAX_APP1 = 65533 - len(md.EXIF_PREFIX)  # what one JPEG APP1 segment can hold

# EXIF orientation -> the Pillow transpose that makes the stored pixels upright
# (as PIL.ImageOps.exif_transpose).
TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class _Tiff:
    """A mutable TIFF structure (the EXIF body) with its byte order."""

    def __init__(self, body: bytes) -> None:
        self.order = {b"II*\x00": "<", b"MM\x00*": ">"}[body[:4]]
        self.data = bytearray(body)

    def unpack(self, fmt: str, offset: int) -> tuple:
        return struct.unpack_from(self.order + fmt, self.data, offset)

    def pack(self, fmt: str, offset: int, *values) -> None:
        struct.pack_into(self.order + fmt, self.data, offset, *values)

    def entries(self, ifd: int) -> dict[int, tuple[int, int, int]]:
        """tag -> (type, count, entry offset) of the IFD at ``ifd``."""
        (count,) = self.unpack("H", ifd)
        found = {}
        for i in range(count):
            entry = ifd + 2 + 12 * i
            tag, kind, n = self.unpack("HHI", entry)
            found[tag] = (kind, n, entry)
        return found

    def next_ifd_field(self, ifd: int) -> int:
        (count,) = self.unpack("H", ifd)
        return ifd + 2 + 12 * count

    def value(self, entry: tuple[int, int, int]) -> int:
        kind, n, offset = entry
        if n != 1 or kind not in (3, 4):
            raise ValueError("not a single SHORT or LONG")
        return self.unpack("H" if kind == 3 else "I", offset + 8)[0]

    def set_value(self, entry: tuple[int, int, int], value: int) -> None:
        kind, n, offset = entry
        if n != 1 or kind not in (3, 4) or (kind == 3 and value > 0xFFFF):
            raise ValueError("value does not fit the entry")
        self.pack("H" if kind == 3 else "I", offset + 8, value)


def set_exif_size(exif: bytes, size: tuple[int, int]) -> bytes:
    """EXIF whose ExifImageWidth/Height, where present, are ``size`` (width, height).

    Args:
        exif: ``b"Exif\\0\\0"`` + TIFF structure.
        size: the pixels' (width, height) as written.
    """
    try:
        tiff = _Tiff(exif[len(md.EXIF_PREFIX):] if exif.startswith(md.EXIF_PREFIX) else exif)
        ifd0 = tiff.entries(tiff.unpack("I", 4)[0])
        if EXIF_IFD not in ifd0:
            return exif
        sub = tiff.entries(tiff.value(ifd0[EXIF_IFD]))
        for tag, value in ((EXIF_WIDTH, size[0]), (EXIF_HEIGHT, size[1])):
            if tag in sub:
                tiff.set_value(sub[tag], value)
        return md.EXIF_PREFIX + bytes(tiff.data)
    except (KeyError, ValueError, struct.error):
        pass
    try:  # an unusual layout: let Pillow rewrite it
        parsed = Image.Exif()
        parsed.load(exif[len(md.EXIF_PREFIX):] if exif.startswith(md.EXIF_PREFIX) else exif)
        sub = parsed.get_ifd(EXIF_IFD)
        for tag, value in ((EXIF_WIDTH, size[0]), (EXIF_HEIGHT, size[1])):
            if tag in sub:
                sub[tag] = value
        return parsed.tobytes()
    except Exception as exc:  # Pillow raises many kinds on malformed EXIF
        logger.warning("EXIF image size not updated (%s)", exc)
        return exif


def _turn_thumbnail(jpeg: bytes, orientation: int) -> tuple[bytes, tuple[int, int]]:
    with Image.open(io.BytesIO(jpeg)) as im:
        if not isinstance(im, JpegImagePlugin.JpegImageFile):
            raise ValueError(f"the EXIF thumbnail is {im.format}, not JPEG")
        im.load()
        quality = md.estimate_jpeg_quality(im.quantization) or 90
        sampling = md.SUBSAMPLING_NAMES.get(JpegImagePlugin.get_sampling(im), "4:2:0")
        turned = im.transpose(TRANSPOSE[orientation])
    out = io.BytesIO()
    params = {"subsampling": sampling} if turned.mode == "RGB" else {}
    turned.save(out, "JPEG", quality=quality, **params)
    return out.getvalue(), turned.size


def _upright_thumbnail(tiff: _Tiff, orientation: int) -> None:
    """Turn the IFD1 thumbnail the way the pixels were turned (in place)."""
    ifd0 = tiff.unpack("I", 4)[0]
    link = tiff.next_ifd_field(ifd0)
    (ifd1,) = tiff.unpack("I", link)
    if not ifd1:
        return
    thumb = tiff.entries(ifd1)
    if THUMB_OFFSET not in thumb or THUMB_LENGTH not in thumb:
        logger.warning("EXIF thumbnail is not a JPEG; dropped as it no longer matches the photo")
        tiff.pack("I", link, 0)
        return
    start, length = tiff.value(thumb[THUMB_OFFSET]), tiff.value(thumb[THUMB_LENGTH])
    old = bytes(tiff.data[start:start + length])
    try:
        new, (tw, th) = _turn_thumbnail(old, orientation)
    except (OSError, SyntaxError, ValueError) as exc:
        logger.warning("EXIF thumbnail unreadable (%s); dropped", exc)
        tiff.pack("I", link, 0)
        return
    tiff.data[start:start + length] = bytes(length)  # no sideways copy left behind
    if len(new) <= length:
        tiff.data[start:start + len(new)] = new
    else:
        start = len(tiff.data)
        tiff.data += new
        if len(tiff.data) > MAX_APP1:
            del tiff.data[start:]
            logger.warning("EXIF thumbnail does not fit once turned upright; dropped")
            tiff.pack("I", link, 0)
            return
        tiff.set_value(thumb[THUMB_OFFSET], start)
    tiff.set_value(thumb[THUMB_LENGTH], len(new))
    for tag, value in ((IMAGE_WIDTH, tw), (IMAGE_LENGTH, th)):
        if tag in thumb:
            tiff.set_value(thumb[tag], value)


def upright_exif(exif: bytes, orientation: int, size: tuple[int, int]) -> bytes | None:
    """EXIF for pixels that have been turned upright from ``orientation``.

    Orientation becomes 1, ExifImageWidth/Height become ``size`` and the IFD1
    thumbnail is turned the same way as the pixels. Returns None (with a
    warning) for EXIF that cannot be read at all.

    Args:
        exif: the EXIF found in the file, with or without ``b"Exif\\0\\0"``.
        orientation: the EXIF orientation that was applied to the pixels.
        size: the upright pixels' (width, height).
    """
    reset = md.reset_exif_orientation(exif)
    if reset is None:
        return None
    if orientation in TRANSPOSE:
        try:
            tiff = _Tiff(reset[len(md.EXIF_PREFIX):])
            _upright_thumbnail(tiff, orientation)
            reset = md.EXIF_PREFIX + bytes(tiff.data)
        except (KeyError, ValueError, struct.error) as exc:
            logger.warning("EXIF thumbnail not turned upright (%s)", exc)
    return set_exif_size(reset, size)
