"""``facefix enroll``: build a person's profile from their photos and train their restorer(s).

Parses, calls :func:`facefix.enroll.api.enroll`, prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from facefix.cli.common import BackendOpt, DeviceOpt, Engine, err, make_progress, out
from facefix.enroll.api import EnrollCallbacks, EnrollOptions, enroll
from facefix.enroll.select import MIN_FACE

_STAGE_LABELS = {"stage1": "diffusion stage 1 (generator)", "stage2": "diffusion stage 2 (guide)"}


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
    fusion: Annotated[bool, typer.Option(help="Also learn how NAME's references fuse into restored faces "
                                              "(a quarter of --budget; used for blurred faces).")] = True,
    backend: BackendOpt = "auto",
    device: DeviceOpt = "auto",
    engine: Annotated[Engine, typer.Option(
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
    options = EnrollOptions(add=add, budget_minutes=budget, resume=resume, min_face=min_face, train=not no_train,
                            backend=backend, device=device, engine=engine, model_set=model_set,
                            generic_faces=generic_faces, stage1_steps=stage1_steps, stage2_steps=stage2_steps,
                            class_images=class_images, generic_count=generic_count, fusion=fusion)
    progress = make_progress("{task.fields[note]}", transient=False)
    tasks: dict[str, int] = {}

    def show(label: str, *, completed: float, total: float | None, note: str) -> None:
        if label not in tasks:
            for other in tasks.values():
                progress.update(other, visible=False)
            tasks[label] = progress.add_task(label, total=total, completed=completed, note=note)
        progress.update(tasks[label], completed=completed, total=total, note=note)

    def on_references(selection, total: int) -> None:
        def shown(path: Path) -> str:
            return escape(str(path.relative_to(folder) if folder in path.parents else path))

        table = Table("photo", "result", title=f"references for {name} from {escape(str(folder))}")
        for cand in selection.accepted:
            table.add_row(shown(cand.path), f"[green]accepted[/green] (eye-mouth {cand.face.eye_mouth:.0f} px)")
        for rej in selection.rejected:
            table.add_row(shown(rej.path), f"[yellow]rejected[/yellow]: {escape(rej.reason)}")
        progress.stop()
        out.print(table)
        if selection.accepted:
            err.print(f"{name}: {len(selection.accepted)} reference(s) added, {total} in the profile")

    stage = {"label": ""}

    def on_stage(label: str, seconds: float) -> None:
        stage["label"] = f"training {label}"
        progress.start()
        show(stage["label"], completed=0, total=None, note="loss -")

    def on_step(info) -> None:
        show(stage["label"], completed=info.step, total=max(info.total_steps, info.step),
             note=f"loss {info.smoothed_loss:.4f}")

    def on_fusion(share: float, doing: str) -> None:
        show(stage["label"], completed=round(100 * share), total=100, note=doing)

    def on_tune(report) -> None:
        from facefix.training.diffusion_loop import TrainProgress

        train = isinstance(report, TrainProgress)
        label = _STAGE_LABELS.get(report.stage, report.stage) if train else f"painting {report.stage}"
        # A resumed stage starts at its checkpoint, so the ETA counts only the steps still to go.
        start = report.resumed_from if train and label not in tasks else report.step
        show(label, completed=start, total=report.total, note=f"loss {report.loss:.4f}" if train else "")

    def scan(done: int, total: int) -> None:
        progress.start()
        show("reading photos", completed=done, total=total, note="")

    callbacks = EnrollCallbacks(
        on_note=lambda text: err.print(f"[yellow]note:[/yellow] {escape(text)}", highlight=False),
        on_warning=lambda text: err.print(f"[yellow]warning:[/yellow] {escape(text)}", highlight=False),
        on_info=lambda text: err.print(escape(text), highlight=False),
        on_scan=scan, on_references=on_references, on_stage=on_stage, on_step=on_step, on_fusion=on_fusion,
        on_tune=on_tune)
    try:
        result = enroll(name, folder, options, callbacks)
    finally:
        progress.stop()
    if result.training:
        _print_training(name, result.training)
    if result.tuning is not None:
        _print_tuning(name, result.tuning)
    if result.interrupted:
        raise typer.Exit(130)
    if options.train and (result.added or folder is None or options.resume):
        err.print(f"[green]{name} is enrolled[/green]; restore with 'facefix restore PHOTO --person {name}'")


def _print_training(name: str, results) -> None:
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



def _print_tuning(name: str, result) -> None:
    if result.interrupted:
        err.print(f"[yellow]interrupted:[/yellow] the diffusion tuning keeps its last checkpoint (stage 1 at step "
                  f"{result.stage1_steps}, stage 2 at step {result.stage2_steps}); continue with "
                  f"'facefix enroll {name} --resume --engine diffusion'")
        return
    loss1 = "-" if result.stage1_loss is None else f"{result.stage1_loss:.4f}"
    loss2 = "-" if result.stage2_loss is None else f"{result.stage2_loss:.4f}"
    err.print(f"diffusion ({escape(result.model_set)}): stage 1 {result.stage1_steps} steps (loss {loss1}), "
              f"stage 2 {result.stage2_steps} steps (loss {loss2}); adapters {result.bytes / 1e6:.1f} MB, "
              f"{result.seconds:.0f} s")
