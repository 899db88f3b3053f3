"""What every command shares: consoles, logging set-up, option aliases."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from facefix.restore.report import printable

#: Data (JSON, tables meant to be piped) goes to stdout ...
out = Console(soft_wrap=True)
#: ... progress, logs and errors go to stderr.
err = Console(stderr=True, soft_wrap=True)

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
BackendOpt = Annotated[
    str, typer.Option("--backend", help="Face backend: auto (insightface if its models are on disk, else dlib), insightface, dlib.")
]


_CONTROL = {i: f"\\x{i:02x}" for i in range(32)} | {0x7f: "\\x7f", 0x0a: "\\n", 0x0d: "\\r", 0x09: "\\t"}


def shown(name: object) -> str:
    """A file name (or a message holding one) safe to print with rich: its
    markup printed literally (``[rich]a.jpg`` is a legal name), control
    characters escaped (a newline in a name must not start a new line), and
    non-UTF-8 bytes shown as ``\\xNN`` (a surrogate-escaped byte cannot be
    written to a UTF-8 stream)."""
    return escape(printable(str(name)).translate(_CONTROL))


def debug_enabled() -> bool:
    """``FACEFIX_DEBUG=1``: show tracebacks instead of one-line errors."""
    import os

    return os.environ.get("FACEFIX_DEBUG", "").strip() not in {"", "0", "false", "no"}


def report_error(exc: Exception) -> None:
    """Print one red line for a failure a batch goes on past (re-raise when debugging)."""
    if debug_enabled():
        raise exc
    err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
