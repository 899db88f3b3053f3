"""Run a batch of restore jobs as a pipeline, so the restorer never waits on disk.

::

    reader ──> analyzer ──> restorer(s) ──> writer ──> on_outcome
    (skip check, hash,   (detect, match,   (faces of several  (paste back, encode,
     read + decode)       align)            photos per batch)  atomic write, record)

Each stage is one thread and owns its objects: the analyzer is only touched
by the analyzer thread, each restorer provider only by its own restore thread
(one per ``--devices`` entry), the run record is written only after a photo's
files are in place. Stages hand photos on through queues; at most
``max_inflight`` photos and about ``max_pixels`` decoded pixels are in
flight, so a folder of 50 MP scans does not exhaust memory.

A failing photo becomes a ``failed`` :class:`Outcome` and the batch goes on.
Ctrl-C stops reading new photos, lets the write in progress finish (it is
atomic anyway) and re-raises ``KeyboardInterrupt``.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facefix.common.atomic import atomic_output
from facefix.common.files import file_sha256
from facefix.errors import FacefixError
from facefix.faces import FaceAnalyzer
from facefix.photos import Photo, read_photo
from facefix.restore.matching import Gallery
from facefix.restore.pipeline import (
    Analysis,
    FaceRecord,
    PhotoResult,
    RestoreOptions,
    RestorerProvider,
    analyze_image,
    finish_image,
    restore_crops,
    write_outputs,
)
from facefix.restore.plan import Job
from facefix.restore.record import RunState

log = logging.getLogger(__name__)

_END = object()


@dataclass
class Outcome:
    """What happened to one job.

    Attributes:
        status: "restored", "no face" (nothing to restore: no file written,
            or with --copy-unchanged the source copied), "skipped" (done by
            an earlier run), "failed", "cancelled" (the run was
            interrupted before it) or "not read" (a folder file that is not a
            photo facefix reads; reported, never run).
        why: for "skipped" and "restored": the resume decision ("new", "photo changed", ...).
        error: for "failed": the message naming the file and the fix.
        result: for "restored" and "no face": the faces and files written
            (for "no face" without a copy, ``output`` is None).
        seconds: time spent working on this photo (not waiting in queues).
        restore_seconds: of which, this photo's share of the restorer's time.
    """

    job: Job
    status: str
    why: str = ""
    error: str | None = None
    result: PhotoResult | None = None
    seconds: float = 0.0
    restore_seconds: float = 0.0


@dataclass(eq=False)
class _Item:
    job: Job
    why: str
    sha256: str = ""
    stat: os.stat_result | None = None
    photo: Photo | None = None
    rgb: np.ndarray | None = None
    pixels: int = 0
    analysis: Analysis | None = None
    after: list = field(default_factory=list)
    names: list = field(default_factory=list)
    seconds: float = 0.0
    restore_seconds: float = 0.0
    error: str | None = None
    cancelled: bool = False


class _PixelBudget:
    """At most ``limit`` decoded pixels in flight, but always room for one photo."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self.cond = threading.Condition()

    def acquire(self, n: int, stop: threading.Event) -> bool:
        with self.cond:
            while self.used and self.used + n > self.limit:
                if stop.is_set():
                    return False
                self.cond.wait(0.1)
            self.used += n
            return True

    def release(self, n: int) -> None:
        with self.cond:
            self.used -= n
            self.cond.notify_all()


def _message(exc: BaseException, job: Job) -> str:
    if isinstance(exc, FacefixError):
        text = str(exc)
        return text if str(job.source) in text else f"{job.source}: {text}"
    if isinstance(exc, FileNotFoundError):
        return f"{job.source}: no such file (deleted or moved since the folder was scanned); check the path"
    if isinstance(exc, OSError):
        return f"{job.source}: cannot be read ({exc.strerror or exc}); check the file and the disk"
    if isinstance(exc, MemoryError):
        return f"{job.source}: out of memory while restoring it; lower FACEFIX_MAX_PIXELS or free memory"
    log.debug("unexpected failure on %s:\n%s", job.source, traceback.format_exc())
    return f"{job.source}: unexpected {type(exc).__name__}: {exc} (rerun with FACEFIX_DEBUG=1 for details)"


