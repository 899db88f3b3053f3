"""The ``--report FILE`` of a batch: JSON Lines, one record per photo and per face.

Records are appended as each photo finishes (a photo's lines in one write,
flushed), so a report of an interrupted run holds every photo finished so far
and never half a line::

    {"record": "photo", "file": "...", "output": "...", "status": "restored", "why": "new",
     "faces": 2, "seconds": 1.21, "error": null}
    {"record": "face", "file": "...", "face": 0, "box": [...], "person": "alice",
     "similarity": 0.93, "match": "matched", "restorer": "fast/alice", "skipped": null,
     "seconds": 0.18, "error": null}

``status`` is ``restored``, ``skipped`` (done by an earlier run; see ``why``)
or ``failed`` (``error`` names the file and the fix). ``similarity`` is the
cosine similarity of the face's identity embedding to the chosen person (for
a generic face: to the closest enrolled person); distance = 1 - similarity.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import IO

from .errors import UsageError
from .prefetch import Outcome


def outcome_records(outcome: Outcome) -> list[dict]:
    """The report lines of one job: its photo record, then one per face."""
    job, result = outcome.job, outcome.result
    faces = result.faces if result is not None else ()
    restored = [f for f in faces if f.skipped is None]
    photo = {
        "record": "photo",
        "file": str(job.source),
        "output": str(result.output if result is not None else job.target),
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
    return records


class ReportWriter:
    """Append outcomes to a JSON Lines file (thread-safe; one write per photo).

    Args:
        path: the report file; replaced at the start of a run.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh: IO[str] = open(self.path, "w", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--report {self.path}: cannot be written ({exc.strerror or exc}); "
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
