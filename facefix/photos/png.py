"""PNG chunks: the colour and text chunks kept through a restore, and APNG's still image."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks that describe the photo, not its pixel layout, so they stay true for
# restored pixels: text (captions, Software, Creation Time, ...), colour space
# (gamma, chromaticities, sRGB intent, cICP) and the modification time. XMP
# travels in PhotoMeta.xmp; ImageMagick's raw EXIF profile would carry the old
# orientation next to the eXIf written from PhotoMeta.exif.
KEPT = (b"tEXt", b"zTXt", b"iTXt", b"gAMA", b"cHRM", b"sRGB", b"cICP", b"tIME")
_SKIPPED_KEYS = (b"XML:com.adobe.xmp", b"Raw profile type exif", b"Raw profile type APP1")
_ANIMATION = (b"acTL", b"fcTL", b"fdAT")


def chunks(data: bytes) -> Iterator[tuple[bytes, bytes, int, int]]:
    """(type, data, start, end) of each chunk, in order, stopping at IEND or a broken one."""
    pos = len(SIGNATURE)
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        end = pos + 12 + length
        if end > len(data):
            return
        kind = data[pos + 4:pos + 8]
        yield kind, data[pos + 8:pos + 8 + length], pos, end
        if kind == b"IEND":
            return
        pos = end


def kept_chunks(data: bytes) -> tuple[tuple[bytes, bytes], ...]:
    """The chunks of :data:`KEPT` in a PNG file, as (type, data), in file order."""
    if not data.startswith(SIGNATURE):
        return ()
    found = []
    for kind, body, _, _ in chunks(data):
        if kind not in KEPT:
            continue
        if kind in (b"tEXt", b"zTXt", b"iTXt") and body.split(b"\x00", 1)[0] in _SKIPPED_KEYS:
            continue
        found.append((kind, body))
    return tuple(found)


def still_image(data: bytes) -> bytes:
    """An APNG's default image as a plain PNG (the animation chunks removed)."""
    if not data.startswith(SIGNATURE):
        return data
    parts = [SIGNATURE]
    for kind, _, start, end in chunks(data):
        if kind not in _ANIMATION:
            parts.append(data[start:end])
    return b"".join(parts)


def chunk(kind: bytes, body: bytes) -> bytes:
    """One encoded chunk: length, type, data, CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
