"""Encode a photo into a new file that carries its metadata, atomically."""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from facefix.errors import PhotoError
from facefix.photos import metadata as md
from facefix.photos.atomic import atomic_output
from facefix.photos.model import Photo

logger = logging.getLogger(__name__)

DEFAULT_JPEG_QUALITY = 95
_SUFFIX_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".tif": "TIFF",
                   ".tiff": "TIFF", ".webp": "WEBP", ".bmp": "BMP"}
_ALIASES = {"JPG": "JPEG", "TIF": "TIFF"}
# What each writer can carry (the gaps are Pillow's or the format's).
_CARRIES = {
    "JPEG": {"exif", "icc", "xmp", "dpi"},
    "PNG": {"exif", "icc", "xmp", "dpi"},
    "TIFF": {"exif", "icc", "xmp", "dpi"},
    "WEBP": {"exif", "icc", "xmp"},
    "BMP": {"dpi"},
}
_LOSSLESS_SOURCES = {"PNG", "TIFF", "BMP", "GIF"}


def _resolve_format(path: Path, format: str | None) -> str:
    if format is not None:
        name = _ALIASES.get(format.upper().lstrip("."), format.upper().lstrip("."))
        if name not in _CARRIES:
            raise PhotoError(f"{path}: cannot write format {format!r}; "
                             f"use one of {', '.join(sorted(_CARRIES))}")
        return name
    try:
        return _SUFFIX_FORMATS[path.suffix.lower()]
    except KeyError:
        raise PhotoError(f"{path}: cannot tell the format from the suffix {path.suffix!r}; "
                         f"use one of {', '.join(sorted(_SUFFIX_FORMATS))}") from None


def _same_file(a: Path, b: Path) -> bool:
    try:
        if os.path.samefile(a, b):  # catches hard links and case-insensitive names
            return True
    except OSError:
        pass  # one of them does not exist yet
    return a.resolve() == b.resolve()


def _to_8bit(pixels: np.ndarray) -> np.ndarray:
    return np.rint(pixels / 257.0).astype(np.uint8) if pixels.dtype == np.uint16 else pixels


def _pixels_for(photo: Photo, fmt: str, path: Path) -> np.ndarray:
    """The photo's pixels in a layout the format can hold, or a PhotoError."""
    pixels = photo.pixels
    channels = pixels.shape[2]
    if fmt == "JPEG" and photo.has_alpha:
        raise PhotoError(f"{path}: JPEG cannot hold transparency and this photo has an alpha "
                         "channel; write it as .png (or .webp/.tif) instead")
    if fmt in ("JPEG", "WEBP", "BMP") and pixels.dtype == np.uint16:
        logger.info("%s: %s holds 8 bits per channel; 16-bit pixels are rounded to 8", path, fmt)
        pixels = _to_8bit(pixels)
    if (fmt == "WEBP" and channels <= 2) or (fmt == "BMP" and channels == 2):
        # WebP has no gray modes, BMP no gray+alpha: spread gray over R, G, B
        pixels = np.concatenate([np.repeat(pixels[..., :1], 3, axis=2), pixels[..., 1:]], axis=2)
    return np.ascontiguousarray(pixels)


def _pil_image(pixels: np.ndarray) -> Image.Image:
    channels = pixels.shape[2]
    if pixels.dtype == np.uint16:  # only 1-channel 16-bit reaches Pillow
        return Image.fromarray(pixels[..., 0].astype("<u2"))  # -> mode "I;16"
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    return Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode=mode)


