"""``facefix restore``: restore the faces in photos or whole folders of photos.

Wiring and printing only: planning is :mod:`facefix.restore.plan`, the pipelined run
:mod:`facefix.restore.runner`, the resume record :mod:`facefix.restore.record`, the
``--report`` file :mod:`facefix.restore.report`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from facefix.adapt.album import AdaptedRestorers, AdaptedStore
from facefix.cli.common import (
    BackendOpt,
    DeviceOpt,
    JsonOpt,
    OutputOpt,
    PersonOpt,
    debug_enabled,
    err,
    out,
    shown,
)
from facefix.cli.main import app
from facefix.errors import ProfileError, UsageError
from facefix.faces import get_analyzer
from facefix.faces.analyzer import resolve_backend
from facefix.profiles import GenericStore, ProfileStore
from facefix.providers import engines as loading
from facefix.restore.matching import Gallery
from facefix.restore.pipeline import RestoreOptions
from facefix.restore.plan import Job, plan_jobs
from facefix.restore.record import RunState, settings_key, sweep_partials
from facefix.restore.report import ReportWriter, json_safe
from facefix.restore.runner import BatchRunner, Outcome, restored_faces
from facefix.restorers.reference import FUSION_VERSION

#: Up to this many photos, the per-face table is printed (on stdout) at the end;
#: past it, use --json or --report.
TABLE_LIMIT = 200


@app.command("restore")
def restore_command(
    paths: Annotated[list[Path], typer.Argument(help="Photos or folders of photos.", show_default=False)],
    *,
    person: PersonOpt = "auto",
    output: OutputOpt = None,
    suffix: Annotated[str, typer.Option(help="Added to each output's file name.")] = "_restored",
    ext: Annotated[str, typer.Option(help="Output format: same, jpg or png.")] = "same",
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into subfolders.")] = False,
    include: Annotated[list[str] | None, typer.Option(
        "--include", help="Only photos matching this glob (name, relative path or folder; any case). Repeatable.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(
        "--exclude", help="Skip photos matching this glob (name, relative path or folder; any case). Repeatable.")] = None,
    upscale: Annotated[int, typer.Option(help="Enlarge the whole photo by this factor (1-8).")] = 1,
    faces: Annotated[str, typer.Option(help="Which faces: all, largest or center.")] = "all",
    min_face: Annotated[float, typer.Option(help="Skip faces under this eye-to-mouth distance (px).")] = 10.0,
    aligned: Annotated[bool, typer.Option(help="Inputs are already aligned 512x512 face crops.")] = False,
    strength: Annotated[float, typer.Option(help="1 = fully restored, 0 = original.")] = 1.0,
    grain: Annotated[float, typer.Option(
        help="Give restored faces the photo's own film grain (1 = as strong as the photo's, 0 = off), "
             "so that faces in grainy scans do not look pasted on.")] = 0.0,
    save_faces: Annotated[bool, typer.Option(help="Also write each face before and after.")] = False,
    compare: Annotated[bool, typer.Option(help="Also write a side-by-side comparison image.")] = False,
    tta: Annotated[bool, typer.Option(help="Average each face with its mirror image (2x slower).")] = False,
    references: Annotated[bool, typer.Option(
        "--references/--no-references",
        help="Fast engine: give an enrolled person's faces detail from their own references "
             "(warped onto the face, used only where they agree with it).")] = True,
    engine: Annotated[str, typer.Option(
        help="Restorer: auto (diffusion on a CUDA GPU with its weights on disk, else fast), fast or diffusion.")] = "auto",
    model_set: Annotated[str | None, typer.Option(
        "--model-set", help="Diffusion model set: a registered name or a local folder.")] = None,
    steps: Annotated[int | None, typer.Option(help="Diffusion sampler steps (default 25).")] = None,
    seed: Annotated[int | None, typer.Option(help="Diffusion seed (default 0).")] = None,
    low_vram: Annotated[bool, typer.Option("--low-vram", help="Diffusion on 6-8 GB GPUs (slower).")] = False,
    restorer: Annotated[str | None, typer.Option(
        "--restorer", help="An adapted restorer made by 'facefix adapt' (see 'facefix adapted list').")] = None,
    backend: BackendOpt = "auto",
    device: DeviceOpt = "auto",
    devices: Annotated[str | None, typer.Option(
        "--devices", help="Spread restoration over these devices, one worker each: 'cuda:0,cuda:1'.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Redo photos an earlier run already finished.")] = False,
    copy_unchanged: Annotated[bool, typer.Option(
        "--copy-unchanged",
        help="Also give photos with no face to restore an output: a byte copy (converted only when "
             "--ext asks for another format). Default: no file for them.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be done, and do nothing.")] = False,
    report: Annotated[Path | None, typer.Option(
        "--report", help="Write a JSON Lines record per photo and per face to this file.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary; errors only.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Restore every face, matched to an enrolled person or to the generic prior.

    Writes a new file per photo (the original is never modified) carrying the
    original's metadata. Folders are mirrored under --output. A rerun of the
    same command skips photos already done and redoes those that changed.
    Exit status: 0 all done, 1 some photos failed, 2 usage error.
    """
    options = RestoreOptions(person=person, faces=faces, min_face=min_face, upscale=upscale,
                             strength=strength, aligned=aligned, grain=grain)
    if output is not None and output.exists() and not output.is_dir():
        raise UsageError(f"--output {output} is a file; give a folder")
    device_list = _parse_devices(devices) if devices else [device]
    # Nothing is created on disk until the run has something to do: the
    # arguments are checked and the photos found first, reading an existing
    # record (for the outputs never to take as inputs) without creating one.
    store, generic = ProfileStore(), GenericStore()
    if person != "auto":
        _check_person(store, person)
    state = RunState.for_output(output, create=False)
    try:
        jobs = plan_jobs(paths, output_dir=output, suffix=suffix, ext=ext, recursive=recursive,
                         include=include or (), exclude=exclude or (), known_outputs=state.targets())
        if not jobs:
            err.print("no photos found in the given paths")
            raise typer.Exit(1)
        if restorer is not None:
            AdaptedStore().info(restorer)  # a clear error for an unknown name, before any work
        if not dry_run and str(state.path) == ":memory:":  # work to do: now the record is made
            state.close()
            state = RunState.for_output(output, create=True)
        chosen, why = loading.choose_engine(engine, model_set, device=device_list[0])
        if why and not quiet:
            err.print(f"[yellow]note:[/yellow] {escape(why)}", highlight=False)
        settings = settings_key(_settings(options, chosen, model_set, steps, seed, tta, compare, save_faces,
                                          resolve_backend(backend), store, generic, restorer, references))
        if dry_run:
            _dry_run(jobs, state, settings, force, json_out, copy_unchanged)
            return
        # 1. a killed earlier run may have left temp files beside its targets
        sweep_partials([j.target for j in jobs])
        # 2. load the long-lived parts once
        analyzer = get_analyzer(backend)
        gallery = Gallery.from_store(store, analyzer)
        providers = [loading.make_provider(chosen, store=store, generic=generic, device=d, tta=tta,
                                           model_set=model_set, steps=steps, seed=seed, low_vram=low_vram,
                                           references=references)
                     for d in device_list]
        if restorer is not None:
            # An album's adapted fast restorer serves its faces (all of them,
            # or its person's); the chosen engine serves the rest.
            providers = [AdaptedRestorers(restorer, fallback=p, device=d, tta=tta)
                         for p, d in zip(providers, device_list)]
        # 3. run, reporting each photo as it finishes
        _run(jobs, analyzer, gallery, providers, options, state, settings, force, compare, save_faces,
             report, quiet, json_out, copy_unchanged)
    finally:
        state.close()


