"""Decode a photo file into upright pixels and metadata kept aside."""

from __future__ import annotations

import io
import logging
import os
import struct
import threading
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageCms, ImageFile, JpegImagePlugin, UnidentifiedImageError

from facefix.errors import PhotoError, UsageError
from facefix.photos import metadata as md
from facefix.photos.model import Photo, PhotoMeta

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 300_000_000
MAX_PIXELS_ENV = "FACEFIX_MAX_PIXELS"

# Pillow's truncation and bomb switches are process globals; set them only
# while holding this lock so concurrent reads cannot undo each other's.
_PIL_GLOBALS = threading.Lock()

# EXIF orientation -> the numpy steps that make the stored pixels upright
# (same result as PIL.ImageOps.exif_transpose).
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}

_SRGB_ICC: bytes | None = None


def _srgb_icc() -> bytes:
    global _SRGB_ICC
    if _SRGB_ICC is None:
        _SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return _SRGB_ICC


def _max_pixels(override: int | None) -> int:
    if override is not None:
        return int(override)
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise UsageError(f"{MAX_PIXELS_ENV}={raw!r} is not a positive whole number of pixels; "
                         f"set it like {MAX_PIXELS_ENV}=500000000 or unset it")
    return value


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PhotoError(f"{path}: no such file; check the path") from None
    except IsADirectoryError:
        raise PhotoError(f"{path}: is a directory, not a photo; pass a photo file") from None
    except PermissionError:
        if path.is_dir():  # Windows reports a directory as a permission error
            raise PhotoError(f"{path}: is a directory, not a photo; pass a photo file") from None
        raise PhotoError(f"{path}: cannot be read (permission denied); "
                         "check the file's permissions, e.g. 'chmod u+r'") from None
    except OSError as exc:
        raise PhotoError(f"{path}: cannot be read ({exc.strerror or exc}); "
                         "check the disk and the path") from None
    if not data:
        raise PhotoError(f"{path}: the file is empty (0 bytes); "
                         "re-copy it from the original source")
    return data


def _decode(path: Path, data: bytes, limit: int) -> tuple[Image.Image, str | None, int | None]:
    """Open and fully decode with truncation detection and our own bomb check.

    Returns the decoded image, the raw mode of a file holding 16-bit colour
    (else None), and a TIFF's orientation tag (read before load: Pillow rotates TIFFs while
    loading and drops the tag).
    """
    with _PIL_GLOBALS:
        saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        # Pillow's bomb check is replaced by ours (before decoding), so a
        # limit above Pillow's default works; truncation must raise, not pad.
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = None, False
        try:
            try:
                im = Image.open(io.BytesIO(data))
            except UnidentifiedImageError:
                raise PhotoError(
                    f"{path}: not a photo facefix can read (the contents are not JPEG, PNG, "
                    "TIFF, WebP, BMP or GIF); check the file or convert it to one of those"
                ) from None
            except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
                # The header itself is cut short or broken.
                raise PhotoError(f"{path}: the file is truncated or damaged ({exc}); "
                                 "re-copy it from the original source") from None
            width, height = im.size
            if width * height > limit:
                raise PhotoError(
                    f"{path}: {width}×{height} = {width * height:,} pixels, over the limit of "
                    f"{limit:,} that guards against decompression bombs; "
                    f"if you trust the file, raise it with {MAX_PIXELS_ENV}=<pixels>"
                )
            if width == 0 or height == 0:
                raise PhotoError(f"{path}: the image has no pixels ({width}×{height}); "
                                 "re-copy it from the original source")
            sixteen = _rawmode_16bit_color(im)  # before load(), which clears im.tile
            tiff_orientation = im.tag_v2.get(md.ORIENTATION) if hasattr(im, "tag_v2") else None
            try:
                im.seek(0)
                im.load()
            except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
                cut = isinstance(exc, EOFError) or "truncat" in str(exc).lower()
                what = "truncated" if cut else "damaged"
                raise PhotoError(f"{path}: the file is {what} ({exc}); "
                                 "re-copy it from the original source") from None
            return im, sixteen, tiff_orientation
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _rawmode(im: Image.Image) -> str:
    if not im.tile:
        return ""
    args = im.tile[0].args
    return args if isinstance(args, str) else str(args[0]) if args else ""


def _rawmode_16bit_color(im: Image.Image) -> str | None:
    # Pillow has no 16-bit RGB(A)/LA mode and silently decodes those to 8
    # bits (16-bit LA even as RGBA); the tile's raw mode says what the file holds.
    rawmode = _rawmode(im)
    return rawmode if im.mode in ("RGB", "RGBA", "LA") and ";16" in rawmode else None


