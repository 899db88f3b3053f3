"""``facefix enroll``: build a person's profile from their photos and train their restorer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..enroll import FEW_REFERENCES, MIN_FACE, scan_photos, select_references
from ..errors import ProfileError, UsageError
from ..faces import get_analyzer
from ..profiles import GenericStore, ProfileStore, validate_name
from ..training import train_person
from .common import BackendOpt, DeviceOpt, err, out
from .main import app


@app.command("enroll")
def enroll_command(
    name: Annotated[str, typer.Argument(help="The person's name, e.g. alice.", show_default=False)],
    folder: Annotated[Path | None, typer.Argument(help="Folder with photos of the person (searched recursively).",
                                                  show_default=False)] = None,
    *,
    add: Annotated[bool, typer.Option("--add", help="Add these photos to an existing profile.")] = False,
    budget: Annotated[float, typer.Option(help="Training time in minutes.")] = 10.0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted training run.")] = False,
    min_face: Annotated[float, typer.Option(help="Smallest eye-to-mouth distance of a reference, in pixels.")] = MIN_FACE,
    no_train: Annotated[bool, typer.Option("--no-train", help="Only store the references.")] = False,
    backend: BackendOpt = "auto",
    device: DeviceOpt = "auto",
) -> None:
    """Pick NAME's face in each photo of FOLDER, store the aligned references, train the restorer."""
    name = validate_name(name)
    store = ProfileStore()
    exists = store.exists(name)
    if folder is None and not (resume and exists):
        raise UsageError("give the folder of photos (FOLDER), or --resume to continue training an enrolled person")
    if folder is not None:
        if exists and not add and not resume:
            raise UsageError(f"{name!r} is already enrolled; use --add to add photos, or "
                             f"'facefix profiles rm {name}' to start over")
        _collect(name, folder, store, exists=exists, min_face=min_face, backend=backend)
    if no_train:
        return
    _train(name, store, budget_s=budget * 60.0, resume=resume, device=device)


def _collect(name: str, folder: Path, store: ProfileStore, *, exists: bool, min_face: float, backend: str) -> None:
    photos = scan_photos(folder)
    if not photos:
        raise UsageError(f"no photos (jpg, png, tif, webp, bmp) in {folder}")
    analyzer = get_analyzer(backend)
    known, hashes = None, []
    if exists:
        profile = store.load(name)
        hashes = [r.sha256 for r in profile.references]
        if analyzer.name in profile.backends:
            known = profile.embeddings(analyzer.name)
    with Progress(TextColumn("reading photos"), BarColumn(), MofNCompleteColumn(), console=err,
                  transient=True) as progress:
        task = progress.add_task("scan", total=len(photos))
        selection = select_references(photos, analyzer, known=known, known_hashes=hashes, min_face=min_face,
                                      on_photo=lambda _: progress.advance(task))
    def shown(path: Path) -> str:
        return escape(str(path.relative_to(folder) if folder in path.parents else path))

    table = Table("photo", "result", title=f"references for {name} from {escape(str(folder))}")
    for cand in selection.accepted:
        table.add_row(shown(cand.path), f"[green]accepted[/green] (eye-mouth {cand.face.eye_mouth:.0f} px)")
    for rej in selection.rejected:
        table.add_row(shown(rej.path), f"[yellow]rejected[/yellow]: {escape(rej.reason)}")
    out.print(table)
    if not selection.accepted:
        raise ProfileError(f"no usable photo of {name} in {folder} ({len(selection.rejected)} rejected, "
                           "reasons above); add clear, single-person photos and try again")
    with store.edit(name, create=True) as editor:
        for cand in selection.accepted:
            editor.add_reference(cand.crop, source=cand.path.resolve(), sha256=cand.sha256,
                                 embeddings={analyzer.name: cand.face.embedding}, box=cand.face.box,
                                 info={"sharpness": round(cand.sharpness, 1), "eye_mouth": round(cand.face.eye_mouth, 1)})
        total = len(editor.references)
    if total < FEW_REFERENCES:
        err.print(f"[yellow]warning:[/yellow] {name} has only {total} reference(s); "
                  f"{FEW_REFERENCES} or more different photos restore them more faithfully")
    err.print(f"{name}: {len(selection.accepted)} reference(s) added, {total} in the profile")


def _train(name: str, store: ProfileStore, *, budget_s: float, resume: bool, device: str) -> None:
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("step {task.completed:.0f}"),
               TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn())
    with Progress(*columns, console=err) as progress:
        task = None

        def on_stage(label: str, seconds: float) -> None:
            nonlocal task
            if task is not None:
                progress.update(task, visible=False)
            task = progress.add_task(f"training {label}", total=None, loss="-")

        def on_step(info) -> None:
            progress.update(task, completed=info.step, total=max(info.total_steps, info.step),
                            loss=f"{info.smoothed_loss:.4f}")

        results = train_person(name, store=store, generic=GenericStore(), budget_s=budget_s, resume=resume,
                               device=device, on_stage=on_stage, on_step=on_step)
    for r in results:
        trend = "" if r.first_loss is None else f", loss {r.first_loss:.4f} → {r.last_loss:.4f}"
        err.print(f"{r.stage}: {r.steps} steps in {r.seconds:.0f} s{trend}")
    if any(r.interrupted for r in results):
        err.print(f"[yellow]interrupted:[/yellow] the last good weights are saved; continue with "
                  f"'facefix enroll {name} --resume'")
        raise typer.Exit(130)
    err.print(f"[green]{name} is enrolled[/green]; restore with 'facefix restore PHOTO --person {name}'")
