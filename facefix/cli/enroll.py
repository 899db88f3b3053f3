"""``facefix enroll``: build a person's profile from their photos and train their restorer(s).

``--engine fast`` trains the compact CNN; ``--engine diffusion`` (or ``auto``
with a CUDA GPU and the model set on disk) then personalizes the diffusion
restorer with Dual-Pivot Tuning (:mod:`facefix.enroll.diffusion`).
"""

from __future__ import annotations

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

from facefix.cli.common import BackendOpt, DeviceOpt, err, out
from facefix.cli.main import app
from facefix.enroll.fast import train_person
from facefix.enroll.select import (
    FEW_REFERENCES,
    MIN_FACE,
    scan_photos,
    select_references,
)
from facefix.errors import ProfileError, UsageError
from facefix.faces import get_analyzer
from facefix.profiles import GenericStore, ProfileStore, validate_name
from facefix.providers.engines import ENGINES, FAST_KIND, choose_engine


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
    engine: Annotated[str, typer.Option(
        help="Restorer to train: fast (CNN), diffusion (fast, then Dual-Pivot Tuning; needs the model set, "
             "a CUDA GPU to be quick), auto (diffusion when a CUDA GPU and the model set are here).")] = "auto",
    model_set: Annotated[str | None, typer.Option(
        "--model-set", help="Diffusion model set: a registered name or a local model-set directory "
                            "(default: FACEFIX_MODEL_SET or sd15-tile).", show_default=False)] = None,
    generic_faces: Annotated[Path | None, typer.Option(
        "--generic-faces", help="Folder of aligned generic face crops for diffusion stage 2 (added to other "
                                "people's references and painted portraits).", show_default=False)] = None,
    # Hidden knobs (documented in docs/diffusion.md): real settings, recorded in the adapters.
    stage1_steps: Annotated[int | None, typer.Option(hidden=True, help="Diffusion stage 1 steps (default 500).")] = None,
    stage2_steps: Annotated[int | None, typer.Option(hidden=True, help="Diffusion stage 2 steps (default 800).")] = None,
    class_images: Annotated[int | None, typer.Option(hidden=True, help="Prior-preservation images (default 100).")] = None,
    generic_count: Annotated[int | None, typer.Option(hidden=True, help="Generic faces for stage 2 (default 200).")] = None,
) -> None:
    """Pick NAME's face in each photo of FOLDER, store the aligned references, train the restorer."""
    name = validate_name(name)
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    store = ProfileStore()
    exists = store.exists(name)
    if folder is None and not (resume and exists):
        raise UsageError("give the folder of photos (FOLDER), or --resume to continue training an enrolled person")
    if folder is not None and exists and not add and not resume:
        raise UsageError(f"{name!r} is already enrolled; use --add to add photos, or "
                         f"'facefix profiles rm {name}' to start over")
    tuning = None
    if not no_train:
        # Decide (and find the weights) before any slow step, so a missing model set fails at once.
        tuning = _plan_diffusion(engine, model_set, device=device, stage1_steps=stage1_steps,
                                 stage2_steps=stage2_steps, class_images=class_images, generic_count=generic_count)
    if folder is not None:
        added = _collect(name, folder, store, exists=exists, min_face=min_face, backend=backend)
        if not added and not resume:
            return  # nothing new: the profile and its restorer are as they were
    if no_train:
        return
    if tuning is not None and resume and folder is None and _fast_is_done(store, name):
        err.print(f"{name}'s fast restorer is trained; going on with the diffusion tuning")
    else:
        _train(name, store, budget_s=budget * 60.0, resume=resume, device=device)
    if tuning is not None:
        _tune(name, store, tuning, resume=resume, device=device, generic_folder=generic_faces, backend=backend)
    err.print(f"[green]{name} is enrolled[/green]; restore with 'facefix restore PHOTO --person {name}'")


