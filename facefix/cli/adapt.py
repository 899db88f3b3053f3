"""``facefix adapt``: fine-tune the fast restorer on an album's own faces; ``facefix adapted``: manage them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from facefix.cli.common import BackendOpt, DeviceOpt, JsonOpt, err, out
from facefix.errors import UsageError

adapted_app = typer.Typer(help="List and delete adapted restorers (made by 'facefix adapt').", no_args_is_help=True)


def adapt_command(
    folder: Annotated[Path, typer.Argument(help="The album: a folder of photos (searched recursively).",
                                           show_default=False)],
    *,
    name: Annotated[str | None, typer.Option("--name", help="Name of the adapted restorer (default: the folder's "
                                             "name, plus -PERSON with --person).")] = None,
    person: Annotated[str, typer.Option("--person", "-p", help="'auto': every face, starting from the generic "
                                        "restorer; a name: only that person's faces, from their restorer.")] = "auto",
    budget: Annotated[float, typer.Option(help="Fine-tuning time in minutes (pseudo-targets take extra, "
                                          "about a second a face on a GPU).")] = 10.0,
    strength: Annotated[float, typer.Option(help="How far the diffusion prior re-draws each face (0-1; "
                                            "the paper's 0.6). Higher: more detail, less faithful.")] = 0.6,
    steps: Annotated[int, typer.Option(help="Diffusion steps over the whole schedule (strength x steps run).")] = 50,
    model_set: Annotated[str | None, typer.Option("--model-set", help="Diffusion model set: a registered name or "
                                                  "a local model-set directory (default: FACEFIX_MODEL_SET or "
                                                  "sd15-tile).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted fine-tune (pseudo-targets "
                                         "already made are always reused).")] = False,
    max_faces: Annotated[int | None, typer.Option(help="Use at most this many faces.")] = None,
    min_face: Annotated[float, typer.Option(help="Skip faces under this eye-to-mouth distance (px).")] = 16.0,
    max_steps: Annotated[int | None, typer.Option(help="Also stop fine-tuning after this many steps.",
                                                  hidden=True)] = None,
    backend: BackendOpt = "auto",
    device: DeviceOpt = "auto",
) -> None:
    """Teach the fast restorer the album's own degradations, with no clean photos.

    Each face is restored with the current fast restorer, re-drawn by the
    diffusion prior with its coarse content pinned to the original (a
    pseudo-target, cached), and the fast restorer is fine-tuned on the
    (original, pseudo-target) pairs. Restoring then needs no diffusion.
    """
    from facefix.adapt.album import AdaptCallbacks, adapt_album, default_name
    from facefix.profiles import validate_name
    from facefix.training.pseudo_targets import PseudoTargetConfig

    if person != "auto":
        person = validate_name(person)
    name = validate_name(name or default_name(folder, person))
    if budget <= 0:
        raise UsageError(f"--budget must be positive minutes, not {budget}")
    pseudo = PseudoTargetConfig(strength=strength, steps=steps)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[note]}"), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = None

        def stage(label: str, total: int | None) -> None:
            nonlocal task
            if task is not None:
                progress.update(task, visible=False)
            task = progress.add_task(label, total=total, note="")

        def face_done(index: int, reused: bool) -> None:
            progress.advance(task)

        def step(info) -> None:
            progress.update(task, completed=info.step, total=max(info.total_steps, info.step),
                            note=f"loss {info.smoothed_loss:.4f}")

        callbacks = AdaptCallbacks(on_stage=stage, on_photo=lambda _: progress.advance(task), on_face=face_done,
                                   on_step=step)
        result = adapt_album(folder, name=name, person=person, model_set=model_set, budget_s=budget * 60.0,
                             pseudo_config=pseudo, resume=resume, max_faces=max_faces, max_steps=max_steps,
                             min_face=min_face, backend=backend, device=device, callbacks=callbacks)
    for path, reason in result.skipped:
        err.print(f"[yellow]skipped[/yellow] {escape(str(path))}: {escape(reason)}", highlight=False)
    err.print(f"{result.faces} face(s); pseudo-targets: {result.made} made, {result.reused} reused from the cache",
              highlight=False)
    if result.interrupted and result.name is None:
        err.print("[yellow]interrupted:[/yellow] the pseudo-targets made so far are cached; run the same command "
                  "again to continue", highlight=False)
        raise typer.Exit(130)
    if result.name is None:
        err.print(f"{result.missing} pseudo-target(s) still to make; run the same command again", highlight=False)
        raise typer.Exit(1)
    err.print(f"fine-tuned from {escape(result.started_from or '?')}: {result.steps} steps in {result.seconds:.0f} s, "
              f"loss on the album's pairs {result.loss_before:.4f} → {result.loss_after:.4f}", highlight=False)
    if result.interrupted:
        err.print(f"[yellow]interrupted:[/yellow] the last good weights are saved as {escape(result.name)!r}; "
                  f"continue with the same command and --resume", highlight=False)
        raise typer.Exit(130)
    err.print(f"[green]saved adapted restorer {escape(result.name)!r}[/green]; use it with "
              f"'facefix restore {escape(str(folder))} --restorer {escape(result.name)}'", highlight=False)


@adapted_app.command("list")
def list_adapted(json_: JsonOpt = False) -> None:
    """List the adapted restorers: album, person, faces, loss before → after."""
    from facefix.errors import FacefixError
    from facefix.profiles.adapted import AdaptedStore

    store = AdaptedStore()
    rows = []
    for n in store.names():
        try:
            rows.append(store.info(n))
        except FacefixError as exc:
            rows.append({"name": n, "error": str(exc)})
    if json_:
        out.print_json(data=rows)
        return
    if not rows:
        err.print("no adapted restorers yet — make one with 'facefix adapt DIR'", highlight=False)
        return
    table = Table("Name", "Album", "Person", "Faces", "From", "Loss", "Created", box=None, pad_edge=False)
    for r in rows:
        if "error" in r:
            table.add_row(escape(r["name"]), "[red]unreadable[/red]", escape(r["error"]), "", "", "", "")
            continue
        loss = "-" if r["loss_before"] is None else f"{r['loss_before']:.4f} → {r['loss_after']:.4f}"
        table.add_row(escape(r["name"]), escape(str(r["album"])), escape(r["person"] or "all"), str(r["faces"]),
                      escape(str(r["started_from"])), loss, r["created"][:16].replace("T", " "))
    out.print(table)


@adapted_app.command("rm")
def rm_adapted(
    name: Annotated[str, typer.Argument(help="The adapted restorer to delete.", show_default=False)],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking.")] = False,
) -> None:
    """Delete an adapted restorer (cached pseudo-targets stay; 'facefix adapt' reuses them)."""
    from facefix.profiles.adapted import AdaptedStore

    store = AdaptedStore()
    info = store.info(name)
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"refusing to delete adapted restorer {name!r} without confirmation; pass --yes")
        if not typer.confirm(f"Delete adapted restorer {name!r} ({info['faces']} faces of {info['album']})?", err=True):
            err.print("nothing deleted", highlight=False)
            raise typer.Exit(1)
    store.remove(name)
    err.print(f"removed adapted restorer {escape(repr(name))}", highlight=False)
