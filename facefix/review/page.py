"""Write the review page: ``OUT/facefix-review.html``, one card per photo, its images beside it.

:func:`write_review` gathers the runs' records (:mod:`facefix.review.data`), makes
or reuses the images (:mod:`facefix.review.thumbs`) and writes the page
(:mod:`facefix.review.template`) atomically. The page links only to files
under OUT (relative, URL-encoded) and to the originals (``file://`` URLs);
no name is ever put in the page as HTML.
"""

from __future__ import annotations

import html
import json
import os
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from facefix.common.atomic import atomic_write_bytes
from facefix.errors import UsageError
from facefix.restore.report import printable
from facefix.review.data import Gathered, ReviewPhoto, gather
from facefix.review.template import PAGE
from facefix.review.thumbs import THUMB_DIR, PhotoThumbs, Thumb, ThumbStats, make_thumbs

PAGE_NAME = "facefix-review.html"


@dataclass(frozen=True)
class ReviewResult:
    """What :func:`write_review` did."""

    page: Path
    photos: int
    source: str  # where the data came from: report, manifest or run record
    data_path: Path
    thumbs: ThumbStats
    notes: tuple[str, ...]


def write_review(out_dir: Path, *, report: Path | None = None, size: int = 640,
                 on_start: Callable[[int], None] | None = None,
                 on_photo: Callable[[], None] | None = None) -> ReviewResult:
    """Write ``out_dir/facefix-review.html`` for the runs into ``out_dir``.

    Args:
        report: a ``--report`` file to take the records from (default: OUT's manifest or run record).
        size: the long side of the whole-photo images (pixels).
        on_start, on_photo: progress: the number of photos, then once per photo.

    Raises:
        UsageError: not a run's output folder, unreadable data, an unusable ``size``.
    """
    if not 64 <= size <= 4096:
        raise UsageError(f"--size {size}: give a long side between 64 and 4096 pixels")
    out_dir = Path(out_dir)
    gathered = gather(out_dir, report)
    if on_start is not None:
        on_start(len(gathered.photos))
    thumbs, stats = make_thumbs(gathered.photos, out_dir, size=size, on_photo=on_photo)
    page = out_dir / PAGE_NAME
    atomic_write_bytes(page, render(gathered, thumbs, out_dir).encode("utf-8"))
    return ReviewResult(page, len(gathered.photos), gathered.source, gathered.path, stats, tuple(gathered.notes))


def _href(path: Path, out_dir: Path) -> str:
    """A link to ``path``: relative to the page when under OUT, else a ``file://`` URL (bytes URL-encoded)."""
    full = os.path.abspath(path)
    rel = os.path.relpath(full, os.path.abspath(out_dir))
    if not rel.startswith(".." + os.sep) and rel != "..":
        return urllib.parse.quote(os.fsencode(rel))
    return "file://" + urllib.parse.quote(os.fsencode(full))


def _thumb(t: Thumb | None) -> list | None:
    return None if t is None else [t.name, t.width, t.height]


def _common_root(photos: list[ReviewPhoto]) -> str:
    folders = [os.path.dirname(os.path.abspath(p.source)) for p in photos]
    if not folders:
        return ""
    try:
        return os.path.commonpath(folders)
    except ValueError:  # different drives
        return ""


def photo_data(photo: ReviewPhoto, thumbs: PhotoThumbs, out_dir: Path, root: str) -> dict:
    """One card's data (all text as printable Unicode)."""
    full = os.path.abspath(photo.source)
    name = os.path.relpath(full, root) if root else full
    faces = None
    if photo.faces is not None:
        faces = []
        for face, pair in zip(photo.faces, thumbs.faces or [None] * len(photo.faces)):
            faces.append({"index": face.index, "person": printable(face.person),
                          "restorer": face.restorer, "similarity": face.similarity, "match": face.match,
                          "skipped": face.skipped,
                          "before": _thumb(pair[0]) if pair else None, "after": _thumb(pair[1]) if pair else None})
    output_href = None
    if photo.output is not None and os.path.exists(photo.output):
        output_href = _href(photo.output, out_dir)
    return {
        "name": printable(name), "file": printable(full), "status": photo.status,
        "why": printable(photo.why) if photo.why else None,
        "error": printable(photo.error) if photo.error else None,
        "seconds": photo.seconds, "faces": faces, "persons": [printable(p) for p in photo.persons],
        "before": _thumb(thumbs.before), "after": _thumb(thumbs.after), "thumb_error": thumbs.error,
        "output_href": output_href, "source_href": "file://" + urllib.parse.quote(os.fsencode(full)),
    }


def render(gathered: Gathered, thumbs: list[PhotoThumbs], out_dir: Path) -> str:
    """The page's HTML."""
    root = _common_root(gathered.photos)
    data = {
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "source": gathered.source,
        "notes": list(gathered.notes),
        "thumbs": urllib.parse.quote(THUMB_DIR.as_posix()) + "/",
        "photos": [photo_data(p, t, out_dir, root) for p, t in zip(gathered.photos, thumbs)],
    }
    blob = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    # Inside a <script> element "</script" would end it and "<!--" change how it is parsed: no "<" at all
    # (JSON has "<" only inside strings, where \u003c means the same).
    blob = blob.replace("<", "\\u003c")
    title = html.escape(f"facefix review · {printable(str(Path(os.path.abspath(out_dir)).name))}")
    # the data first: its placeholder is the first "__DATA__" only while the title is not yet in
    return PAGE.replace("__DATA__", blob, 1).replace("__TITLE__", title, 1)
