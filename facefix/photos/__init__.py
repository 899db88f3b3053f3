"""Read and write photos so that nothing is lost.

Reading applies the EXIF orientation, keeps grayscale, alpha and 16-bit depth,
converts CMYK to RGB, and keeps the metadata (EXIF, ICC, XMP, DPI, IPTC, JPEG
comments and encoding, PNG text chunks, MPF pictures) aside in a
:class:`PhotoMeta`. Formats: JPEG, PNG, TIFF, WebP, BMP, HEIC/HEIF, AVIF (and
GIF, read only); see docs/formats.md. Writing makes a *new* file that carries
that metadata, atomically (temp file, fsync, rename), and never replaces the
photo it was read from.

    photo = read_photo(Path("IMG_0001.jpg"))
    restored = photo.with_rgb(restore(photo.rgb_float()))
    write_photo(restored, Path("out/IMG_0001.jpg"))
"""

from __future__ import annotations

from facefix.common.atomic import atomic_output, atomic_write_bytes
from facefix.photos.model import SUPPORTED_SUFFIXES, Photo, PhotoMeta, is_photo_path
from facefix.photos.read import DEFAULT_MAX_PIXELS, read_photo
from facefix.photos.write import write_photo

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_SUFFIXES",
    "Photo",
    "PhotoMeta",
    "atomic_output",
    "atomic_write_bytes",
    "is_photo_path",
    "read_photo",
    "write_photo",
]
