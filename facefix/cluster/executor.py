"""The driver of a cluster run: :class:`RayExecutor`, what ``restore --cluster`` hands to ``RestoreSession.run``.

::

    driver (this process)                              workers (Ray actors, one per GPU or CPU)
    plan (RestoreSession.open, as on one host)
    for each job: resume decision (the run record)
      skip → reported here                    job ──>  the one-host pipeline (load_runner), fed photo
      else → the least busy worker, at most             by photo: read, hash, detect, restore, paste,
             ``window`` photos each             <──     write the files atomically to the shared folder
    outcome back: the record row, then the report / review lines / progress, as on one host

The driver alone writes the run record (SQLite is not safe with several
writers on a network file system) and the reports, each photo's row only
after its worker said its files are in place, so a killed driver or worker
leaves at most the photos in flight unrecorded: a rerun redoes those (their
files are replaced atomically) and skips the rest. Only file names and small
outcomes cross the network; pixels never enter the object store (workers read
and write the shared file system), and each worker holds at most ``window``
photos, its pipeline bounding decoded pixels as on one host.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from collections.abc import Callable

from facefix.cluster.bundle import pack
from facefix.cluster.connect import check_address, connect, disconnect, require_ray
from facefix.cluster.worker import PhotoWorker, RecordCall
from facefix.common import paths
from facefix.errors import FacefixError, UsageError
from facefix.faces.analyzer import resolve_backend
from facefix.restore.api import RestoreSession
from facefix.restore.plan import Job
from facefix.restore.record import RunState
from facefix.restore.runner import Outcome

#: facefix's own variables a worker gets as the driver has them (the data folder travels in the bundle).
FORWARDED_ENV = (*paths.OFFLINE_VARIABLES, "FACEFIX_DEBUG", "FACEFIX_MODEL_SET", paths.MAX_PIXELS_ENV)


@dataclasses.dataclass(frozen=True)
class Placement:
    """How many workers, and what each holds."""

    workers: int
    cpus: float
    gpus: int


class RayExecutor:
    """Run a :class:`~facefix.restore.api.RestoreSession`'s jobs on a Ray cluster.

    ``session.run(on_outcome, executor=RayExecutor("auto"))`` gives the same files, run
    record, report and summary as ``session.run(on_outcome)``, from workers across the cluster.

    Args:
        address: see :mod:`facefix.cluster.connect` (``auto``, ``local``, ``HOST:PORT``, ``ray://HOST:PORT``).
        workers: how many workers (default: one per GPU of the cluster, else one per ``cpus`` CPUs).
        cpus: CPUs each worker reserves.
        window: photos handed to one worker and not yet back, at most.

    Raises:
        UsageError: Ray is not installed (says how to install it), or ``address`` names no cluster.
    """

    def __init__(self, address: str = "auto", *, workers: int | None = None, cpus: float = 1.0, window: int = 6):
        require_ray()
        if workers is not None and workers < 1:
            raise UsageError(f"--cluster-workers must be at least 1, not {workers}")
        self.address, self.workers, self.cpus, self.window = check_address(address), workers, cpus, window

    def __call__(self, session: RestoreSession, state: RunState, heard: Callable[[Outcome], None]) -> None:
        _Driver(self, session, state, heard).run()

    def placement(self, devices: tuple[str, ...]) -> Placement:
        """The workers for this cluster: GPU workers when it has GPUs (unless ``--device cpu``)."""
        resources = require_ray().cluster_resources()
        gpus = int(resources.get("GPU", 0)) if devices[0] != "cpu" else 0
        if gpus:
            return Placement(self.workers or gpus, self.cpus, 1)
        return Placement(self.workers or max(1, int(resources.get("CPU", 1) // self.cpus)), self.cpus, 0)


class _Driver:
    def __init__(self, executor: RayExecutor, session: RestoreSession, state: RunState,
                 heard: Callable[[Outcome], None]):
        self.ray = require_ray()
        self.executor, self.session, self.state, self.heard = executor, session, state, heard
        self.connected = False  # this run connected to (or started) the cluster
        self.workers: list = []
        self.load: list[int] = []  # photos in flight per worker
        self.dead: set[int] = set()  # workers that died (their photos were reported failed)
        self.inflight: dict = {}  # object ref -> (worker index, job, why it is done)
        self.busy: set = set()  # sources in flight (a file named twice waits for its first run)

    def run(self) -> None:
        """Every job: skipped here, or restored by a worker; the workers start with the first
        photo that needs one (a rerun with nothing left to do never touches the cluster)."""
        finished = False
        try:
            for job in self.session.jobs:
                self._dispatch(job)
            while self.inflight:
                self._collect()
            self.ray.get([w.close.remote() for i, w in enumerate(self.workers) if i not in self.dead])
            finished = True
        finally:
            if not finished:  # an error or Ctrl-C: what is in flight stays unrecorded (a rerun redoes it)
                for w in self.workers:
                    self.ray.kill(w)
            disconnect(self.connected)

    def _start_workers(self) -> None:
        ray, request = self.ray, self.session.request
        self.connected = connect(self.executor.address)
        place = self.executor.placement(request.devices)
        worker_request = dataclasses.replace(request, backend=resolve_backend(request.backend),
                                             devices=("cuda",) if place.gpus else ("cpu",), report=None)
        bundle = ray.put(pack(self.session.store, self.session.generic, request.restorer))
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        actor = ray.remote(PhotoWorker).options(num_cpus=place.cpus, num_gpus=place.gpus,
                                                max_concurrency=self.executor.window + 2)
        self.workers = [actor.remote(bundle, worker_request, self.session.engine, self.session.settings, env,
                                     os.getcwd()) for _ in range(place.workers)]
        self.load = [0] * len(self.workers)
        try:
            ray.get([w.ready.remote() for w in self.workers])
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, FacefixError):  # a model that will not load: its own one-line error
                raise exc.cause from None
            raise

    def _dispatch(self, job: Job) -> None:
        request = self.session.request
        try:
            decision = self.state.decide(job.source, job.target, self.session.settings, force=request.force,
                                         copy_unchanged=request.copy_unchanged)
        except OSError as exc:  # the worker's runner reports it, as on one host
            decision = exc
        if not isinstance(decision, OSError) and decision.action == "skip":
            self.heard(Outcome(job, "skipped", decision.why))
            return
        if not self.workers:
            self._start_workers()
        while job.source in self.busy or self._least_busy()[0] >= self.executor.window:
            self._collect()
        index = self._least_busy()[1]
        ref = self.workers[index].restore.remote(job, decision)
        self.inflight[ref] = (index, job, "new" if isinstance(decision, OSError) else decision.why)
        self.load[index] += 1
        self.busy.add(job.source)
        self.session.summary.in_flight += 1

    def _least_busy(self) -> tuple[int, int]:
        """(photos in flight, index) of the living worker with the fewest."""
        alive = [(n, i) for i, n in enumerate(self.load) if i not in self.dead]
        if not alive:
            raise FacefixError("every cluster worker died; see the Ray logs of the workers (out of memory?), "
                               "then rerun: finished photos are recorded and skipped")
        return min(alive)

    def _collect(self) -> None:
        ray = self.ray
        ready, _ = ray.wait(list(self.inflight), num_returns=1)
        for ref in ready:
            index, job, why = self.inflight.pop(ref)
            self.load[index] -= 1
            self.session.summary.in_flight -= 1
            self.busy.discard(job.source)
            try:
                outcome, call = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                self.dead.add(index)
                outcome, call = Outcome(job, "failed", why, error=(
                    f"{job.source}: the cluster worker restoring it died ({type(exc).__name__}); rerun to retry "
                    "it, and if it dies again give the workers more memory or lower FACEFIX_MAX_PIXELS")), None
            self.heard(self._recorded(outcome, call))

    def _recorded(self, outcome: Outcome, call: RecordCall | None) -> Outcome:
        """The worker's record call made here, now that its files are in place."""
        if call is None:
            return outcome
        try:
            self.state.record(*call.args, **call.kwargs)
        except (OSError, sqlite3.Error) as exc:
            return Outcome(outcome.job, "failed", outcome.why, seconds=outcome.seconds, error=(
                f"{outcome.job.source}: restored, but the run record {self.state.path} could not be updated "
                f"({exc}); check that folder's disk, then rerun"))
        return outcome
