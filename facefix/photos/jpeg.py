"""JPEG segments Pillow reads but does not write back: IPTC/Photoshop (APP13),
comments (COM) and the MPF index of phone JPEGs with extra pictures; and the
encoding settings (quantization tables, chroma subsampling, progressive).
"""

from __future__ import annotations

import io
import logging
import struct

import cv2
import numpy as np
from PIL import Image, JpegImagePlugin

from facefix.common.quiet import c_output_caught
from facefix.photos import metadata as md
from facefix.photos.exif import TRANSPOSE

logger = logging.getLogger(__name__)

PHOTOSHOP = b"Photoshop 3.0\x00"
IPTC_RESOURCE = 0x0404
_MAX_SEGMENT = 65533
# (luma horizontal, vertical) sampling with chroma at 1×1 -> name
_SAMPLINGS = {(1, 1): "4:4:4", (2, 1): "4:2:2", (2, 2): "4:2:0", (1, 2): "4:4:0", (4, 1): "4:1:1"}
ENCODER_SUBSAMPLINGS = ("4:4:4", "4:2:2", "4:2:0")  # what Pillow's encoder writes
# What OpenCV's libjpeg writes besides (see encode_with_opencv).
OPENCV_SUBSAMPLINGS = {"4:4:0": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_440,
                       "4:1:1": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_411}
MP_PRIMARY = 0x030000  # MP type "Baseline MP Primary Image"


def subsampling_name(im: JpegImagePlugin.JpegImageFile) -> str | None:
    """The chroma subsampling of a 3-layer JPEG, e.g. "4:2:0", or None if unusual."""
    layers = im.layer  # set by JpegImageFile when it reads the frame header
    if not layers or len(layers) != 3 or any(layer[1:3] != (1, 1) for layer in layers[1:]):
        return None
    return _SAMPLINGS.get(tuple(layers[0][1:3]))


def photoshop_block(im: JpegImagePlugin.JpegImageFile) -> bytes | None:
    """The Photoshop image resource block from the APP13 segments, joined, or None."""
    parts = [body[len(PHOTOSHOP):] for name, body in im.applist
             if name == "APP13" and body.startswith(PHOTOSHOP)]
    return b"".join(parts) or None


def comments(im: JpegImagePlugin.JpegImageFile) -> tuple[bytes, ...]:
    """Every COM segment's text, in file order."""
    return tuple(body for name, body in im.applist if name == "COM")


def iptc_from_photoshop(block: bytes | None) -> bytes | None:
    """The IPTC-IIM records (resource 0x0404) inside a Photoshop resource block."""
    for rid, data in _resources(block or b""):
        if rid == IPTC_RESOURCE:
            return data
    return None


def photoshop_from_iptc(iptc: bytes) -> bytes:
    """A Photoshop resource block holding only the IPTC records."""
    return (b"8BIM" + struct.pack(">H", IPTC_RESOURCE) + b"\x00\x00"
            + struct.pack(">I", len(iptc)) + iptc + b"\x00" * (len(iptc) % 2))


def _resources(block: bytes):
    pos = 0
    while pos + 12 <= len(block) and block[pos:pos + 4] == b"8BIM":
        (rid,) = struct.unpack_from(">H", block, pos + 4)
        name_len = block[pos + 6]
        pos += 6 + name_len + 1 + ((name_len + 1) % 2)  # Pascal name padded to even
        if pos + 4 > len(block):
            return
        (size,) = struct.unpack_from(">I", block, pos)
        yield rid, block[pos + 4:pos + 4 + size]
        pos += 4 + size + size % 2


def segments(photoshop: bytes | None, comments: tuple[bytes, ...]) -> bytes:
    """APP13 (split as needed) and COM segments, to pass to Pillow as ``extra``."""
    out = b""
    step = _MAX_SEGMENT - len(PHOTOSHOP)
    for i in range(0, len(photoshop or b""), step):
        body = PHOTOSHOP + photoshop[i:i + step]
        out += b"\xff\xed" + struct.pack(">H", len(body) + 2) + body
    for text in comments:
        out += b"\xff\xfe" + struct.pack(">H", len(text[:_MAX_SEGMENT]) + 2) + text[:_MAX_SEGMENT]
    return out


