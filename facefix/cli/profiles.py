"""``facefix profiles``: list, show, remove, rename and locate enrolled people."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from facefix.cli.common import JsonOpt, err, out
from facefix.errors import ProfileError, UsageError
from facefix.profiles import ProfileStore
from facefix.profiles.describe import profile_details, profile_summary

profiles_app = typer.Typer(
    help="List, inspect, rename and remove enrolled people.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="The enrolled person's name.", show_default=False)]


def _when(iso: str) -> str:
    return iso.replace("T", " ").replace("+00:00", " UTC")


@profiles_app.command("list")
def list_profiles(json_: JsonOpt = False) -> None:
    """List the enrolled people."""
    store = ProfileStore()
    rows: list[dict[str, Any]] = []
    for name in store.names():
        try:
            rows.append(profile_summary(store.load(name)))
        except ProfileError as exc:
            # One broken profile must not hide the others.
            rows.append({"name": name, "error": str(exc)})
    if json_:
        out.print_json(data=rows)
        return
    if not rows:
        err.print("no profiles yet — enroll someone with 'facefix enroll NAME DIR'", highlight=False)
        return
    table = Table("Name", "References", "Artifacts", "Updated", box=None, pad_edge=False)
    for row in rows:
        if "error" in row:
            table.add_row(escape(row["name"]), "[red]unreadable[/red]", escape(row["error"]), "")
        else:
            table.add_row(
                escape(row["name"]),
                str(row["references"]),
                escape(", ".join(row["artifacts"]) or "-"),
                _when(row["updated"]),
            )
    out.print(table)


@profiles_app.command("show")
def show(name: NameArg, json_: JsonOpt = False) -> None:
    """Show one person's references and trained artifacts."""
    data = profile_details(ProfileStore().load(name))
    if json_:
        out.print_json(data=data)
        return
    out.print(f"[bold]{escape(data['name'])}[/bold]  {escape(data['path'])}", highlight=False)
    out.print(
        f"created {_when(data['created'])}, updated {_when(data['updated'])}; "
        f"embeddings: {escape(', '.join(data['backends']) or 'none')}",
        highlight=False,
    )
    refs = Table("Id", "Source", "Box", "Added", title="References", title_justify="left", box=None)
    for r in data["references"]:
        box = ",".join(f"{v:g}" for v in r["box"])
        refs.add_row(r["id"], escape(r["source"]), box, _when(r["added"]))
    out.print(refs)
    arts = Table("Kind", "Size", "Created", "Settings", title="Artifacts", title_justify="left", box=None)
    for kind, a in data["artifacts"].items():
        size = "missing" if a["bytes"] is None else f"{a['bytes'] / 1e6:.1f} MB"
        # nested settings as compact JSON, not Python's repr of a dict
        settings = ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
                             for k, v in a["settings"].items())
        arts.add_row(escape(kind), size, _when(a["created"]), escape(settings))
    if data["artifacts"]:
        out.print(arts)
    else:
        out.print("no artifacts yet", highlight=False)


@profiles_app.command("rm")
def rm(
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking.")] = False,
) -> None:
    """Delete a person's profile and every model that learned from their photos (each listed with how to rebuild it)."""
    store = ProfileStore()
    profile = store.load(name)
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(
                f"refusing to delete profile {profile.name!r} without confirmation; "
                "pass --yes to delete it non-interactively"
            )
        what = f"{len(profile.references)} references, {len(profile.artifacts)} artifacts"
        if not typer.confirm(f"Delete profile {profile.name!r} ({what})?", err=True):
            err.print("nothing deleted", highlight=False)
            raise typer.Exit(1)
    from facefix.enroll.forget import remove_person

    removal = remove_person(profile.name, store=store)
    err.print(f"removed profile {escape(repr(profile.name))}", highlight=False)
    for f in removal.forgotten:
        err.print(f"{escape(f.what)}: removed, {escape(f.reason)}; {escape(f.rebuild)}", highlight=False)
    for what, why in removal.unchecked:
        err.print(f"[yellow]could not check {escape(what)}[/yellow] ({escape(why)}); kept", highlight=False)


@profiles_app.command("rename")
def rename(
    old: Annotated[str, typer.Argument(help="Current name.", show_default=False)],
    new: Annotated[str, typer.Argument(help="New name.", show_default=False)],
) -> None:
    """Rename a person's profile."""
    ProfileStore().rename(old, new)
    err.print(f"renamed {escape(repr(old))} to {escape(repr(new))}", highlight=False)


@profiles_app.command("path")
def path(
    name: Annotated[
        str | None, typer.Argument(help="A person (default: the folder of all profiles).", show_default=False)
    ] = None,
) -> None:
    """Print where profiles are stored, or one person's folder."""
    # Plain print: a path must survive piping without wrapping or markup.
    print(ProfileStore().path(name))
