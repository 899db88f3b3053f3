"""``facefix restore``: restore the faces in photos or whole folders of photos.

Parses, calls :mod:`facefix.restore.api`, prints.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.markup import escape

from facefix.cli.common import (
    BackendOpt,
    DeviceOpt,
    Engine,
    JsonOpt,
    OutputOpt,
    PersonOpt,
    err,
    shown,
)
from facefix.cli.restore_output import print_nothing_found, print_plan, run_and_print
from facefix.cluster.connect import CLUSTER_HELP
from facefix.errors import UsageError
from facefix.restore.api import (
    RestoreRequest,
    RestoreSession,
)
from facefix.restore.pipeline import RestoreOptions


def restore_command(
    paths: Annotated[list[Path], typer.Argument(metavar="PHOTO_OR_FOLDER", help="Photos or folders of photos.",
                                              show_default=False)],
    *,
    person: PersonOpt = "auto",
    output: OutputOpt = None,
    suffix: Annotated[str, typer.Option(help="Added to each output's file name.")] = "_restored",
    ext: Annotated[Literal["same", "jpg", "png"], typer.Option(help="Output format: same, jpg or png.")] = "same",
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into subfolders.")] = False,
    include: Annotated[list[str] | None, typer.Option(
        "--include", metavar="GLOB", help="Only photos matching this glob (name, relative path or folder; any case). Repeatable.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(
        "--exclude", metavar="GLOB", help="Skip photos matching this glob (name, relative path or folder; any case). Repeatable.")] = None,
    upscale: Annotated[int, typer.Option(help="Enlarge the whole photo by this factor (1-8).")] = 1,
    faces: Annotated[Literal["all", "largest", "center"], typer.Option(help="Which faces: all, largest or center.")] = "all",
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
    keep_expression: Annotated[bool, typer.Option(
        "--keep-expression/--free-expression",
        help="With references: the eyes' and mouth's shapes stay the photo's, only finer detail "
             "(lashes, lip lines) is restored there. --free-expression lets the restorer draw them: "
             "sharper, but a smile, teeth or gaze may not be the photo's.")] = True,
    engine: Annotated[Engine, typer.Option(
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
    cluster: Annotated[str | None, typer.Option("--cluster", metavar="ADDRESS", help=CLUSTER_HELP)] = None,
    cluster_workers: Annotated[int | None, typer.Option(
        "--cluster-workers", help="Workers on the cluster (default: one per GPU, else one per CPU).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Redo photos an earlier run already finished.")] = False,
    copy_unchanged: Annotated[bool, typer.Option(
        "--copy-unchanged",
        help="Also give photos with no face to restore an output: a byte copy (converted only when "
             "--ext asks for another format). Default: no file for them.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be done, and do nothing.")] = False,
    report: Annotated[Path | None, typer.Option(
        "--report", help="Write a JSON Lines record per photo and per face to this file.")] = None,
    review: Annotated[bool, typer.Option(
        "--review", help="Then write OUT/facefix-review.html to flip through before/after (needs --output).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary; errors only.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Restore every face, matched to an enrolled person or to the generic prior.

    Writes a new file per photo (the original is never modified) carrying the
    original's metadata. Folders are mirrored under --output. A rerun of the
    same command skips photos already done and redoes those that changed.
    Exit status: 0 all done, 1 some photos failed, 2 usage error.
    """
    if review and output is None:
        raise UsageError("--review needs --output DIR: the page and its images are written there")
    executor = None
    if cluster is not None:  # before planning: without Ray, one line says how to get it (exit 2)
        from facefix.cluster.executor import RayExecutor

        executor = RayExecutor(cluster, workers=cluster_workers)
    if quiet:  # errors only: the log's notes and warnings too
        logging.getLogger("facefix").setLevel(logging.ERROR)
    request = RestoreRequest(
        paths=tuple(paths), output=output, suffix=suffix, ext=ext, recursive=recursive,
        include=tuple(include or ()), exclude=tuple(exclude or ()),
        options=RestoreOptions(person=person, faces=faces, min_face=min_face, upscale=upscale,
                               strength=strength, aligned=aligned, grain=grain),
        engine=engine, model_set=model_set, steps=steps, seed=seed, low_vram=low_vram, tta=tta,
        references=references, keep_expression=keep_expression, restorer=restorer, backend=backend,
        devices=tuple(_parse_devices(devices)) if devices else (device,),
        compare=compare, save_faces=save_faces, copy_unchanged=copy_unchanged, force=force, report=report)
    with RestoreSession.open(request, dry_run=dry_run) as session:
        if not session.jobs:
            print_nothing_found(session.not_read)
            raise typer.Exit(1)
        if session.engine_note and not quiet:
            err.print(f"[yellow]note:[/yellow] {escape(session.engine_note)}", highlight=False)
        if dry_run:
            print_plan(session.plan(), json_out)
            return
        try:
            run_and_print(session, quiet=quiet, json_out=json_out, executor=executor)
        finally:
            if review:  # also after failures or Ctrl-C: the page shows what was done
                from facefix.review import write_review

                page = write_review(output, report=report).page
                err.print(f"review: {shown(page)}", highlight=False)


def _parse_devices(text: str) -> list[str]:
    devices = [d.strip() for d in text.split(",") if d.strip()]
    if not devices:
        raise UsageError(f"--devices {text!r} names no device; use e.g. --devices cuda:0,cuda:1")
    return devices
