"""The in-memory photo: pixels plus the metadata kept aside for writing."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

SUPPORTED_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp",
                                ".heic", ".heif", ".hif", ".avif"})

# ITU-R BT.601 luma, the weights Pillow's convert("L") uses, so a gray photo
# that went through RGB comes back to the same gray values.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def is_photo_path(path: Path | str) -> bool:
    """True when ``path`` has a photo suffix facefix reads and writes (any case)."""
    return Path(path).suffix.lower() in SUPPORTED_SUFFIXES


@dataclass(frozen=True)
class PhotoMeta:
    """What a photo carried besides its pixels, kept aside to write it back.

    Args:
        format: the source's Pillow format name ("JPEG", "PNG", "TIFF", ...).
        mode: the source's Pillow mode before conversion ("RGB", "CMYK", "P",
            "I;16", ...). A 16-bit RGB file reports "RGB": Pillow has no 16-bit
            RGB mode; see ``bit_depth``.
        bit_depth: 8 or 16 bits per channel, as decoded into ``Photo.pixels``.
        exif: the EXIF block as ``b"Exif\\0\\0"`` + TIFF structure, with the
            Orientation tag already reset to 1 (the pixels are upright).
        icc: the ICC profile the pixels are in (for a CMYK source converted
            through its profile: the sRGB profile), or None.
        xmp: the XMP packet (its tiff:Orientation, if any, reset to 1), or None.
        dpi: (x, y) dots per inch, or None.
        jpeg_quality: for a JPEG source, the IJG quality (1-100) whose
            quantization tables are closest to the file's; None otherwise.
        jpeg_subsampling: for a colour JPEG source, "4:4:4", "4:2:2", "4:2:0",
            "4:4:0" or "4:1:1".
        jpeg_qtables: for a JPEG source, its quantization tables (natural
            order), so a JPEG written at the source's quality reuses them exactly.
        jpeg_progressive: the source JPEG was progressive.
        comments: a JPEG source's COM segments, in order.
        photoshop: the Photoshop image resource block (JPEG APP13 "Photoshop
            3.0", TIFF tag 34377); it holds the IPTC record (resource 0x0404).
        iptc: the IPTC-IIM records (captions, keywords, by-line, copyright,
            dates) on their own, as TIFF tag 33723 holds them.
        png_chunks: a PNG source's colour and text chunks as (type, data):
            tEXt/zTXt/iTXt (but XMP, kept in ``xmp``), gAMA, cHRM, sRGB, cICP, tIME.
        mpf_images: a JPEG source's further MPF pictures (previews, depth
            maps), as their original bytes with their MP entry attribute.
        source: the file the photo was read from; :func:`write_photo` refuses
            to write over it.
        frames: the number of frames in the source (only the first is used).
    """

    format: str
    mode: str
    bit_depth: int = 8
    exif: bytes | None = None
    icc: bytes | None = None
    xmp: bytes | None = None
    dpi: tuple[float, float] | None = None
    jpeg_quality: int | None = None
    jpeg_subsampling: str | None = None
    jpeg_qtables: tuple[tuple[int, ...], ...] | None = None
    jpeg_progressive: bool = False
    comments: tuple[bytes, ...] = ()
    photoshop: bytes | None = None
    iptc: bytes | None = None
    png_chunks: tuple[tuple[bytes, bytes], ...] = ()
    mpf_images: tuple[tuple[int, bytes], ...] = ()
    source: Path | None = None
    frames: int = 1


@dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous; compare .pixels yourself
class Photo:
    """Upright pixels and the metadata to write them back with.

    Args:
        pixels: H×W×C, C = 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA);
            uint8 or uint16; EXIF orientation already applied. Treat as
            read-only: derive new photos with :meth:`with_rgb`.
        meta: see :class:`PhotoMeta`.
    """

    pixels: np.ndarray
    meta: PhotoMeta

    def __post_init__(self) -> None:
        p = self.pixels
        if not isinstance(p, np.ndarray) or p.ndim != 3 or p.shape[2] not in (1, 2, 3, 4):
            shape = getattr(p, "shape", None)
            raise ValueError(f"Photo.pixels must be H×W×C with C in 1..4, got shape {shape}")
        if p.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"Photo.pixels must be uint8 or uint16, got {p.dtype}")

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def has_alpha(self) -> bool:
        return self.pixels.shape[2] in (2, 4)

    @property
    def _max_value(self) -> float:
        return 65535.0 if self.pixels.dtype == np.uint16 else 255.0

    @functools.cached_property
    def is_grayscale(self) -> bool:
        """True for a 1-/2-channel photo, and for colour whose R, G and B are equal.

        Old scans are often saved as RGB with three identical channels; a
        restorer may tint them, so the caller can bring the result back to gray.
        """
        p = self.pixels
        if p.shape[2] <= 2:
            return True
        return bool(np.array_equal(p[..., 0], p[..., 1]) and np.array_equal(p[..., 1], p[..., 2]))

    def rgb_float(self) -> np.ndarray:
        """H×W×3 float32 in [0, 1]: gray expanded to three channels, alpha dropped.

        float32 holds every 16-bit value exactly enough that
        ``with_rgb(rgb_float())`` gives back identical pixels.
        """
        color = self.pixels[..., :1] if self.pixels.shape[2] <= 2 else self.pixels[..., :3]
        rgb = color.astype(np.float32) / np.float32(self._max_value)
        return np.repeat(rgb, 3, axis=2) if rgb.shape[2] == 1 else rgb

    def rgb8(self) -> np.ndarray:
        """H×W×3 uint8 RGB (rounded from 16 bits), e.g. for face detection."""
        color = self.pixels[..., :1] if self.pixels.shape[2] <= 2 else self.pixels[..., :3]
        if color.dtype == np.uint16:
            color = np.rint(color / 257.0).astype(np.uint8)
        return np.repeat(color, 3, axis=2) if color.shape[2] == 1 else np.ascontiguousarray(color)

    def with_rgb(self, rgb: np.ndarray) -> Photo:
        """A new photo in this photo's layout from a float RGB image.

        Gray photos go back to one channel (BT.601 luma), alpha is kept (resized
        to the new size if ``rgb`` is larger, e.g. after upscaling), 16-bit
        stays 16-bit; values are clipped to [0, 1] and rounded, not truncated.
        The metadata is kept as is (DPI included: an upscaled photo prints
        larger, not sharper).

        Args:
            rgb: H×W×3 float array in [0, 1]; any size.

        Returns:
            A new :class:`Photo` with the same ``meta``.
        """
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or not np.issubdtype(rgb.dtype, np.floating):
            raise ValueError(f"with_rgb needs an H×W×3 float image in [0, 1], "
                             f"got {rgb.dtype} {rgb.shape}")
        channels = self.pixels.shape[2]
        color = rgb.astype(np.float32, copy=False)
        if channels <= 2:
            color = (color @ _LUMA)[..., None]
        top = self._max_value
        out = np.rint(np.clip(color, 0.0, 1.0) * np.float32(top)).astype(self.pixels.dtype)
        if self.has_alpha:
            alpha = self.pixels[..., -1]
            h, w = out.shape[:2]
            if alpha.shape != (h, w):
                shrink = h * w < alpha.size
                interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
                alpha = cv2.resize(alpha, (w, h), interpolation=interp)
            out = np.concatenate([out, alpha[..., None]], axis=2)
        return Photo(pixels=out, meta=self.meta)
