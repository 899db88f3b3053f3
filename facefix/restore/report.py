"""The ``--report FILE`` of a batch: JSON Lines, one record per photo and per face.

Records are appended as each photo finishes (a photo's lines in one write,
flushed), so a report of an interrupted run holds every photo finished so far
and never half a line::

    {"record": "photo", "file": "...", "output": "...", "status": "restored", "why": "new",
     "faces": 2, "seconds": 1.21, "error": null}
    {"record": "face", "file": "...", "face": 0, "box": [...], "person": "alice",
     "similarity": 0.93, "match": "matched", "restorer": "fast/alice", "skipped": null,
     "seconds": 0.18, "error": null}

``status`` is ``restored``, ``no face`` (nothing to restore: ``output`` is
null, or the copy ``--copy-unchanged`` wrote), ``skipped`` (done by an
earlier run; see ``why``: ``done`` or ``done, no face``), ``failed``
(``error`` names the file and the fix) or ``not read`` (a file of a scanned
folder that is not a photo facefix reads; ``why`` says what it is and the fix).

File names are bytes on Linux and need not be UTF-8. The report is UTF-8
JSON, so a name that is not valid UTF-8 is written readable, each
undecodable byte as the four characters ``\\xNN`` (``caf\\xe9.jpg``), and its
exact bytes are given too, base64-encoded, in ``file_bytes`` (``output_bytes``
for the output); those keys appear only for such names. To get the path
back: ``base64.b64decode(r["file_bytes"])`` if present, else ``r["file"]``. ``similarity`` is the
cosine similarity of the face's identity embedding to the chosen person (for
a generic face: to the closest enrolled person); distance = 1 - similarity.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from pathlib import Path
from typing import IO

from facefix.common.text import is_utf8
from facefix.errors import UsageError
from facefix.restore.runner import Outcome


def printable(text: str) -> str:
    """``text`` as valid Unicode: a surrogate-escaped byte (from a non-UTF-8
    file name) becomes ``\\xNN``; everything else is unchanged."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


_PATH_KEYS = ("file", "output")


def json_safe(record: dict) -> dict:
    """A record that encodes as UTF-8 JSON, with non-UTF-8 names recoverable (see the module doc)."""
    safe = {}
    for key, value in record.items():
        if isinstance(value, str):
            safe[key] = printable(value)
            if key in _PATH_KEYS and not is_utf8(value):
                safe[f"{key}_bytes"] = base64.b64encode(os.fsencode(value)).decode("ascii")
        else:
            safe[key] = value
    return safe


def outcome_records(outcome: Outcome) -> list[dict]:
    """The report lines of one job: its photo record, then one per face."""
    job, result = outcome.job, outcome.result
    faces = result.faces if result is not None else ()
    restored = [f for f in faces if f.skipped is None]
    if result is not None:
        output = None if result.output is None else str(result.output)
    else:
        no_output = outcome.status == "not read" or (outcome.status == "skipped" and outcome.why == "done, no face")
        output = None if no_output else str(job.target)
    photo = {
        "record": "photo",
        "file": str(job.source),
        "output": output,
        "status": outcome.status,
        "why": outcome.why or None,
        "faces": len(restored),
        "seconds": round(outcome.seconds, 4),
        "error": outcome.error,
    }
    per_face = outcome.restore_seconds / len(restored) if restored else 0.0
    records = [photo]
    for face in faces:
        records.append({"record": "face", "file": str(job.source), **face.to_dict(),
                        "seconds": round(per_face, 4) if face.skipped is None else 0.0,
                        "error": None})
    return [json_safe(r) for r in records]


#: Every run into an output folder appends its records here, so that ``facefix review OUT``
#: has the faces, failures and skipped files even when no ``--report`` was asked for.
REVIEW_MANIFEST = ".facefix-review.jsonl"

#: A skipped photo whose last manifest record has one of these statuses adds nothing (the
#: review keeps that record, with its faces).
_DONE = ("restored", "no face")


class ReportWriter:
    """Append outcomes to a JSON Lines file (thread-safe; one write per photo).

    Args:
        path: the report file; replaced at the start of a run (``append``: added to).
        what: how an error names it (``--report``, or the review record).
    """

    def __init__(self, path: Path, *, append: bool = False, what: str = "--report"):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh: IO[str] = open(self.path, "a" if append else "w", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{what} {self.path}: cannot be written ({exc.strerror or exc}); "
                             "give a writable file path") from exc

    def write(self, outcome: Outcome) -> None:
        if outcome.status == "cancelled":
            return
        block = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in outcome_records(outcome))
        with self._lock:
            self._fh.write(block)
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            self._fh.close()


def _source_key(record: dict) -> str | None:
    """A record's source as the file writes it (the exact bytes where the name is not UTF-8)."""
    return record.get("file_bytes") or record.get("file")


def latest_photo_records(path: Path) -> dict[str, tuple[str, str | None]]:
    """Per source, the (status, why) of its last photo record in a JSON Lines report or manifest.

    Lines that are not records (a run killed mid-write) are passed over, as
    :func:`facefix.review.data.read_records` passes them over; a missing file is empty.
    """
    latest: dict[str, tuple[str, str | None]] = {}
    try:
        fh = open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return latest
    except OSError as exc:
        raise UsageError(f"the review record {path}: cannot be read ({exc.strerror or exc}); "
                         "check the file or remove it (facefix review then uses the run record)") from exc
    with fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and rec.get("record") == "photo" and _source_key(rec) is not None:
                latest[_source_key(rec)] = (str(rec.get("status")), rec.get("why"))
    return latest


class ManifestWriter(ReportWriter):
    """The review manifest's writer: appends what a run changed, not what it only repeats.

    Every run into a folder appends to one manifest; a rerun that skips ten thousand
    photos done before, or meets the same non-photo files again, would add ten thousand
    lines that say nothing new (the review keeps the earlier records anyway). Those are
    not written: a photo skipped as done whose last record is restored or no face, and
    any outcome that repeats the source's last record's status and reason (a file not
    read for the same reason, a photo skipped again). Everything else is appended as
    :class:`ReportWriter` does.
    """

    def __init__(self, path: Path):
        self._latest = latest_photo_records(Path(path))
        super().__init__(path, append=True, what="the review record")
        # a run killed mid-line left a line with no end: end it, so that this run's
        # first record is not glued to it (and lost with it)
        if self._fh.tell() > 0:
            with open(self.path, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    self._fh.write("\n")
                    self._fh.flush()

    def write(self, outcome: Outcome) -> None:
        if outcome.status == "cancelled":
            return
        records = outcome_records(outcome)
        key, said = _source_key(records[0]), (outcome.status, records[0]["why"])
        with self._lock:
            last = self._latest.get(key)
            repeat = outcome.status in ("skipped", "not read") and last is not None and (
                last == said or (outcome.status == "skipped" and last[0] in _DONE))
            if not repeat:
                self._fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
                self._fh.flush()
                self._latest[key] = said
