"""What a review shows, gathered from what a run left: per photo its source, output, status, why/error,
and per face its box, person and restorer.

Three sources, in this order (the first that exists is used, and the page says which):

1. ``--report FILE``: the JSON Lines report of ``facefix restore --report`` (see
   :mod:`facefix.restore.report`); everything, faces included.
2. ``OUT/.facefix-review.jsonl``: the same records, appended by every run into OUT
   (the review manifest), so a review needs no ``--report``.
3. ``OUT/.facefix-runs.sqlite``: the run record. It holds only finished photos
   (no failures, no files that are not photos) and no face details: the page
   shows the whole photo and says that faces were not recorded.

Records of several runs are merged per source file: a later record replaces an
earlier one, except that ``skipped`` (done by an earlier run) keeps the earlier
run's record, which has the faces.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sqlite3
from dataclasses import dataclass, field, replace
from pathlib import Path

from facefix.errors import UsageError
from facefix.restore.record import NO_OUTPUT, STATE_NAME
from facefix.restore.report import REVIEW_MANIFEST as MANIFEST_NAME

#: The review manifest a run appends to in OUT (the report's records, see :mod:`facefix.restore.report`).

STATUSES = ("restored", "no face", "skipped", "failed", "not read")


@dataclass(frozen=True)
class ReviewFace:
    """One face of a photo, as the run recorded it (``box`` in the source's upright pixels)."""

    index: int
    box: tuple[float, float, float, float]
    person: str
    restorer: str | None
    similarity: float | None = None
    match: str | None = None
    skipped: str | None = None


@dataclass(frozen=True)
class ReviewPhoto:
    """One photo of a run.

    Attributes:
        source: the original (a surrogate-escaped str for a non-UTF-8 name).
        output: the restored file, or None (a photo with no face to restore, a file not read).
        status: restored, no face, skipped, failed or not read.
        why: the resume decision or, for ``not read``, what the file is.
        error: for ``failed``: the message naming the file and the fix.
        faces: the faces; None when the data source did not record them.
    """

    source: Path
    output: Path | None
    status: str
    why: str | None = None
    error: str | None = None
    seconds: float | None = None
    faces: tuple[ReviewFace, ...] | None = None

    @property
    def persons(self) -> tuple[str, ...]:
        return tuple(sorted({f.person for f in self.faces or ()}))


@dataclass
class Gathered:
    """The photos of a review and where their data came from (``source``: "report", "manifest" or "run record")."""

    photos: list[ReviewPhoto]
    source: str
    path: Path
    notes: list[str] = field(default_factory=list)


def gather(out_dir: Path, report: Path | None = None) -> Gathered:
    """The photos of the runs into ``out_dir`` (see the module doc for where they come from).

    Raises:
        UsageError: ``out_dir`` is not a folder a run wrote into, or the data is unreadable
            (one line naming the file and the fix).
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise UsageError(f"{out_dir}: no such folder; give the folder you passed to 'facefix restore -o'")
    if report is not None:
        if not Path(report).is_file():
            raise UsageError(f"--report {report}: no such file; give the file 'facefix restore --report' wrote")
        return Gathered(read_records(Path(report), "--report"), "report", Path(report))
    manifest = out_dir / MANIFEST_NAME
    if manifest.is_file():
        damaged: list[int] = []
        photos = read_records(manifest, "the review manifest", damaged=damaged)
        notes = [f"{len(damaged)} damaged line(s) of {manifest.name} skipped (line {damaged[0]} first: a run was "
                 "killed while writing it); rerun 'facefix restore' to record those photos again"] if damaged else []
        return Gathered(photos, "manifest", manifest, notes)
    record = out_dir / STATE_NAME
    if record.is_file():
        photos = read_run_record(record, out_dir)
        note = ("faces were not recorded for these runs (only the run record is there): each card shows the "
                "whole photo; run 'facefix restore' with --report FILE and review with --report FILE to see faces, "
                "failures and skipped files")
        return Gathered(photos, "run record", record, [note])
    raise UsageError(f"{out_dir}: no facefix run found here (no {STATE_NAME} or {MANIFEST_NAME}); give the "
                     "folder you passed to 'facefix restore -o', or --report FILE")


def _path(record: dict, key: str) -> Path | None:
    raw = record.get(f"{key}_bytes")
    if raw is not None:
        return Path(os.fsdecode(base64.b64decode(raw)))
    value = record.get(key)
    return None if value is None else Path(value)


def read_records(path: Path, what: str, *, damaged: list[int] | None = None) -> list[ReviewPhoto]:
    """The photos of a JSON Lines report or manifest, merged per source (see the module doc).

    Args:
        damaged: given (a manifest, appended to by every run): a line that is not a record is skipped
            and its number added here. Not given (a ``--report``): it is an error, except a last
            line cut short (a run still writing, or killed).
    """
    photos: dict[str, ReviewPhoto] = {}
    faces: dict[str, list[ReviewFace]] = {}
    kept: set[str] = set()  # sources whose latest record was a "skipped" that kept the earlier one
    try:
        fh = open(path, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: {what} cannot be read ({exc.strerror or exc}); check the file") from exc
    with fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                kind = rec["record"]
                source = _path(rec, "file")
                if source is None:
                    raise KeyError("file")
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                if number > 1 and not line.endswith("\n"):
                    break  # the last line of a run still being written (or killed mid-write)
                if damaged is not None:
                    damaged.append(number)
                    continue
                raise UsageError(f"{path}:{number}: not a facefix report line ({exc}); give the JSON Lines file "
                                 "that 'facefix restore --report' wrote") from exc
            key = str(source)
            if kind == "photo":
                photo = ReviewPhoto(source=source, output=_path(rec, "output"), status=str(rec.get("status")),
                                    why=rec.get("why"), error=rec.get("error"), seconds=rec.get("seconds"),
                                    faces=() if _faces_known(rec) else None)
                earlier = photos.get(key)
                if photo.status == "skipped" and earlier is not None and earlier.status in ("restored", "no face"):
                    kept.add(key)  # done by the earlier run: its record has the faces
                    continue
                kept.discard(key)
                photos[key] = photo
                faces[key] = []
            elif kind == "face" and key in photos and key not in kept:
                box = rec.get("box") or ()
                if len(box) != 4:
                    continue
                faces[key].append(ReviewFace(index=int(rec.get("face", len(faces[key]))),
                                             box=tuple(float(v) for v in box), person=str(rec.get("person") or "generic"),
                                             restorer=rec.get("restorer"), similarity=rec.get("similarity"),
                                             match=rec.get("match"), skipped=rec.get("skipped")))
    out = []
    for key, photo in photos.items():
        if faces[key] or photo.faces is not None:
            photo = replace(photo, faces=tuple(faces[key]))
        out.append(photo)
    return sorted(out, key=lambda p: os.fsencode(str(p.source)))


def _faces_known(rec: dict) -> bool:
    """Whether a photo record's faces are all in the records after it (none for a photo with no face)."""
    return rec.get("status") in ("restored", "no face") or (rec.get("status") == "skipped" and rec.get("why") == "done, no face")


def read_run_record(path: Path, out_dir: Path) -> list[ReviewPhoto]:
    """The finished photos of the run record (read only; no faces, no failures)."""
    uri = Path(os.path.abspath(path)).as_uri() + "?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise UsageError(f"{path}: the run record cannot be opened ({exc}); pass --report FILE instead") from exc
    try:
        rows = db.execute("SELECT target, source, output_size, faces, seconds FROM done").fetchall()
    except sqlite3.Error as exc:
        raise UsageError(f"{path}: the run record is unreadable ({exc}); pass --report FILE instead") from exc
    finally:
        with contextlib.suppress(sqlite3.Error):
            db.close()
    photos = []
    for target, source, output_size, faces, seconds in rows:
        target, source = os.fsdecode(target), os.fsdecode(source)  # a BLOB: a non-UTF-8 name
        output = Path(target) if os.path.isabs(target) else out_dir / target
        written = output_size != NO_OUTPUT
        photos.append(ReviewPhoto(source=Path(source), output=output if written else None,
                                  status="restored" if written and faces else "no face",
                                  why="recorded", seconds=seconds, faces=None))
    return sorted(photos, key=lambda p: os.fsencode(str(p.source)))
