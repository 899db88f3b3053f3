"""The review's images: before/after of each photo at the same size, and of each face zoomed.

Made once into ``OUT/.facefix-review/thumbs/`` as small JPEGs. A photo's set is
named by a key of everything it depends on (the source's and the output's
path, size and mtime, the face boxes, the size asked for), so a later review
makes only what is new or changed, and unused sets are removed. Photos are read
with :func:`facefix.photos.read_photo` (orientation applied, 16-bit, CMYK);
the originals are only read.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from facefix.common.atomic import atomic_write_bytes
from facefix.errors import FacefixError
from facefix.photos import read_photo
from facefix.restore.report import printable
from facefix.review.data import ReviewPhoto

THUMB_DIR = Path(".facefix-review") / "thumbs"
#: Changes whenever the images made change (new names then, old ones removed).
VERSION = 1
FACE_SIZE = 192
#: A face zoom shows the box and this much of its size around it on each side.
FACE_MARGIN = 0.35
QUALITY = 82


@dataclass(frozen=True)
class Thumb:
    """One image of the page: its file name in the thumbnail folder and its size."""

    name: str
    width: int
    height: int


@dataclass
class PhotoThumbs:
    """A photo's images; ``error`` says why some are missing (a source or output unreadable)."""

    before: Thumb | None = None
    after: Thumb | None = None
    faces: list[tuple[Thumb, Thumb] | None] = field(default_factory=list)
    error: str | None = None
    made: bool = False  # made now (False: reused from an earlier review, or none wanted)


@dataclass
class ThumbStats:
    made: int = 0
    reused: int = 0
    removed: int = 0


def _stat_part(path: Path | None) -> list:
    if path is None:
        return [None]
    try:
        st = os.stat(path)
    except OSError:
        return [os.fsencode(str(path)).hex(), None]
    return [os.fsencode(os.path.abspath(path)).hex(), st.st_size, st.st_mtime_ns]


def photo_key(photo: ReviewPhoto, size: int) -> str:
    """The name of a photo's image set: changes when anything the images show changes."""
    boxes = [list(f.box) for f in photo.faces or ()]
    parts = [VERSION, size, _stat_part(photo.source), _stat_part(photo.output), boxes]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:24]


def wanted(photo: ReviewPhoto) -> bool:
    """Whether a photo gets images: the source (and output) of anything facefix read."""
    return photo.status != "not read"


def make_thumbs(photos: list[ReviewPhoto], out_dir: Path, *, size: int = 640, workers: int | None = None,
                on_photo: Callable[[], None] | None = None) -> tuple[list[PhotoThumbs], ThumbStats]:
    """Make (or reuse) every photo's images; returns them in ``photos``' order.

    Args:
        size: the long side of the whole-photo images, in pixels.
        workers: decoding threads (default: up to 4, one per CPU).
        on_photo: called once per photo (a progress bar).
    """
    folder = Path(out_dir) / THUMB_DIR
    folder.mkdir(parents=True, exist_ok=True)
    keys = [photo_key(p, size) for p in photos]

    def one(i: int) -> PhotoThumbs:
        try:
            if not wanted(photos[i]):
                return PhotoThumbs()
            return _photo_thumbs(photos[i], folder, keys[i], size)
        finally:
            if on_photo is not None:
                on_photo()

    workers = workers or max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        result = list(pool.map(one, range(len(photos))))
    stats = ThumbStats(made=sum(t.made for t in result),
                       reused=sum(1 for t, p in zip(result, photos) if wanted(p) and not t.made and t.before is not None))
    used = {k for k, p in zip(keys, photos) if wanted(p)}
    for entry in folder.iterdir():  # our own folder: only our own files
        if entry.name.split("_", 1)[0] not in used:
            with contextlib.suppress(OSError):
                entry.unlink()
                stats.removed += 1
    return result, stats


def _names(key: str, count: int) -> list[str]:
    names = [f"{key}_before.jpg", f"{key}_after.jpg"]
    for i in range(count):
        names += [f"{key}_face{i}_before.jpg", f"{key}_face{i}_after.jpg"]
    return names


def _cached(folder: Path, names: list[str]) -> list[Thumb] | None:
    thumbs = []
    for name in names:
        try:
            with Image.open(folder / name) as im:  # the header only
                thumbs.append(Thumb(name, *im.size))
        except (OSError, ValueError):
            return None
    return thumbs


