"""Decode a photo file into upright pixels and metadata kept aside."""

from __future__ import annotations

import io
import logging
import struct
import threading
from pathlib import Path

import cv2
import numpy as np
from PIL import (
    Image,
    ImageFile,
    JpegImagePlugin,
    UnidentifiedImageError,
    features,
)

from facefix.common.paths import MAX_PIXELS_ENV, max_pixels_override
from facefix.common.quiet import c_output_caught, quiet_decoders
from facefix.errors import PhotoError
from facefix.photos import bmp, heif, jpeg, layout, png, tiff, unsupported
from facefix.photos import exif as exif_md
from facefix.photos import metadata as md
from facefix.photos.model import Photo, PhotoMeta

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 300_000_000

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

def _max_pixels(override: int | None) -> int:
    if override is not None:
        return int(override)
    from_env = max_pixels_override()
    return DEFAULT_MAX_PIXELS if from_env is None else from_env


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
                _raise_unsupported(path, data)
                if unsupported.is_photo_format(data):
                    raise PhotoError(f"{path}: the file is truncated or damaged (its header "
                                     "cannot be read); re-copy it from the original source") from None
                other = unsupported.other_format(data)
                raise PhotoError(
                    f"{path}: not a photo facefix can read ("
                    + (f"it is {other}" if other else "the contents are not JPEG, PNG, TIFF, "
                       "WebP, BMP, GIF, HEIC or AVIF")
                    + "); check the file or convert it to JPEG, PNG or TIFF"
                ) from None
            except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
                _raise_unsupported(path, data)
                # The header itself is cut short or broken.
                raise PhotoError(f"{path}: the file is truncated or damaged ({exc}); "
                                 "re-copy it from the original source") from None
            check_size(path, im.size, limit)
            sixteen = _rawmode_16bit_color(im)  # before load(), which clears im.tile
            tiff_orientation = im.tag_v2.get(md.ORIENTATION) if hasattr(im, "tag_v2") else None
            if im.format == "TIFF" and tiff.is_16bit_colour(im.tag_v2):
                # Pillow would decode only 8 bits, and trips on planar/tiled/RGBa layouts.
                pixels16 = tiff.read_tiff16(path, data)
                if pixels16 is not None:
                    return im, pixels16, tiff_orientation
            try:
                im.seek(0)
                im.load()
            except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
                cut = isinstance(exc, EOFError) or "truncat" in str(exc).lower()
                if not cut:
                    _raise_unsupported(path, data)
                what = "truncated" if cut else "damaged"
                raise PhotoError(f"{path}: the file is {what} ({exc}); "
                                 "re-copy it from the original source") from None
            return im, sixteen, tiff_orientation
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def check_size(path: Path, size: tuple[int, int], limit: int) -> None:
    """Refuse, before decoding, an image with no pixels or more than ``limit`` (bomb guard)."""
    width, height = size
    if width * height > limit:
        raise PhotoError(
            f"{path}: {width}×{height} = {width * height:,} pixels, over the limit of "
            f"{limit:,} that guards against decompression bombs; "
            f"if you trust the file, raise it with {MAX_PIXELS_ENV}=<pixels>"
        )
    if width == 0 or height == 0:
        raise PhotoError(f"{path}: the image has no pixels ({width}×{height}); "
                         "re-copy it from the original source")


def _raise_unsupported(path: Path, data: bytes) -> None:
    """Raise the "not supported" PhotoError if the file is whole but of a kind not decoded."""
    found = unsupported.describe(data)
    if found:
        what, fix = found
        raise PhotoError(f"{path}: {what} is not supported; {fix}")


def _rawmode(im: Image.Image) -> str:
    if not im.tile:
        return ""
    args = im.tile[0].args
    return args if isinstance(args, str) else str(args[0]) if args else ""


