"""BMP alpha and ICC profiles, which Pillow's BMP plugin does not keep.

Pillow reads a 32-bit uncompressed BMP as RGB (the fourth byte as padding)
and ignores a BITMAPV5HEADER's embedded ICC profile; its writer has neither.
Here: the alpha and profile are read from the file itself, and a BMP with
alpha or a profile is written with a BITMAPV5HEADER that carries both.
"""

from __future__ import annotations

import struct

import numpy as np

_FILE_HEADER, _V5_HEADER = 14, 124
_BI_RGB, _BI_BITFIELDS = 0, 3
_LCS_EMBEDDED, _LCS_WINDOWS = 0x4D424544, 0x57696E20  # 'MBED', 'Win '
_LCS_GM_IMAGES = 4


def _header(data: bytes) -> dict | None:
    try:
        offbits, size = struct.unpack_from("<II", data, 10)
        if size < 40:
            return None
        width, height, _, bits, compression = struct.unpack_from("<iiHHI", data, 18)
        found = {"offbits": offbits, "size": size, "width": width, "height": height,
                 "bits": bits, "compression": compression, "icc": None}
        if size >= _V5_HEADER:
            (cs_type,) = struct.unpack_from("<I", data, _FILE_HEADER + 56)
            start, length = struct.unpack_from("<II", data, _FILE_HEADER + 112)
            begin = _FILE_HEADER + start
            if cs_type == _LCS_EMBEDDED and length and begin + length <= len(data):
                found["icc"] = data[begin:begin + length]
        return found
    except struct.error:
        return None


def embedded_icc(data: bytes) -> bytes | None:
    """The ICC profile a BITMAPV5HEADER embeds (bV5CSType 'MBED'), or None."""
    header = _header(data)
    return header["icc"] if header else None


def raw_alpha(data: bytes) -> np.ndarray | None:
    """The alpha in the fourth byte of an uncompressed 32-bit BMP, as stored (top row first).

    None when the file is not that kind, or every fourth byte is 0: then the
    byte is padding, as the format first defined it.
    """
    h = _header(data)
    if not h or h["bits"] != 32 or h["compression"] != _BI_RGB or h["width"] <= 0:
        return None
    width, height = h["width"], abs(h["height"])
    need = h["offbits"] + width * height * 4
    if height == 0 or len(data) < need:
        return None
    pixels = np.frombuffer(data, np.uint8, width * height * 4, h["offbits"])
    alpha = pixels.reshape(height, width, 4)[..., 3]
    if not alpha.any():
        return None
    return np.ascontiguousarray(alpha[::-1] if h["height"] > 0 else alpha)  # bottom-up rows


def encode_bmp(pixels: np.ndarray, *, icc: bytes | None, dpi: tuple[float, float] | None) -> bytes:
    """A BMP with a BITMAPV5HEADER: 8-bit gray, 24-bit RGB or 32-bit RGBA, with ICC.

    Args:
        pixels: H×W×C uint8, C = 1, 3 or 4.
        icc: embedded as the profile (bV5CSType 'MBED'), after the pixels.
        dpi: stored as pixels per metre.
    """
    h, w, c = pixels.shape
    if c == 1:
        bits, palette = 8, np.repeat(np.arange(256, dtype=np.uint8), 4).reshape(256, 4)
        palette[:, 3] = 0
        rows = pixels[..., 0]
    elif c == 3:
        bits, palette, rows = 24, None, pixels[..., ::-1].reshape(h, w * 3)  # BGR
    else:
        bits, palette, rows = 32, None, pixels[..., [2, 1, 0, 3]].reshape(h, w * 4)  # BGRA
    stride = (w * bits // 8 + 3) & ~3
    body = np.zeros((h, stride), np.uint8)
    body[:, :rows.shape[1]] = rows[::-1]  # bottom row first
    table = palette.tobytes() if palette is not None else b""
    offbits = _FILE_HEADER + _V5_HEADER + len(table)
    image = body.tobytes()
    profile_at = _V5_HEADER + len(table) + len(image)  # from the start of the V5 header
    ppm = [round(v / 0.0254) for v in dpi] if dpi else [0, 0]
    masks = (0x00FF0000, 0x0000FF00, 0x000000FF, 0xFF000000) if c == 4 else (0, 0, 0, 0)
    v5 = struct.pack(
        "<IiiHHIIiiII4I I36sIII I II I",
        _V5_HEADER, w, h, 1, bits, _BI_BITFIELDS if c == 4 else _BI_RGB, len(image),
        ppm[0], ppm[1], 256 if c == 1 else 0, 0, *masks,
        _LCS_EMBEDDED if icc else _LCS_WINDOWS, bytes(36), 0, 0, 0,
        _LCS_GM_IMAGES, profile_at if icc else 0, len(icc) if icc else 0, 0,
    )
    total = offbits + len(image) + (len(icc) if icc else 0)
    head = b"BM" + struct.pack("<IHHI", total, 0, 0, offbits)
    return head + v5 + table + image + (icc or b"")
