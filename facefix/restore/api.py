"""Restoring photos and folders, as a Python API: what ``facefix restore`` (and the quickstart, the benchmarks, a cluster) call.

A frozen :class:`RestoreRequest` carries everything the user asked for; the
settings key that decides whether an earlier output is still valid is derived
from it (and from the versions of the models it will use), never assembled
elsewhere. Two steps, so that a caller can show the plan before the work:

    with RestoreSession.open(request) as session:   # checks, plans; creates nothing yet
        print(len(session.jobs), session.engine_note)
        summary = session.run(on_outcome=...)       # the record is made, photos restored

:func:`restore_paths` does both. Nothing is created on disk until there is
work to do; an unknown ``person`` or adapted restorer is a :class:`UsageError`
raised before anything is written.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from facefix.errors import ProfileError, UsageError
from facefix.profiles import GenericStore, ProfileStore
from facefix.profiles.adapted import AdaptedStore
from facefix.restore.pipeline import RestoreOptions
from facefix.restore.plan import Job, NotRead, plan_inputs
from facefix.restore.record import Decision, RunState, settings_key, sweep_partials
from facefix.restore.report import REVIEW_MANIFEST, ManifestWriter, ReportWriter
from facefix.restore.runner import BatchRunner, Outcome, restored_faces

#: The outcome counts a run reports (``skipped``: done by an earlier run with the same settings;
#: ``not read``: a folder file that is not a photo facefix reads).
STATUSES = ("restored", "no face", "skipped", "failed", "not read")


@dataclass(frozen=True)
class RestoreRequest:
    """Everything that says which photos to restore, how, and where the results go.

    Attributes:
        paths: photos or folders of photos.
        output: folder for the results (default: beside each source).
        suffix: added to each output's file name.
        ext: output format: ``same``, ``jpg`` or ``png``.
        recursive, include, exclude: which photos of the folders (globs on name, relative path or folder).
        options: per-face choices (person, which faces, min size, upscale, strength, aligned, grain).
        engine: ``auto`` (diffusion on a CUDA GPU with its weights on disk, else fast), ``fast`` or ``diffusion``.
        model_set, steps, seed, low_vram: the diffusion engine's settings.
        tta: average each face with its mirror image.
        references: fast engine: an enrolled person's faces also get detail from their references.
        keep_expression: with ``references``, their eyes and mouth keep the photo's shapes
            (only finer detail from the restorer there); False: the restorer draws them.
        restorer: an adapted restorer (``facefix adapt``) to use for its faces.
        backend: face detector backend (``auto``, ``dlib``, ``insightface``).
        devices: one restore worker per device (``("auto",)``: CUDA when present).
        compare, save_faces: also write a side-by-side image / each face before and after.
        copy_unchanged: give photos with no face to restore a (byte) copy as output.
        force: redo photos an earlier run already finished.
        report: write JSON Lines records (per photo and per face) to this file.
    """

    paths: tuple[Path, ...]
    output: Path | None = None
    suffix: str = "_restored"
    ext: str = "same"
    recursive: bool = False
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    options: RestoreOptions = field(default_factory=RestoreOptions)
    engine: str = "auto"
    model_set: str | None = None
    steps: int | None = None
    seed: int | None = None
    low_vram: bool = False
    tta: bool = False
    references: bool = True
    keep_expression: bool = True
    restorer: str | None = None
    backend: str = "auto"
    devices: tuple[str, ...] = ("auto",)
    compare: bool = False
    save_faces: bool = False
    copy_unchanged: bool = False
    force: bool = False
    report: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "paths", tuple(Path(p) for p in self.paths))
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        object.__setattr__(self, "devices", tuple(self.devices))
        if not self.devices:
            raise UsageError("no device given; use e.g. --devices cuda:0,cuda:1")
        if self.output is not None and self.output.exists() and not self.output.is_dir():
            raise UsageError(f"--output {self.output} is a file; give a folder")


@dataclass(frozen=True)
class PlannedPhoto:
    """What a run would do with one photo (``facefix restore --dry-run``)."""

    job: Job
    action: str  # restore, redo or skip
    why: str


@dataclass
class RestoreSummary:
    """What a run did: counts per status, faces restored, the failures' messages, wall time;
    during a cluster run, the photos on its workers now (``in_flight``)."""

    total: int
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    faces: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    in_flight: int = 0

    @property
    def photos_done(self) -> int:
        """Photos heard of so far (files not read are not photos)."""
        return sum(n for status, n in self.counts.items() if status != "not read")

    @property
    def photos_per_minute(self) -> float:
        done = self.counts["restored"] + self.counts["no face"]
        return done / self.seconds * 60 if self.seconds > 0 else 0.0

    @property
    def all_skipped(self) -> bool:
        """Every photo was done by an earlier run (a rerun with nothing to do)."""
        return self.total > 0 and self.counts["skipped"] == self.total

    def add(self, outcome: Outcome) -> None:
        self.counts[outcome.status] += 1
        if outcome.status == "not read":
            return
        if outcome.status == "failed":
            self.failures.append(outcome.error or str(outcome.job.source))
        elif outcome.result is not None:
            self.faces += restored_faces(outcome.result.faces)


def check_person(store: ProfileStore, person: str) -> None:
    """An unknown person is a usage error (exit 2), raised before anything is created."""
    if person == "auto":
        return
    try:
        known = person in store.names()
        store.load(person)
    except ProfileError as exc:
        if known:
            raise  # enrolled but damaged: not a usage error; its message says the fix
        raise UsageError(str(exc)) from exc


def output_settings(request: RestoreRequest, engine: str, backend: str, store: ProfileStore,
                    generic: GenericStore) -> dict:
    """Everything that changes an output: the request's choices and which models (by version).

    The settings key (:func:`facefix.restore.record.settings_key`) of this dict decides
    whether an earlier output is still valid.
    """
    from facefix.restorers.reference import FUSION_VERSION

    guided = request.references and engine == "fast"  # the references (and their settings) in play
    models = {}
    for name in store.names():
        try:
            profile = store.load(name)
        except ProfileError:
            continue
        models[name] = [str(profile.updated), {k: [a.file, str(a.created)] for k, a in profile.artifacts.items()}]
    try:
        g = generic.load()
        models["<generic>"] = {k: [a.file, str(a.created)] for k, a in g.artifacts.items()}
    except ProfileError:
        pass
    if request.restorer is not None:
        models["<adapted>"] = [request.restorer, AdaptedStore().info(request.restorer)["created"]]
    return {"options": dataclasses.asdict(request.options),
            "engine": engine, "model_set": request.model_set, "steps": request.steps, "seed": request.seed,
            "tta": request.tta, "compare": request.compare, "save_faces": request.save_faces, "backend": backend,
            "models": models,
            "references": FUSION_VERSION if guided else None,
            "keep_expression": request.keep_expression if guided else None}


class RestoreSession:
    """One restore run: planned by :meth:`open`, executed by :meth:`run` (see the module's docstring).

    Attributes:
        request: what was asked.
        jobs: (source, target) pairs, in order.
        not_read: files of the scanned folders that are not photos facefix reads, with the reason.
        engine: the concrete engine (``fast`` or ``diffusion``).
        engine_note: why ``auto`` chose the fast engine, or None.
        settings: the settings key of this run's outputs.
        summary: what :meth:`run` has done so far.
    """

    def __init__(self, request: RestoreRequest, jobs: list[Job], not_read: list[NotRead], state: RunState,
                 engine: str, engine_note: str | None, settings: str, store: ProfileStore, generic: GenericStore):
        self.request = request
        self.jobs = jobs
        self.not_read = not_read
        self.engine = engine
        self.engine_note = engine_note
        self.settings = settings
        self.summary = RestoreSummary(total=len(jobs))
        self._state = state
        self._store = store
        self._generic = generic

    @classmethod
    def open(cls, request: RestoreRequest, *, dry_run: bool = False, store: ProfileStore | None = None,
             generic: GenericStore | None = None) -> RestoreSession:
        """Check the request and plan the jobs. The run record is made only when there is work to
        do (and not for a ``dry_run``): an output folder that cannot be written fails here, first.

        Raises:
            UsageError: an unknown person or adapted restorer, bad options, an unusable output folder.
        """
        from facefix.faces.analyzer import resolve_backend
        from facefix.providers.choose import choose_engine_for

        store = store if store is not None else ProfileStore()
        generic = generic if generic is not None else GenericStore()
        check_person(store, request.options.person)
        # Read an existing record (its outputs are never taken as inputs) without creating one.
        state = RunState.for_output(request.output, create=False)
        try:
            plan = plan_inputs(list(request.paths), output_dir=request.output, suffix=request.suffix,
                               ext=request.ext, recursive=request.recursive, include=request.include,
                               exclude=request.exclude, known_outputs=state.targets())
            jobs = plan.jobs
            engine, note = "fast", None
            settings = ""
            if jobs:
                if request.restorer is not None:
                    AdaptedStore().info(request.restorer)  # a clear error for an unknown name, before any work
                if not dry_run and str(state.path) == ":memory:":  # work to do: now the record is made
                    state.close()
                    state = RunState.for_output(request.output, create=True)
                engine, note, _ = choose_engine_for(request.engine, request.model_set, store,
                                                    device=request.devices[0])
                settings = settings_key(output_settings(request, engine, resolve_backend(request.backend),
                                                        store, generic))
        except BaseException:
            state.close()
            raise
        return cls(request, jobs, plan.not_read, state, engine, note, settings, store, generic)

    def __enter__(self) -> RestoreSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._state.close()

    def plan(self) -> list[PlannedPhoto]:
        """What :meth:`run` would do with each photo; nothing is written."""
        planned = []
        for job in self.jobs:
            try:
                decision: Decision = self._state.decide(job.source, job.target, self.settings,
                                                        force=self.request.force,
                                                        copy_unchanged=self.request.copy_unchanged)
                action, why = decision.action, decision.why
            except OSError as exc:
                action, why = "restore", f"unreadable ({exc.strerror or exc})"
            planned.append(PlannedPhoto(job, action, why))
        return planned

    @property
    def store(self) -> ProfileStore:
        """The enrolled people this session's settings key was made from."""
        return self._store

    @property
    def generic(self) -> GenericStore:
        """The generic model this session's settings key was made from."""
        return self._generic

    def run(self, on_outcome: Callable[[Outcome], None] | None = None, *,
            executor: Executor | None = None) -> RestoreSummary:
        """Restore every planned photo; ``on_outcome`` hears of each as it finishes.

        ``self.summary`` is the run's :class:`RestoreSummary`, counted before
        ``on_outcome`` is called, so a caller can show it as it grows. A bad photo
        is recorded as ``failed`` and the run goes on. On Ctrl-C the finished
        photos stay written and recorded (a rerun does the rest) and
        ``KeyboardInterrupt`` propagates.

        ``executor``: who runs the jobs (default: :func:`load_runner`'s pipeline, here);
        e.g. :class:`facefix.cluster.RayExecutor` on a Ray cluster. The report, the review
        record and the summary are written here either way, as the outcomes come back.
        """
        request = self.request
        summary = self.summary = RestoreSummary(total=len(self.jobs))
        if not self.jobs:
            return summary
        if str(self._state.path) == ":memory:":
            raise UsageError("this session was opened as a dry run; open it again to restore")
        # A killed earlier run may have left temp files beside its targets.
        sweep_partials([j.target for j in self.jobs])
        sinks: list[ReportWriter] = []

        def heard(outcome: Outcome) -> None:
            if outcome.status == "cancelled":
                return
            summary.add(outcome)
            for sink in sinks:
                sink.write(outcome)
            if on_outcome is not None:
                on_outcome(outcome)

        # The long-lived parts, loaded once (an executor's workers load their own).
        runner = None if executor is not None else load_runner(
            request, self.engine, self.settings, state=self._state, store=self._store, generic=self._generic,
            on_outcome=heard)
        if request.report is not None:
            sinks.append(ReportWriter(request.report))
        # The review page's record of every run into this folder (``facefix review OUT``).
        if request.output is not None:
            sinks.append(ManifestWriter(request.output / REVIEW_MANIFEST))
        start = time.perf_counter()
        for item in self.not_read:  # reported first: they are known before any photo is read
            heard(Outcome(Job(item.path, item.path), "not read", why=item.why))
        try:
            if runner is not None:
                runner.run(self.jobs)
            else:
                executor(self, self._state, heard)
        finally:
            summary.seconds = time.perf_counter() - start
            for sink in sinks:
                sink.close()
        return summary


#: Runs a session's jobs in place of the local pipeline: ``executor(session, record, heard)``
#: calls ``heard`` once per job (in any order) and records each finished job in ``record``
#: only after its files are in place, as :class:`~facefix.restore.runner.BatchRunner` does.
Executor = Callable[[RestoreSession, RunState, Callable[[Outcome], None]], None]


def load_runner(request: RestoreRequest, engine: str, settings: str, *, state: RunState | None,
                store: ProfileStore, generic: GenericStore, on_outcome: Callable[[Outcome], None]) -> BatchRunner:
    """The one-host pipeline for ``request``, its analyzer and restorers loaded: what a session
    runs here, and what each worker of a cluster (:mod:`facefix.cluster`) runs on its photos."""
    from facefix.faces import get_analyzer
    from facefix.providers.adapted import AdaptedRestorers
    from facefix.providers.choose import make_provider
    from facefix.restore.matching import Gallery

    analyzer = get_analyzer(request.backend)
    gallery = Gallery.from_store(store, analyzer)
    providers = [make_provider(engine, store=store, generic=generic, device=d, tta=request.tta,
                               model_set=request.model_set, steps=request.steps, seed=request.seed,
                               low_vram=request.low_vram, references=request.references,
                               keep_expression=request.keep_expression)
                 for d in request.devices]
    if request.restorer is not None:
        # An album's adapted fast restorer serves its faces (all of them, or
        # its person's); the chosen engine serves the rest.
        providers = [AdaptedRestorers(request.restorer, fallback=p, device=d, tta=request.tta)
                     for p, d in zip(providers, request.devices)]
    return BatchRunner(analyzer=analyzer, gallery=gallery, providers=providers, options=request.options,
                       on_outcome=on_outcome, state=state, settings=settings, force=request.force,
                       compare=request.compare, save_faces=request.save_faces,
                       copy_unchanged=request.copy_unchanged)


def restore_paths(request: RestoreRequest | Sequence[Path | str],
                  on_outcome: Callable[[Outcome], None] | None = None, **fields) -> RestoreSummary:
    """Restore photos and folders in one call.

    Args:
        request: a :class:`RestoreRequest`, or the paths (then ``fields`` are its other fields,
            e.g. ``output=Path("out")``, ``options=RestoreOptions(person="alice")``).
        on_outcome: called with each photo's :class:`~facefix.restore.runner.Outcome` as it finishes.

    Returns:
        The run's :class:`RestoreSummary` (``total == 0``: no photo was found).
    """
    if not isinstance(request, RestoreRequest):
        request = RestoreRequest(paths=tuple(Path(p) for p in request), **fields)
    elif fields:
        request = dataclasses.replace(request, **fields)
    with RestoreSession.open(request) as session:
        return session.run(on_outcome)