def _rawmode_16bit_color(im: Image.Image) -> str | None:
    # Pillow has no 16-bit RGB(A)/LA mode and silently decodes those to 8
    # bits (16-bit LA even as RGBA); the tile's raw mode says what the file holds.
    # (BMP's "BGR;16" is 16 bits per *pixel*, RGB565: Pillow decodes it fully.)
    rawmode = _rawmode(im)
    sixteen = im.format in ("PNG", "TIFF") and ";16" in rawmode
    return rawmode if im.mode in ("RGB", "RGBA", "LA") and sixteen else None


def _decode_16bit_color(path: Path, data: bytes, gray_alpha: bool, upright8: np.ndarray,
                        orientation: int) -> np.ndarray:
    """The 16-bit pixels, upright, matched against Pillow's upright 8-bit decode.

    OpenCV applies a TIFF's orientation itself but not a PNG's (and this has
    changed between versions), so both candidates are compared with Pillow's
    pixels, which are its high bytes.
    """
    # An APNG's animation chunks are dropped so OpenCV decodes its still image.
    array = cv2.imdecode(np.frombuffer(png.still_image(data), np.uint8), cv2.IMREAD_UNCHANGED)
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


def read_photo(path: Path | str, *, max_pixels: int | None = None) -> Photo:
    """Read a photo upright, at its full depth, with its metadata kept aside.

    JPEG, PNG, TIFF, WebP, BMP, HEIC/HEIF (pillow-heif) and AVIF are
    supported (GIF too, first frame). The EXIF orientation (all 8 values) is
    applied to the pixels and reset to 1 in the kept EXIF and XMP, whose
    ExifImageWidth/Height and IFD1 thumbnail are turned to match. Gray stays
    1 channel, alpha is kept (tRNS keys, 32-bit BMP alpha, TIFF RGBa made
    straight), 16-bit PNG, TIFF and HEIF stay 16-bit (colour TIFFs are
    decoded with tifffile, PNGs with OpenCV, as Pillow reduces them to 8
    bits). IPTC, the Photoshop block, JPEG comments, MPF pictures and PNG
    text/colour chunks are kept for writing (see :class:`PhotoMeta`).
    CMYK becomes RGB: through its embedded CMYK ICC profile to sRGB when it
    has one (``meta.icc`` is then sRGB), otherwise by the plain formula
    (``meta.icc`` None). Other ICC profiles are not applied:
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
            damaged, of a kind not supported (the message says which) or too
            large; the message names the file and the fix.
    """
    path = Path(path)
    limit = _max_pixels(max_pixels)
    data = _read_bytes(path)  # outside the capture's lock: a slow disk must not hold up a write
    with quiet_decoders(path):  # libtiff, libpng, Pillow's warnings: to the debug log, not the console
        return _read_photo(path, data, limit)


