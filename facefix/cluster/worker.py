"""One cluster worker: the one-host pipeline, its models loaded once, fed photo by photo by the driver.

:class:`PhotoWorker` becomes a Ray actor (``ray.remote(PhotoWorker)``, in
:mod:`facefix.cluster.executor`); this module itself does not need Ray. Each
:meth:`PhotoWorker.restore` call hands one job to a
:class:`~facefix.restore.runner.BatchRunner` that runs for the actor's whole
life (read → analyze → restore → write, faces of several photos batched per
restorer call, its own bounds on photos and pixels in flight) and returns that
photo's :class:`~facefix.restore.runner.Outcome` when it is written. The actor
runs several calls at once (``max_concurrency``), so the pipeline is kept full.

The worker never opens the run record: :class:`PlannedState` stands in for it,
answering the runner's resume question with the driver's decision and keeping
the runner's ``record`` call, which travels back with the outcome so that the
driver (alone) writes it.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
from pathlib import Path

from facefix.cluster.bundle import remove_home, unpack_once, worker_home
from facefix.errors import UsageError
from facefix.restore.plan import Job
from facefix.restore.record import Decision
from facefix.restore.runner import Outcome

_END = object()


@dataclasses.dataclass(frozen=True)
class RecordCall:
    """A ``RunState.record(*args, **kwargs)`` call the runner made, for the driver to make."""

    args: tuple
    kwargs: dict


class PlannedState:
    """Stands in for :class:`~facefix.restore.record.RunState` inside a worker (see the module's doc)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._decisions: dict[Path, Decision | OSError] = {}
        self._calls: dict[Path, RecordCall] = {}

    def plan(self, target: Path, decision: Decision | OSError) -> None:
        with self._lock:
            self._decisions[target] = decision

    def decide(self, source: Path, target: Path, settings: str, *, force: bool = False,
               copy_unchanged: bool = False) -> Decision:
        """The driver's decision for this job (an OSError it met is raised here, so the
        runner reports the photo exactly as it does on one host)."""
        with self._lock:
            decision = self._decisions.pop(target)
        if isinstance(decision, OSError):
            raise decision
        return decision

    def record(self, source: Path, target: Path, settings: str, **kwargs) -> None:
        with self._lock:
            self._calls[source] = RecordCall((source, target, settings), kwargs)

    def take(self, source: Path) -> RecordCall | None:
        """The record call made for ``source`` (None: the photo was not finished)."""
        with self._lock:
            return self._calls.pop(source, None)


def _enter(cwd: str, request) -> None:
    """Work in the driver's working directory (this actor's own process), where the plan's relative paths point."""
    relative = [p for p in (*request.paths, request.output) if p is not None and not p.is_absolute()]
    try:
        os.chdir(cwd)
    except OSError as exc:
        if relative:
            raise UsageError(f"{relative[0]} is relative to the driver's folder {cwd}, which this cluster node "
                             f"does not have ({exc.strerror or exc}); give absolute paths on the shared file system, "
                             "or run facefix from a folder on it") from exc


class _Waiting:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: tuple[Outcome, RecordCall | None] | None = None


class PhotoWorker:
    """The one-host pipeline on one worker.

    Args:
        bundle: :func:`facefix.cluster.bundle.pack`'s data (ray passes the object store's copy).
        request: the run's request, its ``backend`` and ``devices`` made concrete for this worker.
        engine, settings: the session's engine and settings key.
        env: facefix's environment variables as the driver has them (offline, debug, limits).
        cwd: the driver's working directory: relative paths of the plan mean the same files here.
    """

    def __init__(self, bundle: bytes, request, engine: str, settings: str, env: dict[str, str], cwd: str):
        self._args = (bundle, request, engine, settings, env, cwd)
        self._state = PlannedState()
        self._jobs: queue.Queue = queue.Queue()
        self._waiting: dict[Path, _Waiting] = {}
        self._lock = threading.Lock()
        self._error: str | None = None
        self._runner = None
        self._home: Path | None = None
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        """Unpack the data and load the models, once (on the first call: an error that stops it
        reaches the driver as itself, e.g. a missing model's one-line message)."""
        from facefix.profiles import GenericStore, ProfileStore
        from facefix.restore.api import load_runner

        with self._lock:
            if self._thread is not None:
                return
            bundle, request, engine, settings, env, cwd = self._args
            os.environ.update(env)
            _enter(cwd, request)
            self._home = worker_home(unpack_once(bundle))
            os.environ["FACEFIX_HOME"] = str(self._home)  # this actor's own process
            self._runner = load_runner(request, engine, settings, state=self._state, store=ProfileStore(),
                                       generic=GenericStore(), on_outcome=self._heard)
            self._thread = threading.Thread(target=self._serve, name="facefix-cluster-runner", daemon=True)
            self._thread.start()

    def ready(self) -> str:
        """Loads the models; answers with the face backend's name (the driver waits for every worker)."""
        self._start()
        return self._runner.analyzer.name

    def restore(self, job: Job, decision: Decision | OSError) -> tuple[Outcome, RecordCall | None]:
        """Restore one photo; returns its outcome and the record call the driver is to make."""
        self._start()
        waiting = _Waiting()
        with self._lock:
            if self._error is not None:
                raise RuntimeError(self._error)
            self._waiting[job.source] = waiting
        self._state.plan(job.target, decision)
        self._jobs.put(job)
        waiting.done.wait()
        if waiting.value is None:
            raise RuntimeError(self._error or "the worker's pipeline stopped")
        return waiting.value

    def close(self) -> None:
        """Finish the pipeline and remove this worker's private home."""
        if self._thread is not None:
            self._jobs.put(_END)
            self._thread.join()
            remove_home(self._home)

    def _heard(self, outcome: Outcome) -> None:
        call = self._state.take(outcome.job.source)
        with self._lock:
            waiting = self._waiting.pop(outcome.job.source)
        waiting.value = (outcome, call)
        waiting.done.set()

    def _serve(self) -> None:
        try:
            self._runner.run(iter(self._jobs.get, _END))
        except BaseException as exc:  # noqa: BLE001 - a bug in a stage: every waiting call fails with it
            with self._lock:
                self._error = f"the worker's pipeline failed: {type(exc).__name__}: {exc}"
                waiting, self._waiting = list(self._waiting.values()), {}
            for w in waiting:
                w.done.set()
