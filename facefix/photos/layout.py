"""Decoded Pillow images as H×W×C arrays: gray, gray+alpha, RGB or RGBA, 8 or 16 bit.

CMYK goes to RGB (through its ICC profile when it has one), palettes to RGB(A),
tRNS colour keys and a 32-bit BMP's fourth byte to alpha.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

from facefix.errors import PhotoError
from facefix.photos import bmp
from facefix.photos import metadata as md

logger = logging.getLogger(__name__)

_SRGB_ICC: bytes | None = None


def _srgb_icc() -> bytes:
    global _SRGB_ICC
    if _SRGB_ICC is None:
        _SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return _SRGB_ICC


def _cmyk_to_rgb(path: Path, im: Image.Image,
                 icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    if md.icc_color_space(icc) == "CMYK":
        try:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            rgb = ImageCms.profileToProfile(
                im, profile, ImageCms.createProfile("sRGB"),
                renderingIntent=ImageCms.Intent.PERCEPTUAL, outputMode="RGB",
            )
            return rgb, _srgb_icc()
        except (ImageCms.PyCMSError, OSError) as exc:
            logger.warning("%s: its CMYK ICC profile could not be applied (%s); "
                           "converting CMYK to RGB without it", path, exc)
    elif icc:
        logger.warning("%s: CMYK photo whose ICC profile is %s; converting without it",
                       path, md.icc_label(icc))
    # No usable profile: the naive conversion (R = 255 - C - K, ...), then no
    # profile is claimed for the result.
    return im.convert("RGB"), None


def _gray_key(im: Image.Image, data: bytes) -> int:
    """A gray tRNS key on the scale of Pillow's pixels (Pillow leaves 2-/4-bit keys unscaled)."""
    key = int(im.info["transparency"])
    bits = data[24] if im.format == "PNG" and len(data) > 25 and data[25] == 0 else 8
    if im.mode == "1":
        return 255 if key else 0
    return key * 255 // ((1 << bits) - 1) if bits < 8 else key


def _keyed_gray(im: Image.Image, data: bytes) -> np.ndarray:
    """Gray (1-bit, 2/4/8-bit or 16-bit) with a tRNS colour key, as gray+alpha."""
    gray = np.asarray(im.convert("L") if im.mode == "1" else im)
    top = 65535 if gray.dtype != np.uint8 else 255
    gray = gray.astype(np.uint16 if top == 65535 else np.uint8)
    alpha = np.where(gray == _gray_key(im, data), 0, top).astype(gray.dtype)
    return np.dstack([gray, alpha])


def to_array(path: Path, im: Image.Image, icc: bytes | None,
              data: bytes) -> tuple[np.ndarray, bytes | None]:
    """Pixels as H×W×C uint8/uint16 in gray/gray+alpha/RGB/RGBA, and the ICC they are in."""
    mode = im.mode
    has_key = "transparency" in im.info  # tRNS colour key / GIF transparent index
    if mode in ("1", "L", "I;16", "I;16B", "I") and has_key and im.format == "PNG":
        return _keyed_gray(im, data), icc
    if im.format == "BMP" and mode == "RGB":
        alpha = bmp.raw_alpha(data)  # Pillow takes a 32-bit BMP's fourth byte as padding
        if alpha is not None and alpha.shape == (im.height, im.width):
            return np.dstack([np.asarray(im), alpha]), icc
    if mode == "CMYK":
        im, icc = _cmyk_to_rgb(path, im, icc)
    elif mode == "P":
        im = im.convert("RGBA" if has_key or im.palette.mode == "RGBA" else "RGB")
    elif mode in ("PA", "RGBa", "RGBX", "La", "1", "YCbCr", "LAB", "HSV"):
        im = im.convert({"PA": "RGBA", "RGBa": "RGBA", "La": "LA", "1": "L"}.get(mode, "RGB"))
    elif mode in ("L", "RGB") and has_key:
        im = im.convert("LA" if mode == "L" else "RGBA")
    elif mode == "F":
        raise PhotoError(f"{path}: 32-bit floating-point pixels are not supported; "
                         "save it as a 16-bit TIFF or PNG first")
    if im.mode.startswith("I"):
        array = np.asarray(im)
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise PhotoError(f"{path}: 32-bit integer pixels are not supported; "
                             "save it as a 16-bit TIFF or PNG first")
        return array.astype(np.uint16)[..., None], icc
    array = np.asarray(im)
    return (array[..., None] if array.ndim == 2 else array), icc