def _read_rgb8(path: Path) -> np.ndarray:
    return read_photo(path).rgb8()


def _photo_thumbs(photo: ReviewPhoto, folder: Path, key: str, size: int) -> PhotoThumbs:
    faces = photo.faces or ()
    has_after = photo.output is not None and photo.status in ("restored", "skipped", "no face")
    names = _names(key, len(faces))
    wanted_names = [n for n in names if has_after or "_after" not in n]
    cached = _cached(folder, wanted_names)
    if cached is not None:
        return _assemble(dict(zip(wanted_names, cached)), key, len(faces))
    try:
        before = _read_rgb8(photo.source)
    except (FacefixError, OSError) as exc:
        if photo.status == "failed":
            return PhotoThumbs()  # the run's own error already says why
        return PhotoThumbs(error=f"the original cannot be shown: {printable(str(exc))}")
    error = None
    after = None
    if has_after:
        try:
            after = _read_rgb8(photo.output)
        except (FacefixError, OSError) as exc:
            error = f"the output cannot be shown: {printable(str(exc))}"
    made: dict[str, Thumb] = {}
    h, w = before.shape[:2]
    scale = min(1.0, size / max(h, w))
    tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    made[f"{key}_before.jpg"] = _save(folder / f"{key}_before.jpg", _resize(before, tw, th))
    if after is not None:
        made[f"{key}_after.jpg"] = _save(folder / f"{key}_after.jpg", _resize(after, tw, th))
    sx = after.shape[1] / w if after is not None else 1.0  # --upscale: the output is larger
    sy = after.shape[0] / h if after is not None else 1.0
    for i, face in enumerate(faces):
        x0, y0, x1, y1 = _zoom_box(face.box, w, h)
        b = made[f"{key}_face{i}_before.jpg"] = _save(folder / f"{key}_face{i}_before.jpg",
                                                      _crop(before, x0, y0, x1, y1))
        if after is not None:
            crop = _crop(after, x0 * sx, y0 * sy, x1 * sx, y1 * sy, (b.width, b.height))
            made[f"{key}_face{i}_after.jpg"] = _save(folder / f"{key}_face{i}_after.jpg", crop)
    thumbs = _assemble(made, key, len(faces))
    thumbs.error, thumbs.made = error, True
    return thumbs


def _assemble(by_name: dict[str, Thumb], key: str, count: int) -> PhotoThumbs:
    faces: list[tuple[Thumb, Thumb] | None] = []
    for i in range(count):
        b, a = by_name.get(f"{key}_face{i}_before.jpg"), by_name.get(f"{key}_face{i}_after.jpg")
        faces.append((b, a) if b is not None and a is not None else None)
    return PhotoThumbs(before=by_name.get(f"{key}_before.jpg"), after=by_name.get(f"{key}_after.jpg"), faces=faces)


def _zoom_box(box: tuple[float, float, float, float], w: int, h: int) -> tuple[float, float, float, float]:
    """A square around the face box with a margin, kept inside the photo."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * FACE_MARGIN)
    side = max(8.0, min(side, w, h))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = min(max(cx - side / 2, 0.0), w - side)
    top = min(max(cy - side / 2, 0.0), h - side)
    return left, top, left + side, top + side


def _crop(rgb: np.ndarray, x0: float, y0: float, x1: float, y1: float,
          out: tuple[int, int] | None = None) -> np.ndarray:
    h, w = rgb.shape[:2]
    a, b = max(0, int(round(x0))), max(0, int(round(y0)))
    c, d = min(w, max(a + 1, int(round(x1)))), min(h, max(b + 1, int(round(y1))))
    region = rgb[b:d, a:c]
    if out is None:
        out = (FACE_SIZE, FACE_SIZE)
    return _resize(region, *out)


def _resize(rgb: np.ndarray, w: int, h: int) -> np.ndarray:
    if (rgb.shape[1], rgb.shape[0]) == (w, h):
        return rgb
    shrink = w * h < rgb.shape[0] * rgb.shape[1]
    return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def _save(path: Path, rgb: np.ndarray) -> Thumb:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, "JPEG", quality=QUALITY, optimize=True)
    atomic_write_bytes(path, buffer.getvalue())
    return Thumb(path.name, rgb.shape[1], rgb.shape[0])
