"""HEIF/HEIC (iPhone photos) through pillow-heif, and telling HEIF from AVIF.

HEIC is decoded and encoded by libheif through the ``pillow-heif`` package;
AVIF, which pillow-heif no longer decodes, goes through Pillow's own AVIF
plugin (see :mod:`facefix.photos.read`). libheif applies the container's
rotation and mirroring (``irot``/``imir``) while decoding, so the pixels come
out upright and the EXIF Orientation, which HEIF says to ignore, is reset to 1.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from facefix.common.quiet import c_output_caught
from facefix.errors import PhotoError
from facefix.photos import metadata as md
from facefix.photos.exif import upright_exif
from facefix.photos.model import Photo, PhotoMeta

logger = logging.getLogger(__name__)

DEFAULT_HEIF_QUALITY = 90
INSTALL_HINT = "install it with 'pip install pillow-heif'"
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs",
                b"mif1", b"msf1", b"mif2", b"miaf"}
_AVIF_BRANDS = {b"avif", b"avis"}


def container_kind(data: bytes) -> str | None:
    """"HEIF", "AVIF" or None, from the ISO-BMFF ``ftyp`` box at the start of ``data``."""
    if len(data) < 16 or data[4:8] != b"ftyp":
        return None
    size = int.from_bytes(data[:4], "big")
    box = data[8:min(max(size, 16), 4096)]
    brands = {box[i:i + 4] for i in range(0, len(box) - 3, 4) if i != 4}  # skip minor version
    if brands & _AVIF_BRANDS and not brands & {b"heic", b"heix", b"hevc", b"hevx"}:
        return "AVIF"
    if brands & _HEIF_BRANDS:
        return "HEIF"
    return None


def _pillow_heif(path: Path, doing: str):
    try:
        import pillow_heif
    except ImportError:
        raise PhotoError(f"{path}: {doing} a HEIC/HEIF photo needs the 'pillow-heif' package; "
                         f"{INSTALL_HINT}") from None
    return pillow_heif


def read_heif(path: Path, data: bytes, check_size: Callable[[tuple[int, int]], None]) -> Photo:
    """The primary image, upright (libheif applies irot/imir), with EXIF, XMP and ICC.

    A 10- or 12-bit (HDR) photo gives 16-bit pixels. EXIF Orientation is reset
    to 1 and ExifImageWidth/Height set to the pixels' size.

    Args:
        path: the file, for messages.
        data: its bytes.
        check_size: called with (width, height) before decoding; raises to refuse.
    """
    pillow_heif = _pillow_heif(path, "reading")
    try:
        with c_output_caught():
            heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=False)
            primary = heif[heif.primary_index]
            check_size(primary.size)
            pixels = np.asarray(primary)
    except PhotoError:
        raise
    except (RuntimeError, ValueError, OSError, EOFError) as exc:
        text = str(exc)
        if "nsupported" in text or "o decoding plugin" in text or "not supported" in text:
            raise PhotoError(f"{path}: this kind of HEIF is not supported by libheif here "
                             f"({text.splitlines()[0]}); convert it to JPEG or PNG") from None
        raise PhotoError(f"{path}: the file is truncated or damaged ({text.splitlines()[0]}); "
                         "re-copy it from the original source") from None
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    info = primary.info
    frames = len(heif)
    if frames > 1:
        logger.warning("%s: holds %d images; only the primary one is used", path, frames)
    exif, xmp = info.get("exif") or None, info.get("xmp") or None
    h, w = pixels.shape[:2]
    meta = PhotoMeta(
        format="HEIF",
        mode=primary.mode.split(";")[0],
        bit_depth=16 if pixels.dtype == np.uint16 else 8,
        exif=upright_exif(exif, 1, (w, h)) if exif else None,
        icc=info.get("icc_profile") or None,
        xmp=md.reset_xmp_orientation(xmp) if xmp else None,
        source=path,
        frames=frames,
    )
    logger.debug("read %s: HEIF %s-bit %s", path, info.get("bit_depth", 8), pixels.shape)
    return Photo(pixels=np.ascontiguousarray(pixels), meta=meta)


def write_heif(tmp: Path, pixels: np.ndarray, path: Path, *, quality: int | None,
               exif: bytes | None, icc: bytes | None, xmp: bytes | None) -> None:
    """Encode ``pixels`` (gray/RGB/RGBA, 8 or 16 bit) as HEIC with its metadata.

    16-bit pixels are written as 10-bit HEIF, the depth of phone HDR photos.
    """
    pillow_heif = _pillow_heif(path, "writing")
    channels = pixels.shape[2]
    if channels == 2:  # HEIF has no gray+alpha mode: spread gray over R, G, B
        pixels = np.concatenate([np.repeat(pixels[..., :1], 3, axis=2), pixels[..., 1:]], axis=2)
        channels = 4
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    if pixels.dtype == np.uint16:
        logger.info("%s: HEIF is written with 10 bits per channel; 16-bit pixels are rounded", path)
        mode += ";16"
    h, w = pixels.shape[:2]
    heif = pillow_heif.from_bytes(mode=mode, size=(w, h), data=np.ascontiguousarray(pixels).tobytes())
    if icc:
        heif[0].info["icc_profile"] = icc
    with c_output_caught():
        heif.save(str(tmp), format="HEIF", quality=int(quality or DEFAULT_HEIF_QUALITY),
                  exif=exif, xmp=xmp)
