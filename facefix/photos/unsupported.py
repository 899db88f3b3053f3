"""Tell a whole file in a variant facefix cannot decode from a damaged one.

When Pillow refuses a file, its message ("cannot identify", "decoder error")
does not say whether the file is cut short or simply of a kind it does not
decode. These checks look at the file's own structure: if it is complete,
the message names what is unsupported instead of asking to re-copy it.
"""

from __future__ import annotations

import io
import struct

_BMP_COMPRESSIONS = {0: "uncompressed", 1: "RLE8", 2: "RLE4", 3: "bit-field", 4: "JPEG",
                     5: "PNG", 6: "alpha bit-field", 11: "CMYK", 12: "CMYK RLE8", 13: "CMYK RLE4"}
_TIFF_SAMPLE_KINDS = {2: "signed ", 3: "floating-point ", 4: "untyped ", 5: "complex ",
                      6: "complex floating-point "}
# The TIFF compressions Pillow (through libtiff) decodes.
_TIFF_DECODED = {1, 2, 3, 4, 5, 6, 7, 8, 32773, 32946, 34925, 50000}
# Photometric interpretation -> the (samples per pixel, bits) Pillow decodes.
_TIFF_LAYOUTS = {
    0: [((1, 2), (1, 2, 4, 8, 16))], 1: [((1, 2), (1, 2, 4, 8, 16))],
    2: [((3, 4), (8, 16))], 3: [((1,), (1, 2, 4, 8))], 5: [((4, 5), (8, 16))],
    6: [((3,), (8,))], 8: [((3, 4), (8,))],
}

# Formats recognised only to name them in the "not a photo facefix can read" message.
_OTHER_FORMATS = [
    (b"\xff\x0a", "a JPEG XL file"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "a JPEG XL file"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "a JPEG 2000 file"),
    (b"\xffO\xffQ", "a JPEG 2000 file"),
    (b"8BPS", "a Photoshop document (PSD)"),
    (b"%PDF", "a PDF document"),
]


def is_photo_format(data: bytes) -> bool:
    """Whether ``data`` starts like a JPEG, PNG, TIFF, BMP, GIF or WebP file."""
    return (data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
            or data.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"GIF8"))
            or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"))


def other_format(data: bytes) -> str | None:
    """A name for a known non-photo (or not-supported) format, from its first bytes."""
    for magic, name in _OTHER_FORMATS:
        if data.startswith(magic):
            return name
    return None


def describe(data: bytes) -> tuple[str, str] | None:
    """(what is unsupported, the fix) for a complete file Pillow cannot decode, else None.

    None means the file looks cut short or broken (or is of no format this
    knows), so the caller reports it as damaged.
    """
    head = data[:4]
    if head in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return _tiff(data)
    if data.startswith(b"BM"):
        return _bmp(data)
    return None  # Pillow decodes every standard JPEG, PNG, GIF and WebP: a failure is damage


def _tiff(data: bytes) -> tuple[str, str] | None:
    try:
        import tifffile

        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts)]
            if not ends or max(ends) > len(data) or min(page.databytecounts) == 0:
                return None  # pixel data missing: cut short
            bits = int(page.bitspersample)
            kind = int(page.sampleformat)
            compression = int(page.compression)
            compression_name = getattr(page.compression, "name", str(compression))
            photometric = getattr(page.photometric, "name", str(page.photometric))
            photometric_code = page.photometric
            samples = int(page.samplesperpixel)
    except Exception:  # not parseable by tifffile either (or no tifffile): damaged
        return None
    fix = "save it as an 8- or 16-bit RGB TIFF or PNG in an image editor"
    if kind in _TIFF_SAMPLE_KINDS:
        return f"a TIFF with {bits}-bit {_TIFF_SAMPLE_KINDS[kind]}samples", fix
    if bits not in (1, 2, 4, 8, 16):
        return f"a TIFF with {bits}-bit samples", fix
    if compression not in _TIFF_DECODED:
        return f"a TIFF compressed with {compression_name} (compression {compression})", fix
    layouts = _TIFF_LAYOUTS.get(int(photometric_code), ())
    if not any(samples in s and bits in b for s, b in layouts):
        return f"a TIFF of {samples} {bits}-bit samples per pixel ({photometric})", fix
    return None  # a layout Pillow decodes: the data itself is broken


def _bmp(data: bytes) -> tuple[str, str] | None:
    try:
        offbits, header = struct.unpack_from("<II", data, 10)
        if header < 40:  # OS/2 1.x core header: Pillow decodes all of these
            return None
        bits, compression = struct.unpack_from("<HI", data, 28)
    except struct.error:
        return None
    if len(data) <= offbits:
        return None  # no pixel data: cut short
    fix = "convert it to PNG in an image editor"
    name = _BMP_COMPRESSIONS.get(compression, f"unknown (compression {compression})")
    if compression in (4, 5, 11, 12, 13):
        return f"a BMP holding {name} data (compression {compression})", fix
    if compression in (3, 6):
        try:
            masks = struct.unpack_from("<IIII" if compression == 6 or header >= 56 else "<III",
                                       data, 54)
        except struct.error:
            return None
        shown = "/".join(f"0x{m:X}" for m in masks)
        return f"a BMP with {bits}-bit pixels in the bit-field layout {shown}", fix
    if bits not in (1, 2, 4, 8, 16, 24, 32):
        return f"a BMP with {bits}-bit pixels", fix
    if compression not in _BMP_COMPRESSIONS:
        return f"a BMP with {name} compression", fix
    return None
