"""What every command shares: consoles, logging set-up, option aliases."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

#: Data (JSON, tables meant to be piped) goes to stdout ...
out = Console(soft_wrap=True)
#: ... progress, logs and errors go to stderr.
err = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
PersonOpt = Annotated[
    str,
    typer.Option("--person", "-p", help="Enrolled person to use, or 'auto' to match each face."),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Directory for the outputs (default: beside each input)."),
]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="Torch device: auto, cpu, cuda, cuda:1, mps.")
]


def setup_logging(verbose: bool = False) -> None:
    """Send the ``facefix`` logger to stderr through rich; nothing else is touched."""
    from rich.logging import RichHandler

    logger = logging.getLogger("facefix")
    logger.handlers.clear()
    handler = RichHandler(console=err, show_path=False, show_time=False, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