def _strip_exif_header(exif: bytes) -> bytes:
    return exif[len(md.EXIF_PREFIX):] if exif.startswith(md.EXIF_PREFIX) else exif


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _encode_png16(pixels: np.ndarray, *, exif: bytes | None, icc: bytes | None,
                  xmp: bytes | None, dpi: tuple[float, float] | None) -> bytes:
    """A 16-bit PNG with metadata chunks; Pillow cannot write 16-bit colour PNG."""
    h, w, c = pixels.shape
    rows = pixels.astype(">u2").reshape(h, w * c).view(np.uint8)
    filtered = rows.copy()
    filtered[1:] -= rows[:-1]  # PNG "Up" filter (byte-wise, mod 256)
    scanlines = np.concatenate([np.full((h, 1), 2, np.uint8), filtered], axis=1)
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    out = [b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", header)]
    if icc:
        out.append(_png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    if dpi:
        ppm = [round(v / 0.0254) for v in dpi]
        out.append(_png_chunk(b"pHYs", struct.pack(">IIB", ppm[0], ppm[1], 1)))
    if exif:
        out.append(_png_chunk(b"eXIf", _strip_exif_header(exif)))
    if xmp:
        out.append(_png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp))
    stream = zlib.compress(scanlines.tobytes(), 6)
    step = 1 << 20
    out.extend(_png_chunk(b"IDAT", stream[i:i + step]) for i in range(0, len(stream), step))
    out.append(_png_chunk(b"IEND", b""))
    return b"".join(out)


def _write_tiff16(tmp: Path, pixels: np.ndarray, path: Path, *, exif: bytes | None,
                  icc: bytes | None, xmp: bytes | None, dpi: tuple[float, float] | None) -> None:
    """16-bit colour TIFF via tifffile (Pillow has no 16-bit RGB mode)."""
    try:
        import tifffile
    except ImportError:
        raise PhotoError(
            f"{path}: writing a 16-bit colour TIFF needs the 'tifffile' package; "
            "install it with 'pip install tifffile', or write .png (also 16-bit)"
        ) from None
    extratags: list[tuple] = []
    tags = Image.Exif()
    if exif:
        tags.load(_strip_exif_header(exif))
    # tifffile cannot write an EXIF sub-IFD; carry the descriptive IFD0 text tags.
    for tag in (270, 271, 272, 306, 315, 33432):
        if isinstance(tags.get(tag), str) and tags[tag]:
            extratags.append((tag, "s", 0, tags[tag], True))
    if xmp:
        extratags.append((700, "B", len(xmp), xmp, True))
    c = pixels.shape[2]
    tifffile.imwrite(
        tmp, pixels, photometric="rgb" if c >= 3 else "minisblack",
        extrasamples=["unassalpha"] if c in (2, 4) else None, compression="zlib",
        iccprofile=icc, resolution=dpi, resolutionunit="INCH" if dpi else None,
        metadata=None, software=tags.get(305) or False, extratags=extratags,
    )


def write_photo(photo: Photo, path: Path | str, *, format: str | None = None,
                quality: int | None = None) -> Path:
    """Write ``photo`` to a new file, with its metadata, atomically.

    The file is written to a temp file in the destination directory, fsynced
    and renamed into place, so an interrupted write leaves no partial file;
    an existing file at ``path`` (never the source) is replaced whole.
    What is carried, per format:

    - JPEG: EXIF (orientation 1), ICC, XMP, DPI; quality and chroma
      subsampling from the source JPEG (else quality 95, 4:4:4). Refuses a
      photo with alpha (write PNG instead); 16-bit is rounded to 8.
    - PNG: EXIF (eXIf), ICC, XMP (iTXt ``XML:com.adobe.xmp``), DPI; 8 or 16 bit.
    - TIFF: 8-bit and 16-bit gray via Pillow, uncompressed (Pillow's
      compressed TIFF writer drops the EXIF sub-IFD): EXIF, ICC, XMP, DPI.
      16-bit colour via tifffile, deflate-compressed: ICC, XMP, DPI and the
      EXIF text tags of IFD0 (Make, Model, DateTime, ...); the EXIF sub-IFD
      (exposure, DateTimeOriginal) and GPS are not carried.
    - WebP: EXIF, ICC, XMP (no DPI in the format); lossless when the source
      was lossless (PNG/TIFF/BMP/GIF) and no quality is given, else lossy at
      the source JPEG's quality (else 95). Gray becomes RGB, 16-bit 8-bit.
    - BMP: DPI only.

    A metadata field the format cannot carry is dropped with a warning, as is
    an ICC profile that no longer matches the pixels (e.g. gray written as RGB).

    Args:
        photo: what to write.
        path: the new file. Never the file ``photo`` was read from.
        format: "JPEG", "PNG", "TIFF", "WEBP" or "BMP"; default from the suffix.
        quality: JPEG/WebP quality 1-100; default: the source's, else 95.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        PhotoError: the destination is the source photo, the format is
            unknown or cannot hold the photo, or the file cannot be written.
    """
    path = Path(path)
    fmt = _resolve_format(path, format)
    meta = photo.meta
    if meta.source is not None and _same_file(Path(meta.source), path):
        raise PhotoError(f"{path}: is the photo being restored; facefix never overwrites an input. "
                         "Choose another --output folder or a suffix")
    if path.is_dir():
        raise PhotoError(f"{path}: is a directory; give a file name to write the photo to")
    if quality is not None and not 1 <= int(quality) <= 100:
        raise PhotoError(f"{path}: quality {quality} is out of range; use 1 to 100")
    pixels = _pixels_for(photo, fmt, path)
    channels = pixels.shape[2]

    carried = {"exif": meta.exif, "icc": meta.icc, "xmp": meta.xmp, "dpi": meta.dpi}
    if carried["icc"] and not md.icc_fits(carried["icc"], channels):
        logger.warning("%s: the %s ICC profile does not fit %s pixels; not written", path,
                       md.icc_label(carried["icc"]), "gray" if channels <= 2 else "RGB")
        carried["icc"] = None
    dropped = sorted(k for k, v in carried.items() if v and k not in _CARRIES[fmt])
    if dropped:
        logger.warning("%s: %s cannot carry %s; written without", path, fmt, ", ".join(dropped))
    kept = {k: (v if k in _CARRIES[fmt] else None) for k, v in carried.items()}
    exif, icc, xmp, dpi = kept["exif"], kept["icc"], kept["xmp"], kept["dpi"]

    try:
        with atomic_output(path) as tmp:
            if pixels.dtype == np.uint16 and channels > 1 and fmt == "PNG":
                tmp.write_bytes(_encode_png16(pixels, exif=exif, icc=icc, xmp=xmp, dpi=dpi))
            elif pixels.dtype == np.uint16 and channels > 1:
                _write_tiff16(tmp, pixels, path, exif=exif, icc=icc, xmp=xmp, dpi=dpi)
            else:
                params = _pillow_params(photo, fmt, channels, quality,
                                        exif=exif, icc=icc, xmp=xmp, dpi=dpi)
                _pil_image(pixels).save(tmp, format=fmt, **params)
    except PhotoError:
        raise
    except (OSError, ValueError) as exc:
        raise PhotoError(f"{path}: could not be written ({exc}); check the folder exists, "
                         "is writable and has free space") from exc
    logger.debug("wrote %s (%s, %s)", path, fmt, pixels.shape)
    return path


def _pillow_params(photo: Photo, fmt: str, channels: int, quality: int | None, *,
                   exif: bytes | None, icc: bytes | None, xmp: bytes | None,
                   dpi: tuple[float, float] | None) -> dict:
    meta = photo.meta
    params: dict = {}
    if icc:
        params["icc_profile"] = icc
    if dpi:
        params["dpi"] = dpi
    if fmt == "TIFF":
        # XMP must ride inside the EXIF object: Pillow's tiffinfo= would
        # replace the EXIF, and its compressed (libtiff) writer drops the
        # EXIF sub-IFD, so the file is written uncompressed.
        tags = Image.Exif()
        if exif:
            tags.load(_strip_exif_header(exif))
        if xmp:
            tags[700] = xmp
        if len(tags):
            params["exif"] = tags
        return params
    if exif:
        params["exif"] = exif
    if fmt == "PNG":
        if xmp:
            info = PngImagePlugin.PngInfo()
            info.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8", "replace"))
            params["pnginfo"] = info
        return params
    if xmp and fmt in ("JPEG", "WEBP"):
        params["xmp"] = xmp
    source_q = meta.jpeg_quality if meta.format == "JPEG" else None
    if fmt == "JPEG":
        params["quality"] = int(quality or source_q or DEFAULT_JPEG_QUALITY)
        if channels == 3:
            params["subsampling"] = (meta.jpeg_subsampling if meta.format == "JPEG" and
                                     meta.jpeg_subsampling else "4:4:4")
    elif fmt == "WEBP":
        if quality is None and meta.format in _LOSSLESS_SOURCES:
            params["lossless"] = True
        else:
            params["quality"] = int(quality or source_q or DEFAULT_JPEG_QUALITY)
    return params