def _plan_diffusion(engine: str, model_set: str | None, *, device: str, **counts):
    """``(ModelSet, DualPivotConfig)`` when diffusion tuning will run, else None (saying why for ``auto``)."""
    from facefix.enroll.diffusion import dual_pivot_config
    from facefix.modelsets.registry import locate, resolve_model_set

    concrete, why = choose_engine(engine, model_set, device=device)
    if why:
        err.print(f"[yellow]note:[/yellow] {escape(why)}; training the fast restorer only")
    if concrete != "diffusion":
        return None
    chosen = resolve_model_set(model_set)
    locate(chosen)  # ModelError naming the id, where it looked and `facefix models pull ...`
    try:
        config = dual_pivot_config(stage1_steps=counts["stage1_steps"], stage2_steps=counts["stage2_steps"],
                                   class_images=counts["class_images"], generic_faces=counts["generic_count"])
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return chosen, config


def _fast_is_done(store: ProfileStore, name: str) -> bool:
    art = store.load(name).artifacts.get(FAST_KIND)
    return art is not None and not art.settings.get("training", {}).get("interrupted", False)


def _collect(name: str, folder: Path, store: ProfileStore, *, exists: bool, min_face: float, backend: str) -> bool:
    """Select and store references; False when there was nothing new to add."""
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
    if not selection.accepted and exists and any(r.reason.startswith("duplicate") for r in selection.rejected):
        err.print(f"no new references: the photos in {escape(str(folder))} are already in {name}'s profile or rejected above")
        return False
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
    return True


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
        if r.first_loss is not None and r.last_loss > r.first_loss:
            # not a failure: every batch is a new random degradation, and a model that
            # continues (the generic one) starts where the loss is already low
            trend += " (batches are freshly degraded, so the loss can end higher; see 'facefix eval')"
        err.print(f"{r.stage}: {r.steps} steps in {r.seconds:.0f} s{trend}")
    if any(r.interrupted for r in results):
        err.print(f"[yellow]interrupted:[/yellow] the last good weights are saved; continue with "
                  f"'facefix enroll {name} --resume'")
        raise typer.Exit(130)


_STAGE_LABELS = {"stage1": "diffusion stage 1 (generator)", "stage2": "diffusion stage 2 (guide)"}


def _tune(name: str, store: ProfileStore, plan, *, resume: bool, device: str, generic_folder: Path | None,
          backend: str) -> None:
    """Dual-Pivot Tuning with one progress display: stage, step, loss, ETA."""
    from facefix.enroll.diffusion import tune_person
    from facefix.training.diffusion_loop import TrainProgress

    model_set, config = plan
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=err) as progress:
        tasks: dict[str, int] = {}
        current: list[str] = []

        def on_progress(report) -> None:
            train = isinstance(report, TrainProgress)
            label = _STAGE_LABELS.get(report.stage, report.stage) if train else f"painting {report.stage}"
            if label not in tasks:
                if current:
                    progress.update(tasks[current[-1]], visible=False)
                # Start a resumed stage at its checkpoint, so the ETA counts only the steps still to go.
                start = report.resumed_from if train else 0
                tasks[label] = progress.add_task(label, total=report.total, completed=start, loss="-")
                current.append(label)
            loss = f"{report.loss:.4f}" if train else "-"
            progress.update(tasks[label], completed=report.step, total=report.total, loss=loss)

        result = tune_person(name, store=store, generic=GenericStore(), model_set=model_set, device=device,
                             resume=resume, on_progress=on_progress, config=config, generic_folder=generic_folder,
                             backend=backend)
    if result.interrupted:
        err.print(f"[yellow]interrupted:[/yellow] the diffusion tuning keeps its last checkpoint (stage 1 at step "
                  f"{result.stage1_steps}, stage 2 at step {result.stage2_steps}); continue with "
                  f"'facefix enroll {name} --resume --engine diffusion'")
        raise typer.Exit(130)
    loss1 = "-" if result.stage1_loss is None else f"{result.stage1_loss:.4f}"
    loss2 = "-" if result.stage2_loss is None else f"{result.stage2_loss:.4f}"
    err.print(f"diffusion ({escape(result.model_set)}): stage 1 {result.stage1_steps} steps (loss {loss1}), "
              f"stage 2 {result.stage2_steps} steps (loss {loss2}); adapters {result.bytes / 1e6:.1f} MB, "
              f"{result.seconds:.0f} s")
