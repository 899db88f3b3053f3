"""``facefix models``: list, pull, locate and verify the diffusion model sets."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from facefix.cli.common import JsonOpt, err, out

models_app = typer.Typer(
    help="List, download, locate and check the diffusion model sets.",
    no_args_is_help=True,
)

SetArg = Annotated[str | None, typer.Argument(
    help="A registered model set (see `facefix models list`) or a local model-set directory; "
         "default: FACEFIX_MODEL_SET or sd15-tile.", show_default=False)]
BaseOpt = Annotated[str | None, typer.Option(
    "--base", help="Base model instead of the set's: a hub id, a local directory or an SD 1.x single file.")]
GuideOpt = Annotated[str | None, typer.Option(
    "--guide", help="Guide (ControlNet) instead of the set's: a hub id, a local directory or a single file.")]


def _resolve(name, base, guide):
    from facefix.modelsets.registry import resolve_model_set

    return resolve_model_set(name, base=base, guide=guide)


@models_app.command("list")
def list_sets(json_: JsonOpt = False) -> None:
    """List the registered model sets and whether their weights are here."""
    from facefix.modelsets.hub import listed_model_sets
    from facefix.modelsets.registry import DEFAULT_MODEL_SET

    rows = listed_model_sets()
    if json_:
        out.print_json(data=rows)
        return
    table = Table("name", "base", "guide", "download", "here", "licence", title=f"model sets (default {DEFAULT_MODEL_SET})")
    for row in rows:
        table.add_row(
            escape(row["name"]) + (" *" if row["default"] else ""),
            escape(row["base"]),
            escape(row["guide"]),
            f"{row['download_mb'] / 1000:.1f} GB" if row["download_mb"] else "-",
            "yes" if row["available"] else "no",
            escape(row["license"] or "-"),
        )
    out.print(table)


@models_app.command("pull")
def pull_set(
    name: SetArg = None,
    *,
    base: BaseOpt = None,
    guide: GuideOpt = None,
    token: Annotated[str | None, typer.Option("--token", help="Hub token for gated repositories.")] = None,
) -> None:
    """Download a model set into the Hugging Face cache (with progress) and check its hashes."""
    from facefix.modelsets.hub import pull
    from facefix.modelsets.verify import verify

    model_set = _resolve(name, base, guide)
    err.print(f"pulling model set [bold]{escape(model_set.name)}[/bold] ({model_set.license or 'see its model card'})")
    paths = pull(model_set, token=token)
    # The same token: a gated repository's hashes are as private as its files.
    report = verify(model_set, token=token)
    bad = [c for c in report.checks if not c.ok]
    if bad or report.problems:
        for check in bad:
            err.print(f"[red]hash mismatch:[/red] {escape(check.path)}")
        raise typer.Exit(1)
    out.print(str(paths.base_dir))
    out.print(str(paths.guide_dir))
    if base or guide:  # a set of the user's own making: usable by name from now on
        from facefix.modelsets.registry import add_model_set

        add_model_set(model_set.name, base=model_set.base, guide=model_set.guide, variant=model_set.variant,
                      condition=model_set.condition)
        err.print(f"saved as model set {escape(model_set.name)}: use --model-set {escape(model_set.name)}")


@models_app.command("add")
def add_set(
    name: Annotated[str, typer.Argument(help="A name for the set, e.g. my-sd15.", show_default=False)],
    *,
    base: Annotated[str, typer.Option("--base", help="Base model: a hub id, a local diffusers pipeline folder, or an "
                                      "SD 1.x single file (v1-5-pruned-emaonly.safetensors, .ckpt).")],
    guide: Annotated[str | None, typer.Option("--guide", help="Guide (ControlNet): a hub id, a local folder, or a single "
                                              "file (control_v11f1e_sd15_tile.pth, .safetensors); default: the "
                                              "default set's (lllyasviel/control_v11f1e_sd15_tile).",
                                              show_default=False)] = None,
    variant: Annotated[str, typer.Option("--variant", help="Weight variant of the base's files: 'auto' (fp16 for a "
                                         "hub base, its fp32 files where the repository has no fp16 ones; a local "
                                         "base as it is), 'none' (fp32), or one the repository names (fp16).")] = "auto",
) -> None:
    """Name a model set (a base and a guide) so that --model-set NAME finds it; hub ids are fetched by 'models pull NAME'."""
    from facefix.modelsets.hub import is_available
    from facefix.modelsets.registry import add_model_set

    model_set = add_model_set(name, base=base, guide=guide, variant=None if variant.lower() == "none" else variant)
    here = "its weights are here" if is_available(model_set) else f"fetch it with `{model_set.pull_command}`"
    err.print(f"added model set {escape(name)} ({escape(model_set.base)} + {escape(model_set.guide)}); {here}",
              highlight=False)


@models_app.command("path")
def path_set(name: SetArg = None, *, base: BaseOpt = None, guide: GuideOpt = None, json_: JsonOpt = False) -> None:
    """Print where a model set's base and guide are (no network)."""
    from facefix.modelsets.hub import locate

    paths = locate(_resolve(name, base, guide))
    if json_:
        out.print_json(data={"model_set": paths.model_set.name, "base": str(paths.base_dir),
                             "guide": str(paths.guide_dir), "base_revision": paths.base_revision,
                             "guide_revision": paths.guide_revision})
        return
    out.print(str(paths.base_dir), highlight=False)
    out.print(str(paths.guide_dir), highlight=False)


@models_app.command("verify")
def verify_set(
    name: SetArg = None,
    *,
    base: BaseOpt = None,
    guide: GuideOpt = None,
    offline_: Annotated[
        bool, typer.Option("--offline", help="Check against the recorded manifest and cache, not the hub.")
    ] = False,
    token: Annotated[str | None, typer.Option("--token", help="Hub token for gated repositories.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Check a model set's files and their hashes (the hub's, or the manifest recorded at pull)."""
    from facefix.errors import ModelError
    from facefix.modelsets.verify import verify

    model_set = _resolve(name, base, guide)
    report = verify(model_set, online=False if offline_ else None, token=token)
    if json_:
        out.print_json(data={"model_set": report.model_set, "ok": report.ok, "problems": list(report.problems),
                             "files": [c.__dict__ for c in report.checks]})
    else:
        for check in report.checks:
            mark = "[green]ok[/green]" if check.ok else "[red]BAD[/red]"
            detail = "" if check.ok else f" (expected {escape(check.expected)}, found {escape(check.actual)})"
            out.print(f"{mark} {escape(check.path)} [dim]{check.source}[/dim]{detail}")
    if report.problems:
        raise ModelError(report.problems[0])
    if not report.ok:
        bad = sum(not c.ok for c in report.checks)
        raise ModelError(f"model set {model_set.name!r}: {bad} file(s) do not match their hashes; "
                         f"fetch them again with `{model_set.pull_command}`")