class BatchRunner:
    """Run jobs through read → analyze → restore → write, overlapped.

    Args:
        analyzer: the face backend (used by one thread only).
        gallery: enrolled people's embeddings for that backend.
        providers: one restorer provider per restore thread (per device).
        options: what to restore and how.
        on_outcome: called once per job, from the writer thread, in completion order.
        state: the run record to skip done work and to record finished work; None: neither.
        settings: the settings key recorded with each finished job.
        force: redo jobs the record says are done.
        compare, save_faces: write side images too.
        copy_unchanged: a photo with no face to restore still gets an output:
            a byte copy when the output format is the source's, else the
            photo converted (its pixels untouched, its metadata carried).
        max_inflight: photos read but not yet written, at most.
        max_pixels: decoded pixels in flight, at most (one photo always fits).
        batch_faces: faces per restorer call, gathered from several photos when ready.
    """

    def __init__(
        self,
        *,
        analyzer: FaceAnalyzer,
        gallery: Gallery,
        providers: Sequence[RestorerProvider],
        options: RestoreOptions,
        on_outcome: Callable[[Outcome], None],
        state: RunState | None = None,
        settings: str = "",
        force: bool = False,
        compare: bool = False,
        save_faces: bool = False,
        copy_unchanged: bool = False,
        max_inflight: int = 4,
        max_pixels: int = 120_000_000,
        batch_faces: int = 16,
    ):
        if not providers:
            raise ValueError("BatchRunner needs at least one restorer provider")
        self.analyzer, self.gallery, self.providers = analyzer, gallery, list(providers)
        self.options, self.on_outcome = options, on_outcome
        self.state, self.settings, self.force = state, settings, force
        self.compare, self.save_faces = compare, save_faces
        self.copy_unchanged = copy_unchanged
        self.batch_faces = batch_faces
        self.max_inflight = max_inflight
        self.budget = _PixelBudget(max_pixels)
        self.stop = threading.Event()

    # ------------------------------------------------------------------ driver
    def run(self, jobs: Sequence[Job]) -> None:
        """Process every job; returns when all outcomes were delivered."""
        self._inflight = threading.Semaphore(self.max_inflight)
        self._to_analyze: queue.Queue = queue.Queue()
        self._to_restore: queue.Queue = queue.Queue()
        self._to_write: queue.Queue = queue.Queue()
        self._restorers_left = len(self.providers)
        self._left_lock = threading.Lock()
        self._error: BaseException | None = None
        threads = [threading.Thread(target=self._guard, args=(self._read, jobs), name="facefix-read", daemon=True),
                   threading.Thread(target=self._guard, args=(self._analyze,), name="facefix-analyze", daemon=True),
                   threading.Thread(target=self._guard, args=(self._write,), name="facefix-write", daemon=True)]
        threads += [threading.Thread(target=self._guard, args=(self._restore, p), name=f"facefix-restore-{i}",
                                     daemon=True) for i, p in enumerate(self.providers)]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.2)
        except KeyboardInterrupt:
            self.stop.set()
            deadline = time.monotonic() + 30
            for t in threads:  # let the write in progress finish
                t.join(max(0.0, deadline - time.monotonic()))
            raise
        if self._error is not None:
            raise self._error

    def _guard(self, fn, *args) -> None:
        # A bug in a stage must not hang the others: stop everything, re-raise in run().
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self._error = exc
            self.stop.set()
            for q in (self._to_analyze, self._to_restore, self._to_write):
                q.put(_END)

    def _done_with(self, item: _Item) -> None:
        if item.pixels:
            self.budget.release(item.pixels)
        item.photo = item.rgb = item.analysis = None
        self._inflight.release()

    # ------------------------------------------------------------------ stages
    def _read(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            while not self._inflight.acquire(timeout=0.1):
                if self.stop.is_set():
                    break
            else:
                if not self.stop.is_set():
                    self._process_read(job)
                    continue
                self._inflight.release()
            break  # interrupted: the jobs not yet read get no outcome
        self._to_analyze.put(_END)

    def _process_read(self, job: Job) -> None:
        start = time.perf_counter()
        item = _Item(job, "new")
        try:
            if self.state is not None:
                decision = self.state.decide(job.source, job.target, self.settings, force=self.force,
                                             copy_unchanged=self.copy_unchanged)
                item.why = decision.why
                if decision.action == "skip":
                    self._to_write.put(item)  # the writer reports it as skipped
                    return
                item.sha256 = decision.sha256 or ""
            item.stat = os.stat(job.source)
            if self.state is not None and not item.sha256:
                item.sha256 = file_sha256(job.source)
            item.photo = read_photo(job.source)
            item.rgb = item.photo.rgb_float()
            item.pixels = int(item.rgb.shape[0] * item.rgb.shape[1])
        except Exception as exc:  # noqa: BLE001 - reported per photo; the batch goes on
            item.error = _message(exc, job)
            item.photo = item.rgb = None
            item.pixels = 0
            self._to_write.put(item)
            return
        item.seconds += time.perf_counter() - start
        if not self.budget.acquire(item.pixels, self.stop):
            item.pixels, item.cancelled = 0, True
            self._to_write.put(item)
            return
        self._to_analyze.put(item)

    def _analyze(self) -> None:
        while (item := self._to_analyze.get()) is not _END:
            if self.stop.is_set():
                item.cancelled = True
                self._to_write.put(item)
                continue
            start = time.perf_counter()
            try:
                item.analysis = analyze_image(item.rgb, analyzer=self.analyzer, gallery=self.gallery,
                                              options=self.options)
            except Exception as exc:  # noqa: BLE001
                item.error = _message(exc, item.job)
                self._to_write.put(item)
                continue
            item.seconds += time.perf_counter() - start
            self._to_restore.put(item)
        for _ in self.providers:
            self._to_restore.put(_END)

    def _restore(self, provider: RestorerProvider) -> None:
        ended = False
        while not ended:
            item = self._to_restore.get()
            if item is _END:
                break
            batch = [item]
            faces = len(item.analysis.before)
            # Gather more photos that are already analysed, up to batch_faces faces.
            while faces < self.batch_faces:
                try:
                    more = self._to_restore.get_nowait()
                except queue.Empty:
                    break
                if more is _END:
                    ended = True
                    break
                batch.append(more)
                faces += len(more.analysis.before)
            if self.stop.is_set():
                for it in batch:
                    it.cancelled = True
                    self._to_write.put(it)
                continue
            self._restore_batch(batch, provider)
            for it in batch:
                self._to_write.put(it)
        with self._left_lock:
            self._restorers_left -= 1
            last = self._restorers_left == 0
        if last:
            self._to_write.put(_END)

    def _restore_batch(self, batch: list[_Item], provider: RestorerProvider) -> None:
        crops = [c for it in batch for c in it.analysis.before]
        people = [p for it in batch for p in it.analysis.people]
        if not crops:
            return
        start = time.perf_counter()
        try:
            after, names = restore_crops(crops, people, provider)
        except Exception as exc:  # noqa: BLE001
            if len(batch) > 1:  # find the photo at fault; the others go on
                for it in batch:
                    self._restore_batch([it], provider)
                return
            batch[0].error = _message(exc, batch[0].job)
            return
        share = (time.perf_counter() - start) / len(crops)
        at = 0
        for it in batch:
            n = len(it.analysis.before)
            it.after, it.names = after[at:at + n], names[at:at + n]
            it.restore_seconds = share * n
            it.seconds += share * n
            at += n

    def _write(self) -> None:
        while (item := self._to_write.get()) is not _END:
            try:
                outcome = self._finish(item)
            finally:
                self._done_with(item)
            self.on_outcome(outcome)

    def _finish(self, item: _Item) -> Outcome:
        job = item.job
        if item.cancelled:
            return Outcome(job, "cancelled")
        if item.error is not None:
            return Outcome(job, "failed", item.why, error=item.error, seconds=item.seconds)
        if item.photo is None:
            return Outcome(job, "skipped", item.why)
        if self.stop.is_set():
            return Outcome(job, "cancelled")
        start = time.perf_counter()
        if not item.analysis.before:
            return self._finish_no_face(item, start)
        try:
            restored = finish_image(item.rgb, item.analysis, item.after, item.names,
                                    options=self.options, grayscale=item.photo.is_grayscale)
            written, extra = write_outputs(item.photo, item.rgb, restored, job.target,
                                           compare=self.compare, save_faces=self.save_faces)
            seconds = item.seconds + time.perf_counter() - start
            faces = tuple(restored.faces)
            if self.state is not None:
                self.state.record(job.source, written, self.settings, sha256=item.sha256,
                                  source_stat=item.stat, extras=extra,
                                  faces=sum(f.skipped is None for f in faces), seconds=seconds)
        except Exception as exc:  # noqa: BLE001
            return Outcome(job, "failed", item.why, error=_message(exc, job),
                           seconds=item.seconds + time.perf_counter() - start)
        result = PhotoResult(job.source, written, faces, seconds, extra)
        return Outcome(job, "restored", item.why, result=result, seconds=seconds,
                       restore_seconds=item.restore_seconds)

    def _finish_no_face(self, item: _Item, start: float) -> Outcome:
        """A photo with no face to restore: not re-encoded behind the user's back.

        Nothing is written unless --copy-unchanged; either way the job is
        recorded as done, so a rerun skips it.
        """
        job = item.job
        faces = item.analysis.records  # faces found but not restored (too small, --faces), if any
        written: Path | None = None
        try:
            if self.options.upscale > 1 or self.copy_unchanged:
                # --upscale enlarges the whole photo: that is work asked for, faces or not.
                if self.options.upscale == 1 and _same_format(job.source, job.target):
                    written = _copy_bytes(job.source, job.target)
                else:  # another format was asked for (or GIF, which is not written)
                    restored = finish_image(item.rgb, item.analysis, [], [], options=self.options,
                                            grayscale=item.photo.is_grayscale)
                    written, _ = write_outputs(item.photo, item.rgb, restored, job.target)
            seconds = item.seconds + time.perf_counter() - start
            if self.state is not None:
                self.state.record(job.source, job.target, self.settings, sha256=item.sha256,
                                  source_stat=item.stat, faces=0, seconds=seconds,
                                  written=written is not None)
        except Exception as exc:  # noqa: BLE001
            return Outcome(job, "failed", item.why, error=_message(exc, job),
                           seconds=item.seconds + time.perf_counter() - start)
        result = PhotoResult(job.source, written, tuple(faces), seconds)
        return Outcome(job, "no face", item.why, result=result, seconds=seconds)


_SAME_FORMAT = {".jpeg": ".jpg", ".tiff": ".tif"}


def _same_format(source: Path, target: Path) -> bool:
    """The target's extension names the source's format (so a byte copy is a valid file)."""
    a, b = source.suffix.lower(), target.suffix.lower()
    return _SAME_FORMAT.get(a, a) == _SAME_FORMAT.get(b, b)


def _copy_bytes(source: Path, target: Path) -> Path:
    """Copy ``source`` to ``target`` byte for byte, atomically (no partial file on a crash)."""
    with atomic_output(target) as tmp:
        shutil.copyfile(source, tmp)
    return target


def restored_faces(faces: Sequence[FaceRecord]) -> int:
    """How many of a photo's faces were restored (not skipped)."""
    return sum(f.skipped is None for f in faces)


__all__ = ["BatchRunner", "Outcome", "restored_faces"]
