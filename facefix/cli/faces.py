"""``facefix faces``: list the faces found in photos, for scripts and debugging."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from facefix.cli.common import BackendOpt, JsonOpt, out, report_error
from facefix.errors import FacefixError
from facefix.faces.inspect import draw_faces, find_faces


def faces_command(
    photos: Annotated[list[Path], typer.Argument(help="Photos to analyze.", show_default=False)],
    *,
    json_out: JsonOpt = False,
    draw: Annotated[
        Path | None,
        typer.Option("--draw", help="Write the photo with boxes and landmarks drawn (a PNG; "
                     "a folder when several photos are given)."),
    ] = None,
    backend: BackendOpt = "auto",
) -> None:
    """List every face found: box, score, five landmarks and the backend used."""
    records, failures = [], 0
    for photo in photos:
        try:
            result = find_faces(photo, backend=backend)
        except FacefixError as exc:
            failures += 1
            report_error(exc)
            continue
        records.append(result)
        if draw is not None:
            target = draw / f"{photo.stem}.faces.png" if len(photos) > 1 else draw
            draw_faces(result, target)
    if json_out:
        out.print_json(json.dumps(records if len(photos) > 1 else (records[0] if records else [])))
    else:
        table = Table("photo", "face", "box (x0, y0, x1, y1)", "score", "eye-mouth px", "backend")
        for rec in records:
            for i, face in enumerate(rec["faces"]):
                table.add_row(Path(rec["photo"]).name, str(i), ", ".join(f"{v:.0f}" for v in face["box"]),
                              f"{face['score']:.2f}", f"{face['eye_mouth_px']:.0f}", face["backend"])
            if not rec["faces"]:
                table.add_row(Path(rec["photo"]).name, "-", "no face found", "", "", rec["backend"])
        out.print(table)
    if failures:
        raise typer.Exit(1)
