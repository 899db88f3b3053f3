"""``facefix learn DIR``: train the generic restorer on a library's own sharpest faces. Parses, calls
:func:`facefix.learn.api.learn`, prints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from facefix.cli.common import BackendOpt, DeviceOpt, err, make_progress, shown
from facefix.errors import UsageError
from facefix.learn.api import LearnCallbacks, LearnOptions, learn
from facefix.learn.library import MAX_BLUR, MIN_FACE


def learn_command(
    folder: Annotated[Path, typer.Argument(help="The photo library (searched recursively).", metavar="DIR",
                                           show_default=False)],
    *,
    budget: Annotated[float, typer.Option(help="Training time in minutes.")] = 10.0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run.")] = False,
    min_face: Annotated[float, typer.Option(help="Smallest eye-to-mouth distance of a face to learn from (px): "
                                            "smaller faces are enlargements, not clean targets.")] = MIN_FACE,
    max_blur: Annotated[float, typer.Option(help="Largest blur width of a face to learn from (px of the 512 "
                                            "template; sharp photos measure 0.85-1.2).")] = MAX_BLUR,
    min_targets: Annotated[int, typer.Option(help="Fewer sharp faces than this: no model.")] = 20,
    max_faces: Annotated[int, typer.Option(help="Read at most this many faces (0.75 MB of memory each).")] = 1000,
    max_steps: Annotated[int | None, typer.Option(help="Also stop after this many steps.", hidden=True)] = None,
    backend: BackendOpt = "auto",
    device: DeviceOpt = "auto",
) -> None:
    """Train the generic restorer (faces that match nobody) on DIR's sharpest faces, degraded as its
    other faces are. No downloaded weights; it records whose photos it learned from."""
    if budget <= 0:
        raise UsageError(f"--budget must be positive minutes, not {budget}")
    options = LearnOptions(budget_minutes=budget, resume=resume, min_face=min_face, max_blur=max_blur,
                           min_targets=min_targets, max_faces=max_faces, max_steps=max_steps, backend=backend,
                           device=device)
    progress = make_progress("{task.fields[note]}")
    tasks: dict[str, int] = {}

    def show(label: str, *, completed: float, total: float | None, note: str = "") -> None:
        if label not in tasks:
            for other in tasks.values():
                progress.update(other, visible=False)
            tasks[label] = progress.add_task(label, total=total, completed=completed, note=note)
        progress.update(tasks[label], completed=completed, total=total, note=note)

    def on_step(info) -> None:
        show("learning", completed=info.step, total=max(info.total_steps, info.step), note=f"loss {info.smoothed_loss:.4f}")

    callbacks = LearnCallbacks(on_scan=lambda done, total: show("reading photos", completed=done, total=total),
                               on_stage=lambda label, _: show(label, completed=0, total=None), on_step=on_step)
    with progress:
        result = learn(folder, options, callbacks)
    rejected = ", ".join(f"{n} {reason}" for reason, n in sorted(result.rejected.items())) or "none"
    err.print(f"{result.photos} photo(s), {result.faces} face(s): {result.targets} learned from, "
              f"{result.validation} held out (whole photos) for validation; not clean targets: {escape(rejected)}",
              highlight=False)
    if result.unread:
        err.print(f"{len(result.unread)} photo(s) gave no face, e.g. {shown(result.unread[0][0])} "
                  f"({escape(result.unread[0][1])})", highlight=False)
    err.print(f"degradation {escape(result.degradation.describe())}", highlight=False)
    people = ", ".join(result.people) or "nobody enrolled"
    err.print(f"faces of {escape(people)} among them (recorded: 'facefix profiles rm NAME' removes this model)",
              highlight=False)
    err.print(f"learned {result.steps} steps in {result.seconds:.0f} s, from {escape(result.started_from)}",
              highlight=False)
    if result.after is not None:
        err.print(f"validation ({result.validation} held-out faces, degraded as the library): PSNR "
                  f"{result.degraded.psnr:.2f} dB degraded, {result.before.psnr:.2f} with {escape(result.started_from)}, "
                  f"{result.after.psnr:.2f} learned; sharpness {result.degraded.sharpness:.2f} / "
                  f"{result.before.sharpness:.2f} / {result.after.sharpness:.2f} (1.0 = as sharp as the photo)",
                  highlight=False)
    else:
        err.print("no validation: the sharp faces all come from one photo", highlight=False)
    if result.interrupted:
        err.print("[yellow]interrupted:[/yellow] the last good weights are saved as the generic restorer; "
                  f"continue with 'facefix learn {shown(folder)} --resume'", highlight=False)
        raise typer.Exit(130)
    err.print("[green]saved as the generic restorer[/green]: 'facefix restore' uses it for faces that match nobody",
              highlight=False)