def _mp_header_offset(data: bytes) -> int | None:
    """Where the MPF APP2 segment's TIFF header starts in the file, if it has one."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker in (0xDA, 0xD9):  # start of scan / end of image
            return None
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker == 0xE2 and data[pos + 4:pos + 8] == b"MPF\x00":
            return pos + 8
        pos += 2 + length
    return None


def mpf_images(data: bytes, orientation: int = 1) -> tuple[tuple[int, bytes], ...]:
    """The pictures after the first that a JPEG's MPF index lists, as (MP attribute, bytes).

    They follow the primary picture's EXIF orientation (a gain map must lie
    over its photo), so when the photo is turned upright they are turned too.
    """
    base = _mp_header_offset(data)
    if base is None:
        return ()
    try:
        order = {b"II*\x00": "<", b"MM\x00*": ">"}[data[base:base + 4]]
        (ifd,) = struct.unpack_from(order + "I", data, base + 4)
        (count,) = struct.unpack_from(order + "H", data, base + ifd)
        table = None
        for i in range(count):
            tag, _, n, value = struct.unpack_from(order + "HHII", data, base + ifd + 2 + 12 * i)
            if tag == 0xB002:
                table = (n, value)
        if table is None:
            return ()
        found = []
        n, start = table
        for k in range(1, n // 16):
            attr, size, offset, _, _ = struct.unpack_from(order + "IIIHH", data, base + start + 16 * k)
            picture = data[base + offset:base + offset + size]
            if len(picture) != size or not picture.startswith(b"\xff\xd8"):
                logger.warning("MPF picture %d is missing or damaged; not kept", k + 1)
                continue
            if orientation in TRANSPOSE:
                try:
                    picture = _turn_picture(picture, orientation)
                except (OSError, SyntaxError, ValueError) as exc:
                    logger.warning("MPF picture %d could not be turned upright (%s); not kept",
                                   k + 1, exc)
                    continue
            found.append((attr, picture))
        return tuple(found)
    except (KeyError, struct.error):
        logger.warning("the MPF index is unreadable; the extra pictures are not kept")
        return ()


def mpf_placeholder(count: int) -> bytes:
    """An APP2 MPF segment sized for ``count`` pictures, to fill in with :func:`join_mpf`."""
    return b"\xff\xe2" + struct.pack(">H", 2 + 4 + 50 + 16 * count) + b"MPF\x00" + bytes(50 + 16 * count)


def join_mpf(main: bytes, pictures: tuple[tuple[int, bytes], ...]) -> bytes:
    """``main`` (written with :func:`mpf_placeholder`) followed by ``pictures``, indexed."""
    base = _mp_header_offset(main)
    if base is None:
        raise ValueError("the MPF placeholder segment is missing")
    n = 1 + len(pictures)
    entries = struct.pack("<IIIHH", MP_PRIMARY, len(main), 0, 0, 0)
    at = len(main)
    for attr, picture in pictures:
        entries += struct.pack("<IIIHH", attr, len(picture), at - base, 0, 0)
        at += len(picture)
    ifd = (b"II*\x00" + struct.pack("<IH", 8, 3)
           + struct.pack("<HHI4s", 0xB000, 7, 4, b"0100")
           + struct.pack("<HHII", 0xB001, 4, 1, n)
           + struct.pack("<HHII", 0xB002, 7, 16 * n, 50)
           + struct.pack("<I", 0) + entries)
    patched = bytearray(main)
    patched[base:base + len(ifd)] = ifd
    return bytes(patched) + b"".join(picture for _, picture in pictures)


def _metadata_end(data: bytes) -> int:
    """Where the APPn/COM segments after SOI end (the tables and the scan begin)."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF and (0xE0 <= data[pos + 1] <= 0xEF
                                                         or data[pos + 1] == 0xFE):
        (length,) = struct.unpack_from(">H", data, pos + 2)
        pos += 2 + length
    return pos


def encode_with_opencv(rgb: np.ndarray, header: bytes, *, quality: int, sampling: str,
                       progressive: bool) -> bytes:
    """A JPEG in a chroma subsampling Pillow's encoder lacks (4:4:0, 4:1:1).

    OpenCV's libjpeg encodes the pixels; the metadata segments (JFIF, EXIF,
    XMP, ICC, APP13, COM, MPF) are those of ``header``, a JPEG Pillow wrote
    with the same metadata, so both paths carry exactly the same.
    """
    flags = [cv2.IMWRITE_JPEG_QUALITY, int(quality),
             cv2.IMWRITE_JPEG_SAMPLING_FACTOR, OPENCV_SUBSAMPLINGS[sampling],
             cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)]
    ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), flags)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {sampling} JPEG")
    body = encoded.tobytes()
    return b"\xff\xd8" + header[2:_metadata_end(header)] + body[_metadata_end(body):]


def _turn_picture(picture: bytes, orientation: int) -> bytes:
    """An MPF picture turned upright: its own segments kept (EXIF orientation set to
    1), its pixels re-encoded with its own quantization tables and subsampling."""
    with Image.open(io.BytesIO(picture)) as im:
        if not isinstance(im, JpegImagePlugin.JpegImageFile):
            raise ValueError(f"the MPF picture is {im.format}, not JPEG")
        im.load()
        tables = im.quantization
        sampling = subsampling_name(im) if im.mode == "RGB" else None
        turned = im.transpose(TRANSPOSE[orientation])
    params: dict = {"qtables": [tables[k] for k in sorted(tables)]} if tables else {"quality": 90}
    if sampling:
        params["subsampling"] = sampling if sampling in ENCODER_SUBSAMPLINGS else "4:4:4"
    out = io.BytesIO()
    with c_output_caught():  # libjpeg's notes ("Caution: quantization tables are too coarse")
        turned.save(out, "JPEG", **params)
    body = out.getvalue()
    header, pos = b"", 2
    end = _metadata_end(picture)
    while pos < end:
        (length,) = struct.unpack_from(">H", picture, pos + 2)
        marker, payload = picture[pos:pos + 2], picture[pos + 4:pos + 2 + length]
        if marker == b"\xff\xe1" and payload.startswith(md.EXIF_PREFIX):
            payload = md.reset_exif_orientation(payload) or b""
        if payload:
            header += marker + struct.pack(">H", len(payload) + 2) + payload
        pos += 2 + length
    return b"\xff\xd8" + header + body[_metadata_end(body):]