def _read_photo(path: Path, data: bytes, limit: int) -> Photo:
    container = heif.container_kind(data)
    if container == "HEIF":
        return heif.read_heif(path, data, lambda size: check_size(path, size, limit))
    if container == "AVIF" and not features.check("avif"):
        raise PhotoError(f"{path}: is an AVIF photo, and this Pillow was built without AVIF "
                         "support; upgrade it with 'pip install --upgrade pillow'")
    with c_output_caught():  # libtiff's errors inside Pillow
        im, sixteen, tiff_orientation = _decode(path, data, limit)
    source_mode, fmt = im.mode, im.format or "unknown"
    frames = int(getattr(im, "n_frames", 1))
    if fmt == "MPO":  # a phone JPEG with extra pictures (depth map, preview): still a JPEG
        fmt = "JPEG"
    elif frames > 1:
        logger.warning("%s: has %d frames; only the first is used (animations are not restored)",
                       path, frames)

    icc = im.info.get("icc_profile") or None
    if fmt == "BMP":
        icc = bmp.embedded_icc(data)  # Pillow does not read the V5 header's profile
    from_tifffile = isinstance(sixteen, np.ndarray)
    if from_tifffile:  # decoded by tifffile, as stored (not rotated)
        pixels, sixteen = sixteen, None
        source_mode = "LA" if pixels.shape[2] == 2 else source_mode
    else:
        pixels, icc = layout.to_array(path, im, icc, data)
    try:
        exif_tags = im.getexif()  # also finds an orientation stored only in XMP
    except Exception as exc:  # broken EXIF must not cost the photo; Pillow raises many kinds
        logger.warning("%s: its EXIF is unreadable and is dropped (%s)", path, exc)
        exif_tags = Image.Exif()
    orientation = exif_tags.get(md.ORIENTATION, 1)
    if fmt == "TIFF":  # Pillow rotated it while loading (and dropped the tag)
        orientation = tiff_orientation or 1
        if from_tifffile and orientation in _ORIENT:
            pixels = _ORIENT[orientation](pixels)  # tifffile's pixels are as stored
    elif orientation in _ORIENT:
        pixels = _ORIENT[orientation](pixels)
    if sixteen:
        # Pillow decoded only 8 bits (still useful: it proved the file whole,
        # and it is the reference for which way is up); take the 16 bits from
        # OpenCV.
        gray_alpha = sixteen.startswith("LA")
        source_mode = "LA" if gray_alpha else source_mode
        with c_output_caught():  # libpng's warnings inside OpenCV (a bad iCCP chunk)
            pixels = _decode_16bit_color(path, data, gray_alpha, pixels, orientation)
    pixels = np.ascontiguousarray(pixels)

    size = (pixels.shape[1], pixels.shape[0])
    if fmt == "TIFF":
        exif = md.exif_from_tiff_tags(exif_tags)
        exif = exif_md.set_exif_size(exif, size) if exif else None
    else:
        raw = im.info.get("exif")
        exif = exif_md.upright_exif(raw, orientation, size) if raw and len(exif_tags) else None
    xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")

    meta = PhotoMeta(
        format=fmt,
        mode=source_mode,
        bit_depth=16 if pixels.dtype == np.uint16 else 8,
        exif=exif,
        icc=icc,
        xmp=md.reset_xmp_orientation(xmp) if xmp else None,
        dpi=_dpi(im),
        source=path,
        frames=frames,
        **_format_extras(im, fmt, data, orientation),
    )
    logger.debug("read %s: %s %s %d-bit %s", path, fmt, source_mode, meta.bit_depth, pixels.shape)
    return Photo(pixels=pixels, meta=meta)


def _dpi(im: Image.Image) -> tuple[float, float] | None:
    # A JFIF density without units is an aspect ratio, not a resolution:
    # Pillow then takes the EXIF XResolution (often a nominal 72) instead.
    if im.info.get("jfif_unit") == 0:
        return None
    return md.normalize_dpi(im.info.get("dpi"))


def _format_extras(im: Image.Image, fmt: str, data: bytes, orientation: int) -> dict:
    """The PhotoMeta fields particular to the source's format (JPEG, PNG, TIFF)."""
    if fmt == "JPEG" and isinstance(im, JpegImagePlugin.JpegImageFile):
        tables = im.quantization
        photoshop = jpeg.photoshop_block(im)
        return {
            "jpeg_quality": md.estimate_jpeg_quality(tables),
            "jpeg_subsampling": jpeg.subsampling_name(im),
            "jpeg_qtables": tuple(tuple(tables[k]) for k in sorted(tables)) if tables else None,
            "jpeg_progressive": bool(im.info.get("progressive")),
            "comments": jpeg.comments(im),
            "photoshop": photoshop,
            "iptc": jpeg.iptc_from_photoshop(photoshop),
            "mpf_images": jpeg.mpf_images(data, orientation),
        }
    if fmt == "PNG":
        return {"png_chunks": png.kept_chunks(data)}
    if fmt == "TIFF":
        photoshop, iptc = tiff.raw_tags(data, 34377, 33723)
        return {"photoshop": photoshop, "iptc": iptc or jpeg.iptc_from_photoshop(photoshop)}
    return {}