def _check_person(store: ProfileStore, person: str) -> None:
    """An unknown --person is a usage error (exit 2), raised before anything is created."""
    try:
        known = person in store.names()
        store.load(person)
    except ProfileError as exc:
        if known:
            raise  # enrolled but damaged: not a usage error; its message says the fix
        raise UsageError(str(exc)) from exc


def _parse_devices(text: str) -> list[str]:
    devices = [d.strip() for d in text.split(",") if d.strip()]
    if not devices:
        raise UsageError(f"--devices {text!r} names no device; use e.g. --devices cuda:0,cuda:1")
    return devices


def _settings(options, engine, model_set, steps, seed, tta, compare, save_faces, backend,
              store: ProfileStore, generic: GenericStore, restorer: str | None = None,
              references: bool = True) -> dict:
    """Everything that changes an output: options, engine, and which models (by version)."""
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
    if restorer is not None:
        models["<adapted>"] = [restorer, AdaptedStore().info(restorer)["created"]]
    return {"options": dataclasses.asdict(options),
            "engine": engine, "model_set": model_set, "steps": steps, "seed": seed, "tta": tta,
            "compare": compare, "save_faces": save_faces, "backend": backend, "models": models,
            "references": FUSION_VERSION if references and engine == "fast" else None}


def _dry_run(jobs: list[Job], state: RunState, settings: str, force: bool, json_out: bool,
             copy_unchanged: bool = False) -> None:
    counts = {"restore": 0, "redo": 0, "skip": 0}
    for job in jobs:
        try:
            decision = state.decide(job.source, job.target, settings, force=force, copy_unchanged=copy_unchanged)
            action, why = decision.action, decision.why
        except OSError as exc:
            action, why = "restore", f"unreadable ({exc.strerror or exc})"
        counts[action] += 1
        if json_out:
            # markup=False: a name like "[red]x.jpg" is data, printed as it is
            out.print(json.dumps(json_safe({"file": str(job.source), "output": str(job.target),
                                            "action": action, "why": why}), ensure_ascii=False),
                      markup=False, highlight=False, soft_wrap=True)
        else:
            out.print(f"{action}\t{shown(job.source)}\t{shown(job.target)}\t{escape(why)}",
                      highlight=False, soft_wrap=True)
    err.print(f"dry run: {counts['restore']} to restore, {counts['redo']} to redo, "
              f"{counts['skip']} already done; nothing written", highlight=False)


