"""16-bit colour TIFFs through tifffile (Pillow reduces them to 8 bits).

tifffile decodes the layouts Pillow's preview trips on: planar (one plane per
channel), tiled, and associated ("premultiplied", RGBa) alpha.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np

from facefix.errors import PhotoError

logger = logging.getLogger(__name__)

BITS_PER_SAMPLE, SAMPLES_PER_PIXEL = 258, 277


def is_16bit_colour(tags) -> bool:
    """Whether a TIFF's first IFD (Pillow's ``tag_v2``) holds 16-bit samples, 2 or more per pixel."""
    bits = tags.get(BITS_PER_SAMPLE)
    bits = bits if isinstance(bits, tuple) else (bits,)
    samples = tags.get(SAMPLES_PER_PIXEL, len(bits))
    return samples >= 2 and bool(bits) and all(b == 16 for b in bits)


def read_tiff16(path: Path, data: bytes) -> np.ndarray | None:
    """The first page's pixels as stored (orientation not applied), H×W×C uint16.

    C is 2 (gray+alpha), 3 (RGB) or 4 (RGBA, associated alpha made straight).
    Returns None when tifffile cannot decode the page's compression here (it
    needs the optional imagecodecs package for LZW, PackBits, JPEG, ...); the
    caller then decodes it another way.

    Raises:
        PhotoError: tifffile is missing, or the page is damaged.
    """
    try:
        import tifffile
    except ImportError:
        raise PhotoError(f"{path}: reading a 16-bit colour TIFF needs the 'tifffile' package; "
                         "install it with 'pip install tifffile'") from None
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            if page.dtype != np.uint16 or page.photometric not in (1, 2):
                return None  # not unsigned 16-bit gray/RGB: not this reader's job
            axes, extras = page.axes, tuple(int(e) for e in page.extrasamples)
            try:
                array = page.asarray()
            except (ValueError, NotImplementedError) as exc:
                if "imagecodecs" not in str(exc):
                    raise
                layout = [name for name, on in (("planar", axes.startswith("S")),
                                                ("tiled", page.is_tiled),
                                                ("RGBa", 1 in extras)) if on]
                if not layout:
                    return None  # contiguous strips: OpenCV's libtiff decodes those
                compression = getattr(page.compression, "name", str(page.compression))
                raise PhotoError(
                    f"{path}: decoding a 16-bit {'/'.join(layout)} TIFF compressed with "
                    f"{compression} needs the 'imagecodecs' package; "
                    "install it with 'pip install imagecodecs'") from None
    except PhotoError:
        raise
    except Exception as exc:  # tifffile raises many kinds on a damaged file
        raise PhotoError(f"{path}: the file is truncated or damaged ({exc}); "
                         "re-copy it from the original source") from None
    if axes.startswith("S"):  # planar: one plane per channel
        array = np.moveaxis(array, 0, -1)
    if array.ndim != 3:
        return None
    colour = array.shape[2] - len(extras)
    keep = colour + (1 if extras else 0)
    if colour not in (1, 3) or keep > 4:
        return None
    if extras and extras[0] == 0:  # unspecified extra sample: not transparency
        array, keep = array[..., :colour], colour
    array = np.ascontiguousarray(array[..., :keep])
    if extras and extras[0] == 1:  # associated alpha: colour was multiplied by it
        alpha = array[..., -1:].astype(np.float64)
        straight = np.where(alpha > 0, array[..., :-1] * 65535.0 / np.maximum(alpha, 1), 0)
        array[..., :-1] = np.rint(np.clip(straight, 0, 65535)).astype(np.uint16)
    return array


def raw_tags(data: bytes, *tags: int) -> list[bytes | None]:
    """The raw bytes of byte-block tags in the first IFD (IPTC 33723, Photoshop 34377), or None each.

    Read with tifffile, in the file's byte order: Photoshop stores IPTC as
    LONGs, which Pillow cuts to the one value its tag table expects.
    """
    try:
        import tifffile

        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            found = tif.pages.first.tags
            order = tif.byteorder
            values = [(found[t].value, int(found[t].dtype)) if t in found else (None, 1)
                      for t in tags]
    except Exception as exc:  # an unreadable tag costs the tag, not the photo
        logger.warning("TIFF IPTC/Photoshop tags unreadable (%s); not kept", exc)
        return [None] * len(tags)
    out: list[bytes | None] = []
    for value, kind in values:
        if isinstance(value, int):
            value = (value,)
        if isinstance(value, tuple):  # SHORT (3) or LONG (4) values: back to the file's bytes
            value = np.asarray(value, dtype=order + {3: "u2", 4: "u4"}.get(kind, "u1")).tobytes()
        out.append(bytes(value) if value else None)
    return out
