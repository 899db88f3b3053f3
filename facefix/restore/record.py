"""The record of finished work that lets a folder run resume, skip and redo.

One small SQLite file per output location: ``OUT/.facefix-runs.sqlite`` when
``--output`` is given, else ``<data dir>/restore-runs.sqlite``. A row says
"``target`` was written from a source with this content hash under these
settings". A row is added only *after* the photo (and its side images) were
renamed into place, so after a crash at any moment the record never claims
more than the disk holds: at worst a finished photo is redone.

A rerun skips a job when its row has the same settings key, the source still
has the recorded content hash (its size and mtime are checked first, so an
untouched file is not re-hashed), and the output still exists with the
recorded size (or, for a photo with no face to restore that was not
copied, recorded with no output: ``output_size`` -1). Anything else — changed photo, changed settings, retrained
model, deleted output — is redone.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from facefix.common.files import file_sha256, json_key
from facefix.common.text import is_utf8
from facefix.errors import UsageError

STATE_NAME = ".facefix-runs.sqlite"
SCHEMA_VERSION = 1
#: ``output_size`` of a job finished without writing a file (a photo with no
#: face to restore, no --copy-unchanged). An older facefix reads it as "output
#: changed" and redoes the photo, so the schema version need not change.
NO_OUTPUT = -1


def _db_text(path: str) -> str | bytes:
    """A path as SQLite can store it: text when it is valid UTF-8 (as every
    earlier record holds it), else its raw file-system bytes (a BLOB), since a
    name with a non-UTF-8 byte (surrogate-escaped in Python) cannot be encoded
    as text and must still round-trip exactly."""
    return path if is_utf8(path) else os.fsencode(path)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS done (
    target TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    source_sha256 TEXT NOT NULL,
    source_size INTEGER NOT NULL,
    source_mtime_ns INTEGER NOT NULL,
    settings TEXT NOT NULL,
    output_size INTEGER NOT NULL,
    extras TEXT NOT NULL,
    faces INTEGER NOT NULL,
    seconds REAL NOT NULL,
    finished REAL NOT NULL
);
"""


def settings_key(settings: dict) -> str:
    """A short stable hash of everything that changes an output's pixels."""
    return json_key(settings, 32, compact=True)


@dataclass(frozen=True)
class Decision:
    """What to do with one job: ``"restore"``, ``"redo"`` (changed) or ``"skip"`` (done)."""

    action: str
    why: str
    sha256: str | None = None  # the source's content hash when it was computed


