"""Encode a photo into a new file that carries its metadata, atomically."""

from __future__ import annotations

import io
import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin, features

from facefix.common.atomic import atomic_output
from facefix.common.quiet import c_output_caught, quiet_decoders
from facefix.errors import PhotoError
from facefix.photos import bmp, heif, jpeg
from facefix.photos import exif as exif_md
from facefix.photos import metadata as md
from facefix.photos.model import Photo

logger = logging.getLogger(__name__)

DEFAULT_JPEG_QUALITY = 95
_SUFFIX_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".tif": "TIFF",
                   ".tiff": "TIFF", ".webp": "WEBP", ".bmp": "BMP", ".heic": "HEIF",
                   ".heif": "HEIF", ".hif": "HEIF", ".avif": "AVIF"}
_ALIASES = {"JPG": "JPEG", "TIF": "TIFF", "HEIC": "HEIF"}
# What each writer can carry (the gaps are Pillow's or the format's).
_CARRIES = {
    "JPEG": {"exif", "icc", "xmp", "dpi", "IPTC", "comments", "MPF pictures"},
    "PNG": {"exif", "icc", "xmp", "dpi", "PNG text and colour chunks"},
    "TIFF": {"exif", "icc", "xmp", "dpi", "IPTC"},
    "WEBP": {"exif", "icc", "xmp"},
    "BMP": {"icc", "dpi"},
    "HEIF": {"exif", "icc", "xmp"},
    "AVIF": {"exif", "icc", "xmp"},
}
_LOSSLESS_SOURCES = {"PNG", "TIFF", "BMP", "GIF"}
_EIGHT_BIT = ("JPEG", "WEBP", "BMP", "AVIF")


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
    if fmt in _EIGHT_BIT and pixels.dtype == np.uint16:
        logger.info("%s: %s holds 8 bits per channel; 16-bit pixels are rounded to 8", path, fmt)
        pixels = _to_8bit(pixels)
    if (fmt in ("WEBP", "AVIF") and channels <= 2) or (fmt == "BMP" and channels == 2):
        # WebP and AVIF (in Pillow) have no gray modes, BMP no gray+alpha: spread gray over R, G, B
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
                  xmp: bytes | None, dpi: tuple[float, float] | None,
                  chunks: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
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
    # all may precede IDAT; sRGB and iCCP exclude each other (the profile wins, as in Pillow)
    out.extend(_png_chunk(kind, body) for kind, body in chunks if not (icc and kind == b"sRGB"))
    stream = zlib.compress(scanlines.tobytes(), 6)
    step = 1 << 20
    out.extend(_png_chunk(b"IDAT", stream[i:i + step]) for i in range(0, len(stream), step))
    out.append(_png_chunk(b"IEND", b""))
    return b"".join(out)