def _decode_16bit_color(path: Path, data: bytes, gray_alpha: bool, upright8: np.ndarray,
                        orientation: int) -> np.ndarray:
    """The 16-bit pixels, upright, matched against Pillow's upright 8-bit decode.

    OpenCV applies a TIFF's orientation itself but not a PNG's (and this has
    changed between versions), so both candidates are compared with Pillow's
    pixels, which are its high bytes.
    """
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.dtype != np.uint16 or array.ndim != 3:
        raise PhotoError(f"{path}: its 16-bit pixels could not be decoded; "
                         "re-save it as a 16-bit PNG or TIFF in an image editor")
    if gray_alpha:  # libpng expands gray+alpha to BGRA, Pillow to RGBA
        array = array[..., [0, 3]] if array.shape[2] == 4 else array
        upright8 = upright8[..., [0, 3]] if upright8.shape[2] == 4 else upright8
    else:
        array = array[..., [2, 1, 0, 3]] if array.shape[2] == 4 else array[..., ::-1]
    candidates = [array] + ([_ORIENT[orientation](array)] if orientation in _ORIENT else [])
    best, best_err = None, None
    for candidate in candidates:
        if candidate.shape != upright8.shape:
            continue
        sample = (slice(None, None, 7), slice(None, None, 7))  # a sparse grid is enough
        err = np.abs((candidate[sample] >> 8).astype(np.int16) - upright8[sample]).mean()
        if best_err is None or err < best_err:
            best, best_err = candidate, err
    if best is None or best_err > 1.0:
        raise PhotoError(f"{path}: its 16-bit pixels decode differently from its 8-bit preview; "
                         "re-save it as a 16-bit PNG or TIFF in an image editor")
    return best


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
        logger.warning("%s: CMYK photo with a %s ICC profile; converting without it",
                       path, md.icc_label(icc))
    # No usable profile: the naive conversion (R = 255 - C - K, ...), then no
    # profile is claimed for the result.
    return im.convert("RGB"), None


def _to_array(path: Path, im: Image.Image, icc: bytes | None) -> tuple[np.ndarray, bytes | None]:
    """Pixels as H×W×C uint8/uint16 in gray/gray+alpha/RGB/RGBA, and the ICC they are in."""
    mode = im.mode
    has_key = "transparency" in im.info  # tRNS colour key / GIF transparent index
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


def read_photo(path: Path | str, *, max_pixels: int | None = None) -> Photo:
    """Read a photo upright, at its full depth, with its metadata kept aside.

    JPEG, PNG, TIFF, WebP and BMP are supported (GIF too, first frame). The
    EXIF orientation (all 8 values) is applied to the pixels and reset to 1 in
    the kept EXIF and XMP. Gray stays 1 channel, alpha is kept, 16-bit PNG
    and TIFF stay 16-bit (colour ones are decoded with OpenCV, as Pillow
    reduces them to 8 bits). CMYK becomes RGB: through its embedded CMYK ICC
    profile to sRGB when it has one (``meta.icc`` is then sRGB), otherwise by
    the plain formula (``meta.icc`` None). Other ICC profiles are not applied:
    the pixels stay in their colour space and the profile is kept to write.
    Palette images become RGB or RGBA. Animated files give their first frame,
    with a warning.

    Args:
        path: the photo file.
        max_pixels: refuse images with more pixels than this, checked before
            decoding (decompression-bomb guard). Default: ``$FACEFIX_MAX_PIXELS``
            or 300 million.

    Returns:
        The :class:`Photo`.

    Raises:
        PhotoError: missing, unreadable, empty, not an image, truncated,
            damaged or too large; the message names the file and the fix.
    """
    path = Path(path)
    limit = _max_pixels(max_pixels)
    data = _read_bytes(path)
    im, sixteen, tiff_orientation = _decode(path, data, limit)
    source_mode, fmt = im.mode, im.format or "unknown"
    frames = int(getattr(im, "n_frames", 1))
    if fmt == "MPO":  # a phone JPEG with extra pictures (depth map, preview): still a JPEG
        fmt = "JPEG"
    elif frames > 1:
        logger.warning("%s: has %d frames; only the first is used (animations are not restored)",
                       path, frames)

    icc = im.info.get("icc_profile") or None
    pixels, icc = _to_array(path, im, icc)
    try:
        exif_tags = im.getexif()  # also finds an orientation stored only in XMP
    except Exception as exc:  # broken EXIF must not cost the photo; Pillow raises many kinds
        logger.warning("%s: its EXIF is unreadable and is dropped (%s)", path, exc)
        exif_tags = Image.Exif()
    orientation = exif_tags.get(md.ORIENTATION, 1)
    if fmt == "TIFF":  # Pillow rotated it while loading (and dropped the tag)
        orientation = tiff_orientation or 1
    elif orientation in _ORIENT:
        pixels = _ORIENT[orientation](pixels)
    if sixteen:
        # Pillow decoded only 8 bits (still useful: it proved the file whole,
        # and it is the reference for which way is up); take the 16 bits from
        # OpenCV.
        gray_alpha = sixteen.startswith("LA")
        source_mode = "LA" if gray_alpha else source_mode
        pixels = _decode_16bit_color(path, data, gray_alpha, pixels, orientation)
    pixels = np.ascontiguousarray(pixels)

    if fmt == "TIFF":
        exif = md.exif_from_tiff_tags(exif_tags)
    else:
        raw = im.info.get("exif")
        exif = md.reset_exif_orientation(raw) if raw and len(exif_tags) else None
    xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    quality = subsampling = None
    if isinstance(im, JpegImagePlugin.JpegImageFile):
        quality = md.estimate_jpeg_quality(getattr(im, "quantization", None))
        if im.layers == 3:
            subsampling = md.SUBSAMPLING_NAMES.get(JpegImagePlugin.get_sampling(im))

    meta = PhotoMeta(
        format=fmt,
        mode=source_mode,
        bit_depth=16 if pixels.dtype == np.uint16 else 8,
        exif=exif,
        icc=icc,
        xmp=md.reset_xmp_orientation(xmp) if xmp else None,
        dpi=md.normalize_dpi(im.info.get("dpi")),
        jpeg_quality=quality,
        jpeg_subsampling=subsampling,
        source=path,
        frames=frames,
    )
    logger.debug("read %s: %s %s %d-bit %s", path, fmt, source_mode, meta.bit_depth, pixels.shape)
    return Photo(pixels=pixels, meta=meta)
