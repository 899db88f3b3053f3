"""``facefix eval``: measure a person's restorer against the generic one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from facefix.cli.common import BackendOpt, DeviceOpt, JsonOpt, err, out
from facefix.evaluate.run import evaluate_person
from facefix.faces import get_analyzer
from facefix.photos import Photo, PhotoMeta, write_photo
from facefix.profiles import ProfileStore


def eval_command(
    name: Annotated[str, typer.Argument(help="An enrolled person.", show_default=False)],
    *,
    holdout: Annotated[int, typer.Option(help="References held out for testing (at least; crops of one photo are held out together).")] = 3,
    budget: Annotated[float, typer.Option(help="Training time in minutes (both models together).")] = 10.0,
    sheet: Annotated[Path | None, typer.Option(help="Contact sheet PNG (default: NAME_eval.png here).")] = None,
    seed: Annotated[int, typer.Option(help="Chooses the held-out photos and seeds the degradations.")] = 0,
    face_size: Annotated[list[int] | None, typer.Option(
        help="Also score faces this many pixels wide, as small faces in photos are (repeatable; "
             "default: the 512 template).")] = None,
    references: Annotated[bool, typer.Option(
        "--references/--no-references",
        help="Also score NAME's model followed by NAME's kept references (as restore does).")] = True,
    fusion: Annotated[bool, typer.Option(help="With --references, learn the reference fusion as enroll does "
                                              "(a quarter of --budget).")] = True,
    backend: BackendOpt = "auto",
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Hold out some of NAME's references, retrain without them, degrade them at two
    levels and compare the degraded input, the generic model, NAME's model and NAME's
    model with NAME's references (PSNR, SSIM, identity, sharpness against the original, expression error)."""
    store = ProfileStore()
    store.load(name)
    analyzer = get_analyzer(backend)
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("step {task.completed:.0f}"),
               TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = None

        def on_stage(label: str, seconds: float) -> None:
            nonlocal task
            if task is not None:
                progress.update(task, visible=False)
            task = progress.add_task(f"training {label}", total=None)

        def on_step(info) -> None:
            progress.update(task, completed=info.step, total=max(info.total_steps, info.step))

        report = evaluate_person(name, store=store, analyzer=analyzer, holdout=holdout, budget_s=budget * 60,
                                 seed=seed, device=device, on_stage=on_stage, on_step=on_step, face_sizes=face_size,
                                 references=references, fusion=fusion)
    target = sheet or Path(f"{name}_eval.png")
    write_photo(Photo(report.sheet_u8(), PhotoMeta(format="PNG", mode="RGB")), target)
    if json_out:
        out.print_json(json.dumps({**report.to_dict(), "sheet": str(target)}))
        return
    table = Table("face px", "level", "method", "PSNR dB", "SSIM", f"identity ({report.backend} cos)", "distance",
                  "sharpness", "expression err",
                  title=f"{name}: {len(report.held_out)} held out, {report.train_references} for training")
    for r in report.rows:
        table.add_row(str(r.face_size), r.level, r.method, f"{r.psnr:.2f}", f"{r.ssim:.3f}", f"{r.identity:.3f}",
                      f"{r.distance:.3f}", f"{r.sharpness:.3f}", f"{r.expression:.2f}")
    out.print(table)
    # The two new columns need a key: neither is a standard metric.
    err.print("sharpness: the face's detail energy over the original's (1 = as sharp; above 1: noise or "
              "invented texture). expression err: eye and mouth structure that is not the original's "
              "(lower = truer; a pasted mouth or gaze scores well above the degraded input)")
    err.print(f"contact sheet: {target}")