def _write_tiff16(tmp: Path, pixels: np.ndarray, path: Path, *, exif: bytes | None,
                  icc: bytes | None, xmp: bytes | None, dpi: tuple[float, float] | None,
                  iptc: bytes | None = None, photoshop: bytes | None = None) -> None:
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
    for tag, block in ((33723, iptc), (34377, photoshop)):
        if block:
            extratags.append((tag, "B", len(block), block, True))
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

    - JPEG: EXIF (orientation 1), ICC, XMP, DPI, IPTC (the Photoshop APP13
      block), COM comments and a source's MPF pictures with their index; from
      a source JPEG its quantization tables, chroma subsampling (4:4:0 and
      4:1:1 through OpenCV's encoder) and progressive scan, else quality 95,
      4:4:4. Refuses a photo with alpha (write PNG instead); 16-bit is rounded to 8.
    - PNG: EXIF (eXIf), ICC, XMP (iTXt ``XML:com.adobe.xmp``), DPI, and a
      PNG source's text chunks and gAMA/cHRM/sRGB/cICP/tIME; 8 or 16 bit.
    - TIFF: 8-bit and 16-bit gray via Pillow, uncompressed (Pillow's
      compressed TIFF writer drops the EXIF sub-IFD): EXIF, ICC, XMP, DPI,
      IPTC (tag 33723) and the Photoshop block (34377, as in 16-bit colour).
      16-bit colour via tifffile, deflate-compressed: ICC, XMP, DPI and the
      EXIF text tags of IFD0 (Make, Model, DateTime, ...); the EXIF sub-IFD
      (exposure, DateTimeOriginal) and GPS are not carried.
    - WebP: EXIF, ICC, XMP (no DPI in the format); lossless when the source
      was lossless (PNG/TIFF/BMP/GIF) and no quality is given, else lossy at
      the source JPEG's quality (else 95). Gray becomes RGB, 16-bit 8-bit.
    - BMP: DPI, and ICC and alpha in a BITMAPV5HEADER (Pillow writes neither).
    - HEIC/HEIF (pillow-heif): EXIF, ICC, XMP; quality 90 unless given;
      16-bit is written as 10-bit. AVIF (Pillow): EXIF, ICC, XMP; 8-bit.

    EXIF's ExifImageWidth/Height are set to the written size.
    A metadata field the format cannot carry is dropped with a warning, as is
    an ICC profile that no longer matches the pixels (e.g. gray written as RGB).
    What the encoders print (libjpeg's notes) is logged at debug level, not printed.

    Args:
        photo: what to write.
        path: the new file. Never the file ``photo`` was read from.
        format: "JPEG", "PNG", "TIFF", "WEBP", "BMP", "HEIF" or "AVIF"; default
            from the suffix (.heic/.heif/.hif are HEIF).
        quality: JPEG/WebP/AVIF/HEIF quality 1-100; default: the source's
            (a JPEG's own tables), else 95 (HEIF 90).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        PhotoError: the destination is the source photo, the format is
            unknown or cannot hold the photo, or the file cannot be written.
    """
    path = Path(path)
    fmt = _resolve_format(path, format)
    if fmt == "AVIF" and not features.check("avif"):
        raise PhotoError(f"{path}: this Pillow was built without AVIF support; upgrade it with "
                         "'pip install --upgrade pillow', or write .heic or .jpg")
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

    exif = exif_md.set_exif_size(meta.exif, (photo.width, photo.height)) if meta.exif else None
    carried = {"exif": exif, "icc": meta.icc, "xmp": meta.xmp, "dpi": meta.dpi,
               "IPTC": meta.photoshop or meta.iptc, "comments": meta.comments,
               "MPF pictures": meta.mpf_images, "PNG text and colour chunks": meta.png_chunks}
    if carried["icc"] and not md.icc_fits(carried["icc"], channels):
        logger.warning("%s: the %s ICC profile does not fit %s pixels; not written", path,
                       md.icc_label(carried["icc"]), "gray" if channels <= 2 else "RGB")
        carried["icc"] = None
    dropped = sorted(k for k, v in carried.items() if v and k not in _CARRIES[fmt])
    if dropped:
        logger.warning("%s: %s cannot carry %s; written without", path, fmt, ", ".join(dropped))
    kept = {k: (v if k in _CARRIES[fmt] else None) for k, v in carried.items()}
    exif, icc, xmp, dpi = kept["exif"], kept["icc"], kept["xmp"], kept["dpi"]
    photoshop = kept["IPTC"] if meta.photoshop else (
        jpeg.photoshop_from_iptc(kept["IPTC"]) if kept["IPTC"] else None)
    iptc = (meta.iptc or jpeg.iptc_from_photoshop(photoshop)) if kept["IPTC"] else None
    png_chunks = kept["PNG text and colour chunks"] or ()

    try:
        with atomic_output(path) as tmp, quiet_decoders(path):
            if fmt == "HEIF":
                heif.write_heif(tmp, pixels, path, quality=quality, exif=exif, icc=icc, xmp=xmp)
            elif fmt == "BMP" and (icc or channels == 4):  # Pillow's BMP writer has neither
                tmp.write_bytes(bmp.encode_bmp(pixels, icc=icc, dpi=dpi))
            elif pixels.dtype == np.uint16 and channels > 1 and fmt == "PNG":
                tmp.write_bytes(_encode_png16(pixels, exif=exif, icc=icc, xmp=xmp, dpi=dpi,
                                              chunks=png_chunks))
            elif pixels.dtype == np.uint16 and channels > 1:
                _write_tiff16(tmp, pixels, path, exif=exif, icc=icc, xmp=xmp, dpi=dpi,
                              iptc=iptc, photoshop=photoshop)
            else:
                params = _pillow_params(photo, fmt, channels, quality,
                                        exif=exif, icc=icc, xmp=xmp, dpi=dpi)
                if fmt == "TIFF" and (iptc or photoshop):
                    tags = params.setdefault("exif", Image.Exif())
                    tags.update({t: v for t, v in ((33723, iptc), (34377, photoshop)) if v})
                elif fmt == "PNG" and png_chunks:
                    info = params.setdefault("pnginfo", PngImagePlugin.PngInfo())
                    for kind, body in png_chunks:
                        info.add(kind, body)
                if fmt == "JPEG":
                    _save_jpeg(tmp, _pil_image(pixels), params, photoshop=photoshop,
                               comments=kept["comments"] or (),
                               pictures=kept["MPF pictures"] or (),
                               quality=int(quality or meta.jpeg_quality or DEFAULT_JPEG_QUALITY))
                else:
                    with c_output_caught():
                        _pil_image(pixels).save(tmp, format=fmt, **params)
    except PhotoError:
        raise
    except (OSError, ValueError) as exc:
        raise PhotoError(f"{path}: could not be written ({exc}); check the folder exists, "
                         "is writable and has free space") from exc
    logger.debug("wrote %s (%s, %s)", path, fmt, pixels.shape)
    return path


def _save_jpeg(tmp: Path, image: Image.Image, params: dict, *, photoshop: bytes | None,
               comments: tuple[bytes, ...], pictures: tuple[tuple[int, bytes], ...],
               quality: int) -> None:
    """A JPEG with its APP13 (IPTC), COM segments and, for MPF pictures, the MPF index."""
    extra = jpeg.mpf_placeholder(1 + len(pictures)) if pictures else b""
    params["extra"] = extra + jpeg.segments(photoshop, comments)
    sampling = params.get("subsampling")
    if not pictures and sampling not in jpeg.OPENCV_SUBSAMPLINGS:
        with c_output_caught():  # libjpeg's notes ("Caution: quantization tables are too coarse")
            image.save(tmp, format="JPEG", **params)
        return
    buffer = io.BytesIO()
    with c_output_caught():
        if sampling in jpeg.OPENCV_SUBSAMPLINGS:  # Pillow's encoder has no 4:4:0 / 4:1:1
            header = {k: v for k, v in params.items()
                      if k not in ("subsampling", "qtables", "progressive", "quality")}
            Image.new("RGB", (8, 8)).save(buffer, format="JPEG", **header)
            data = jpeg.encode_with_opencv(np.asarray(image), buffer.getvalue(), quality=quality,
                                           sampling=sampling,
                                           progressive=bool(params.get("progressive")))
        else:
            image.save(buffer, format="JPEG", **params)
            data = buffer.getvalue()
    tmp.write_bytes(jpeg.join_mpf(data, pictures) if pictures else data)


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
    if xmp and fmt in ("JPEG", "WEBP", "AVIF"):
        params["xmp"] = xmp
    same = meta.format == "JPEG"
    source_q = meta.jpeg_quality if same else None
    if fmt == "JPEG":
        if quality is None and same and meta.jpeg_qtables:  # the source's own tables, exactly
            params["qtables"] = [list(table) for table in meta.jpeg_qtables]
        else:
            params["quality"] = int(quality or source_q or DEFAULT_JPEG_QUALITY)
        if channels == 3:
            sampling = meta.jpeg_subsampling if same and meta.jpeg_subsampling else "4:4:4"
            if sampling not in jpeg.ENCODER_SUBSAMPLINGS + tuple(jpeg.OPENCV_SUBSAMPLINGS):
                sampling = "4:4:4"  # unknown to both encoders; 4:4:4 keeps all the colour
            params["subsampling"] = sampling  # 4:4:0 and 4:1:1 go through OpenCV
        if same and meta.jpeg_progressive:
            params["progressive"] = True
    elif fmt == "AVIF":
        params["quality"] = int(quality or source_q or DEFAULT_JPEG_QUALITY)
    elif fmt == "WEBP":
        if quality is None and meta.format in _LOSSLESS_SOURCES:
            params["lossless"] = True
        else:
            params["quality"] = int(quality or source_q or DEFAULT_JPEG_QUALITY)
    return params
