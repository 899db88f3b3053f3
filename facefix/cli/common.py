"""What every command shares: consoles, logging set-up, option aliases."""

from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path
from typing import Annotated, Literal, get_args

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperArgument, TyperGroup, TyperOption

from facefix.common.paths import debug_enabled
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
    # Libraries' Python warnings (a decoder's, a deprecation) with their source
    # paths would flood stderr over a folder run: they go to the log, shown with -v.
    logging.captureWarnings(True)
    warnings_logger = logging.getLogger("py.warnings")
    warnings_logger.handlers.clear()
    warnings_logger.addHandler(handler)
    warnings_logger.setLevel(logging.DEBUG if verbose else logging.ERROR)
    warnings_logger.propagate = False
BackendOpt = Annotated[
    Literal["auto", "insightface", "dlib"],
    typer.Option("--backend", help="Face backend: auto (insightface if its models are on disk, else dlib), insightface, dlib."),
]
#: The restorer engines (validated by the core too, for API callers).
Engine = Literal["auto", "fast", "diffusion"]


_CONTROL = {i: f"\\x{i:02x}" for i in range(32)} | {0x7f: "\\x7f", 0x0a: "\\n", 0x0d: "\\r", 0x09: "\\t"}


def shown(name: object) -> str:
    """A file name (or a message holding one) safe to print with rich: its
    markup printed literally (``[rich]a.jpg`` is a legal name), control
    characters escaped (a newline in a name must not start a new line), and
    non-UTF-8 bytes shown as ``\\xNN`` (a surrogate-escaped byte cannot be
    written to a UTF-8 stream)."""
    return escape(printable(str(name)).translate(_CONTROL))


def report_error(exc: Exception) -> None:
    """Print one red line for a failure a batch goes on past (re-raise when debugging)."""
    if debug_enabled():
        raise exc
    err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)


def make_progress(*fields: str, count: bool = True, transient: bool = True, disable: bool = False):
    """The one progress bar every command shows on stderr: description, bar, ``done/total``, the given
    text fields (rich format strings, e.g. ``"loss {task.fields[loss]}"``), elapsed and remaining time."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("{task.description}"), BarColumn()]
    if count:
        columns.append(MofNCompleteColumn())
    columns += [TextColumn(f) for f in fields]
    columns += [TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    return Progress(*columns, console=err, transient=transient, disable=disable)


class _NamedArgument(TyperArgument):
    """An argument shown as conventional CLIs show one: its name (``PHOTO_OR_FOLDER...``), no type."""

    def display_type_rich(self, ctx: typer.Context) -> str | None:
        return None  # Typer's own would add "<list[Path]>" beside the name

    def get_usage_pieces(self, ctx: typer.Context) -> list[str]:
        return [self.metavar if self.required else f"[{self.metavar}]"]  # Typer's: "{NAME}..."


#: Value names of the types the commands take, as click names them.
_VALUE_NAMES = {int: "INTEGER", float: "FLOAT", str: "TEXT", Path: "PATH"}


def _value_name(option: TyperOption) -> str:
    kind = option.type_descriptor
    if kind.is_choice:
        return "[" + "|".join(str(c.value if isinstance(c, Enum) else c) for c in kind.choices or ()) + "]"
    if kind.is_path:
        return "PATH"
    annotation = get_args(kind.annotation)[0] if kind.is_list else kind.annotation
    return _VALUE_NAMES.get(annotation, str(annotation).upper())


def conventional_help(command: typer.core.TyperCommand | TyperGroup) -> None:
    """Make ``command``'s help (and its sub-commands') read as a conventional CLI's.

    With ``rich_markup_mode=None`` (see :func:`facefix.cli.main.build_app`) Typer
    already shows flags without a type; this names each option's value as click
    does (``INTEGER``, ``FLOAT``, ``PATH``, ``TEXT``, ``[same|jpg|png]``) where
    the declaration gave no ``metavar``, and shows arguments by their name alone,
    ``...`` after a variadic one (``PHOTO_OR_FOLDER...``), in the list and in the
    usage line. Typer has no setting for the arguments: their class is changed to
    a subclass overriding the two methods that draw them (tests/test_cli_help.py
    pins the result, so a Typer release that draws them otherwise fails there).
    """
    for param in command.params:
        if isinstance(param, TyperArgument):
            name = param.metavar or param.name.upper()
            param.metavar = name + ("..." if param.nargs != 1 and not name.endswith("...") else "")
            param.__class__ = _NamedArgument
        elif isinstance(param, TyperOption) and param.metavar is None and not (param.is_flag or param.count):
            param.metavar = _value_name(param)
    if isinstance(command, TyperGroup):
        for sub in command.commands.values():
            conventional_help(sub)


class ConventionalHelpGroup(TyperGroup):
    """The ``facefix`` group: its commands' help made conventional (:func:`conventional_help`) once, when built."""

    def __init__(self, **attrs) -> None:
        super().__init__(**attrs)
        conventional_help(self)