def _run(jobs, analyzer, gallery, providers, options, state, settings, force, compare, save_faces,
         report, quiet, json_out, copy_unchanged=False) -> None:
    writer = ReportWriter(report) if report is not None else None
    tally = {"restored": 0, "no face": 0, "skipped": 0, "failed": 0, "faces": 0}
    failures: list[str] = []
    rows: list[tuple] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("photos · faces {task.fields[faces]} · failed {task.fields[failed]}"),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    start = time.perf_counter()
    progress = Progress(*columns, console=err, transient=True, disable=quiet or len(jobs) < 2)
    task = progress.add_task("restoring", total=len(jobs), faces=0, failed=0)

    def on_outcome(outcome: Outcome) -> None:
        if outcome.status == "cancelled":
            return
        tally[outcome.status] += 1
        if writer is not None:
            writer.write(outcome)
        if json_out:
            for record in _json_records(outcome):
                # markup=False: a name like "[red]x.jpg" is data, printed as it is
                out.print(json.dumps(json_safe(record), ensure_ascii=False), markup=False, highlight=False,
                          soft_wrap=True)
        if outcome.status == "failed":
            failures.append(outcome.error or str(outcome.job.source))
            progress.console.print(f"[red]error:[/red] {shown(outcome.error or '')}", highlight=False)
        elif outcome.result is not None:
            result = outcome.result
            tally["faces"] += restored_faces(result.faces)
            if not json_out and len(jobs) <= TABLE_LIMIT:
                rows.append(result)
        progress.update(task, advance=1, faces=tally["faces"], failed=tally["failed"])

    runner = BatchRunner(analyzer=analyzer, gallery=gallery, providers=providers, options=options,
                         on_outcome=on_outcome, state=state, settings=settings, force=force,
                         compare=compare, save_faces=save_faces, copy_unchanged=copy_unchanged)
    try:
        with progress:
            runner.run(jobs)
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted[/yellow] after {sum(tally[k] for k in ('restored', 'no face', 'skipped', 'failed'))}"
                  f" of {len(jobs)} photos; finished photos are kept and recorded — "
                  "rerun the same command to do the rest", highlight=False)
        raise typer.Exit(130) from None
    finally:
        if writer is not None:
            writer.close()
    elapsed = time.perf_counter() - start
    if not json_out and not quiet and rows:
        table = Table("photo", "face", "person", "similarity", "restorer", "note")
        for result in rows:
            for f in result.faces:
                sim = "" if f.similarity is None else f"{f.similarity:.3f}"
                table.add_row(shown(result.source.name), str(f.index), escape(f.person or "generic"), sim,
                              escape(f.restorer or "-"), escape(f.skipped or f.reason))
            if not result.faces:
                table.add_row(shown(result.source.name), "-", "", "", "", "no face found")
        out.print(table)
    if not quiet:
        if len(jobs) <= 20:
            for result in rows:
                if result.output is None:
                    err.print(f"no face to restore in {shown(result.source)}; nothing written "
                              "(--copy-unchanged writes a copy)", highlight=False)
                else:
                    err.print(f"wrote {shown(result.output)}" + "".join(f", {shown(p)}" for p in result.extra),
                              highlight=False)
        _summary(tally, len(jobs), elapsed)
        if tally["skipped"] == len(jobs):
            err.print(f"all {len(jobs)} photo(s) were done by an earlier run with the same settings; nothing "
                      "was written (--force redoes them)", highlight=False)
    if tally["failed"]:
        err.print(f"[red]{tally['failed']} of {len(jobs)} photos failed[/red]")
        if debug_enabled():
            err.print("\n".join(shown(f) for f in failures), highlight=False)
        raise typer.Exit(1)


def _json_records(outcome: Outcome) -> list[dict]:
    """``--json`` lines of one photo: one per face for a restored photo, else one
    for the photo; every line says its photo's ``status``."""
    job, result = outcome.job, outcome.result
    if outcome.status == "restored" and result is not None:
        return [{**r, "status": "restored"} for r in result.records()]
    base = {"file": str(job.source), "face": None, "status": outcome.status}
    if outcome.status == "no face":
        output = result.output if result is not None else None
        return [{**base, "output": None if output is None else str(output)}]
    if outcome.status == "skipped":
        no_output = outcome.why == "done, no face"
        return [{**base, "output": None if no_output else str(job.target), "why": outcome.why}]
    return [{**base, "output": None, "error": outcome.error}]


def _summary(tally: dict, total: int, elapsed: float) -> None:
    rate = (tally["restored"] + tally["no face"]) / elapsed * 60 if elapsed > 0 else 0.0
    table = Table("photos", "restored", "no face", "already done", "failed", "faces restored", "time",
                  "photos/min", title="facefix restore", title_justify="left")
    table.add_row(str(total), str(tally["restored"]), str(tally["no face"]), str(tally["skipped"]),
                  str(tally["failed"]), str(tally["faces"]), f"{elapsed:.1f} s", f"{rate:.1f}")
    err.print(table)