class RunState:
    """Thread-safe access to one run record.

    Args:
        path: the SQLite file (created with its folder).
        root: targets inside this folder are stored relative to it, so the
            output folder can be moved with its record.
    """

    def __init__(self, path: Path, *, root: Path | None = None):
        self.path = Path(path)
        self.root = root.resolve() if root is not None else None
        if str(self.path) != ":memory:":
            _check_writable(self.path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            # WAL: a reader never blocks the writer; a crash loses at most the
            # last commits (those photos are redone), never the file.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                self._db.commit()
            elif int(row[0]) > SCHEMA_VERSION:
                raise UsageError(f"{self.path} was written by a newer facefix (schema {row[0]}); "
                                 "upgrade facefix or delete that file to start the record afresh")
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"{self.path}: the run record is unreadable ({exc}); delete it to "
                             "start afresh (finished photos will be redone)") from exc

    @classmethod
    def for_output(cls, output_dir: Path | None, *, create: bool = True) -> RunState:
        """The record for a run writing into ``output_dir`` (or beside the inputs).

        With ``create=False`` (a dry run) a missing record is not created on
        disk: an empty one in memory stands in.
        """
        if output_dir is not None:
            path, root = Path(output_dir) / STATE_NAME, Path(output_dir)
        else:
            from facefix.common import paths

            path, root = paths.data_dir() / "restore-runs.sqlite", None
        if not create and not path.exists():
            return cls(Path(":memory:"), root=root)
        return cls(path, root=root)

    def _key(self, target: Path) -> str | bytes:
        full = Path(os.path.abspath(target))
        if self.root is not None:
            with contextlib.suppress(ValueError):
                return _db_text(full.relative_to(self.root).as_posix())
        return _db_text(str(full))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def targets(self) -> set[Path]:
        """Every output this record knows of (to keep them out of the inputs)."""
        with self._lock:
            rows = self._db.execute("SELECT target FROM done").fetchall()
        base = self.root or Path("/")
        names = [os.fsdecode(t) for (t,) in rows]  # a BLOB: a non-UTF-8 name (see _db_text)
        return {(base / t).resolve() if not os.path.isabs(t) else Path(t).resolve() for t in names}

    def decide(self, source: Path, target: Path, settings: str, *, force: bool = False,
               copy_unchanged: bool = False) -> Decision:
        """Whether ``source`` → ``target`` under ``settings`` is already done.

        A photo finished with no face to restore and no output is done (why
        "done, no face") unless ``copy_unchanged`` now asks for its copy.

        Raises:
            OSError: the source cannot be stat'ed or read (the caller reports it).
        """
        if force:
            return Decision("restore", "--force")
        with self._lock:
            row = self._db.execute(
                "SELECT source_sha256, source_size, source_mtime_ns, settings, output_size "
                "FROM done WHERE target=?", (self._key(target),)).fetchone()
        if row is None:
            return Decision("restore", "new")
        sha, size, mtime_ns, recorded_settings, output_size = row
        if recorded_settings != settings:
            return Decision("redo", "settings or models changed")
        done = "done"
        if output_size == NO_OUTPUT:
            if copy_unchanged:
                return Decision("redo", "--copy-unchanged")
            done = "done, no face"
        else:
            try:
                if target.stat().st_size != output_size:
                    return Decision("redo", "output changed")
            except OSError:
                return Decision("redo", "output missing")
        st = source.stat()
        if (st.st_size, st.st_mtime_ns) == (size, mtime_ns):
            return Decision("skip", done, sha)
        current = file_sha256(source)
        if current != sha:
            return Decision("redo", "photo changed", current)
        self._touch(target, st)  # same bytes, new mtime: no need to hash it next time
        return Decision("skip", done, sha)

    def _touch(self, target: Path, st: os.stat_result) -> None:
        with self._lock:
            self._db.execute("UPDATE done SET source_size=?, source_mtime_ns=? WHERE target=?",
                             (st.st_size, st.st_mtime_ns, self._key(target)))
            self._db.commit()

    def record(self, source: Path, target: Path, settings: str, *, sha256: str,
               source_stat: os.stat_result, extras: tuple[Path, ...] = (), faces: int = 0,
               seconds: float = 0.0, written: bool = True) -> None:
        """Remember a finished job; call only once its files are in place.

        ``written=False``: the job rightly wrote nothing (a photo with no face
        to restore); it is recorded as done with no output.
        """
        output_size = target.stat().st_size if written else NO_OUTPUT
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO done VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (self._key(target), _db_text(str(Path(os.path.abspath(source)))), sha256, source_stat.st_size,
                 source_stat.st_mtime_ns, settings, output_size,
                 json.dumps([str(p) for p in extras]), faces, seconds, time.time()))
            self._db.commit()

    def forget(self, target: Path) -> None:
        """Drop a job's row (before redoing it, so a crash mid-redo cannot claim it)."""
        with self._lock:
            self._db.execute("DELETE FROM done WHERE target=?", (self._key(target),))
            self._db.commit()


def _check_writable(path: Path) -> None:
    """Raise one clear line when the record's folder cannot be made or written.

    Checked before SQLite opens it: SQLite reports a folder it cannot write
    as "unable to open database file", which reads like a damaged record.
    """
    folder = path.parent
    # OUT/.facefix-runs.sqlite: the user's -o folder; else facefix's data folder.
    what, fix = (("the output folder", "give -o a folder you can write to") if path.name == STATE_NAME
                 else ("facefix's data folder", "set FACEFIX_HOME to a folder you can write to"))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{folder}: {what} cannot be created ({exc.strerror or exc}); {fix}, "
                         "or create it first") from exc
    if path.exists():
        ok = os.access(path, os.R_OK | os.W_OK) and os.access(folder, os.W_OK | os.X_OK)
    else:
        ok = os.access(folder, os.W_OK | os.X_OK)
    if not ok:
        raise UsageError(f"{folder}: {what} is not writable; {fix}, or make it writable "
                         f"(chmod u+w '{folder}')")


def sweep_partials(targets: list[Path]) -> list[Path]:
    """Remove temp files a killed run left beside these targets (``.<name>.*.part``).

    Only the temp names :func:`facefix.common.atomic_output` would use for the
    planned targets are touched; returns what was removed.
    """
    removed = []
    by_dir: dict[Path, set[str]] = {}
    for t in targets:
        by_dir.setdefault(t.parent, set()).add(t.name)
    for folder, names in by_dir.items():
        if not folder.is_dir():
            continue
        for name in names:  # --save-faces folders hold only our own files
            faces = folder / f"{Path(name).stem}_faces"
            if faces.is_dir():
                for entry in faces.glob(".*.part"):
                    with contextlib.suppress(OSError):
                        entry.unlink()
                        removed.append(entry)
        for entry in folder.iterdir():
            n = entry.name
            if not (n.startswith(".") and n.endswith(".part")):
                continue
            stem = n[1:-len(".part")]
            if any(stem.startswith(name + ".") for name in names) or _side_part(stem, names):
                with contextlib.suppress(OSError):
                    entry.unlink()
                    removed.append(entry)
    return removed


def _side_part(stem: str, names: set[str]) -> bool:
    # a --compare image's temp file: .<stem>_compare<suffix>.XXXX.part
    for name in names:
        base, dot, ext = name.rpartition(".")
        if stem.startswith(f"{base}_compare.{ext}."):
            return True
    return False
