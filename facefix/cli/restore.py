"""``facefix restore``: restore the faces in photos or folders of photos."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..batch import plan_jobs
from ..errors import FacefixError
from ..faces import get_analyzer
from ..matching import Gallery
from ..pipeline import RestoreOptions, restore_file
from ..profiles import GenericStore, ProfileStore
from ..restorers.loading import FastRestorers
from .common import BackendOpt, DeviceOpt, JsonOpt, OutputOpt, PersonOpt, err, out, report_error
from .main import app


@app.command("restore")
def restore_command(
    paths: Annotated[list[Path], typer.Argument(help="Photos or folders of photos.", show_default=False)],
    *,
    person: PersonOpt = "auto",
    output: OutputOpt = None,
    suffix: Annotated[str, typer.Option(help="Added to each output's file name.")] = "_restored",
    ext: Annotated[str, typer.Option(help="Output format: same, jpg or png.")] = "same",
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into subfolders.")] = False,
    upscale: Annotated[int, typer.Option(help="Enlarge the whole photo by this factor (1-8).")] = 1,
    faces: Annotated[str, typer.Option(help="Which faces: all, largest or center.")] = "all",
    min_face: Annotated[float, typer.Option(help="Skip faces under this eye-to-mouth distance (px).")] = 10.0,
    aligned: Annotated[bool, typer.Option(help="Inputs are already aligned 512x512 face crops.")] = False,
    strength: Annotated[float, typer.Option(help="1 = fully restored, 0 = original.")] = 1.0,
    save_faces: Annotated[bool, typer.Option(help="Also write each face before and after.")] = False,
    compare: Annotated[bool, typer.Option(help="Also write a side-by-side comparison image.")] = False,
    tta: Annotated[bool, typer.Option(help="Average each face with its mirror image (2x slower).")] = False,
    backend: BackendOpt = "auto",
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Restore every face, matched to an enrolled person or to the generic prior.

    Writes a new file per photo (the original is never modified) carrying the
    original's metadata.
    """
    options = RestoreOptions(person=person, faces=faces, min_face=min_face, upscale=upscale,
                             strength=strength, aligned=aligned)
    jobs = plan_jobs(paths, output_dir=output, suffix=suffix, ext=ext, recursive=recursive)
    if not jobs:
        err.print("no photos found in the given paths")
        raise typer.Exit(1)
    store = ProfileStore()
    if person != "auto":
        store.load(person)  # a clear error for an unknown name, before any work
    analyzer = get_analyzer(backend)
    gallery = Gallery.from_store(store, analyzer)
    restorers = FastRestorers(store, GenericStore(), device=device, tta=tta)
    results, failures = [], 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("faces {task.fields[faces]} · failed {task.fields[failed]}"), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True, disable=len(jobs) < 2) as progress:
        task = progress.add_task("restoring", total=len(jobs), faces=0, failed=0)
        for job in jobs:
            try:
                result = restore_file(job.source, job.target, analyzer=analyzer, gallery=gallery,
                                      restorers=restorers, options=options, compare=compare,
                                      save_faces=save_faces)
                results.append(result)
            except FacefixError as exc:
                failures += 1
                report_error(exc)
            done_faces = sum(1 for r in results for f in r.faces if f.skipped is None)
            progress.update(task, advance=1, faces=done_faces, failed=failures)
    if json_out:
        for result in results:
            for record in result.records():
                out.print(json.dumps(record), highlight=False, soft_wrap=True)
    else:
        table = Table("photo", "face", "person", "similarity", "restorer", "note")
        for result in results:
            for f in result.faces:
                sim = "" if f.similarity is None else f"{f.similarity:.3f}"
                table.add_row(result.source.name, str(f.index), f.person or "generic", sim,
                              f.restorer or "-", f.skipped or f.reason)
            if not result.faces:
                table.add_row(result.source.name, "-", "", "", "", "no face found")
        out.print(table)
        for result in results:
            err.print(f"wrote {result.output}" + "".join(f", {p}" for p in result.extra), highlight=False)
    if failures:
        err.print(f"[red]{failures} of {len(jobs)} photos failed[/red]")
        raise typer.Exit(1)
