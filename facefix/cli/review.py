"""``facefix review``: write a page in a run's output folder to flip through before/after.

Parses, calls :func:`facefix.review.write_review`, prints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from facefix.cli.common import JsonOpt, err, make_progress, out, shown
from facefix.review import write_review


def review_command(
    out_dir: Annotated[Path, typer.Argument(
        metavar="OUT", help="The folder a run wrote into ('facefix restore ... -o OUT').", show_default=False)],
    *,
    report: Annotated[Path | None, typer.Option(
        "--report", help="Take the photos and faces from this 'facefix restore --report' file "
                         "(default: OUT's review manifest, else its run record).")] = None,
    size: Annotated[int, typer.Option(help="Long side of the whole-photo images, in pixels.")] = 640,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary; errors only.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Write OUT/facefix-review.html: a before/after card per photo, with its faces zoomed.

    The page works from the file system (no server, no network): open it in a
    browser. Its images are made once into OUT/.facefix-review/ and reused by
    later reviews; the originals are only read.
    """
    progress = make_progress(disable=quiet or json_out)
    task = progress.add_task("review images", total=None)
    with progress:
        result = write_review(out_dir, report=report, size=size,
                              on_start=lambda n: progress.update(task, total=n),
                              on_photo=lambda: progress.update(task, advance=1))
    if json_out:
        out.print(json.dumps({"page": str(result.page), "photos": result.photos, "source": result.source,
                              "data": str(result.data_path), "thumbs_made": result.thumbs.made,
                              "thumbs_reused": result.thumbs.reused, "thumbs_removed": result.thumbs.removed,
                              "notes": list(result.notes)}, ensure_ascii=True),
                  markup=False, highlight=False, soft_wrap=True)
        return
    if quiet:
        return
    for note in result.notes:
        err.print(f"[yellow]note:[/yellow] {shown(note)}", highlight=False)
    stats = result.thumbs
    err.print(f"{result.photos} photo(s) from the {result.source} {shown(result.data_path)}; images: "
              f"{stats.made} made, {stats.reused} reused", highlight=False)
    out.print(f"wrote {shown(result.page)}", highlight=False)
    out.print(f"open it in a browser: {result.page.resolve().as_uri()}", markup=False, highlight=False)
