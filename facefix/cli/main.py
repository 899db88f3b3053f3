"""The ``facefix`` command: wires the sub-commands and handles errors in one place."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.markup import escape

from facefix import __version__
from facefix.cli.common import ConventionalHelpGroup, debug_enabled, err, setup_logging
from facefix.errors import FacefixError

# Set before torch loads OpenMP: a passive wait keeps a busy machine (a batch
# sharing its cores with anything else) from collapsing into spin-waits.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

def _version(value: bool) -> None:
    if value:
        print(f"facefix {__version__}")
        raise typer.Exit()


def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more detail.")] = False,
) -> None:
    setup_logging(verbose)


def build_app() -> typer.Typer:
    """The ``facefix`` command with every sub-command (importing the command modules here keeps ``--version`` light)."""
    from facefix.cli import (
        adapt,
        doctor,
        enroll,
        evaluate,
        faces,
        learn,
        models,
        profiles,
        restore,
        review,
    )

    app = typer.Typer(
        name="facefix",
        help="Restore the faces in your photos with a restorer that knows each person.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        # Help as conventional CLIs print it (flags without a type, "-p, --person TEXT"),
        # not Typer's rich panels, with the value and argument names of conventional_help.
        rich_markup_mode=None,
        cls=ConventionalHelpGroup,
    )
    app.callback()(_root)
    app.command("doctor")(doctor.doctor_command)
    app.command("faces")(faces.faces_command)
    app.command("restore")(restore.restore_command)
    app.command("review")(review.review_command)
    app.command("enroll")(enroll.enroll_command)
    app.command("eval")(evaluate.eval_command)
    app.command("adapt")(adapt.adapt_command)
    app.command("learn")(learn.learn_command)
    app.add_typer(profiles.profiles_app, name="profiles")
    app.add_typer(models.models_app, name="models")
    app.add_typer(adapt.adapted_app, name="adapted")
    return app


def main(argv: list[str] | None = None, *, app: typer.Typer | None = None) -> int:
    """Entry point of the console script; returns the exit status.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).
        app: the command to run (default :func:`build_app`'s; tests pass a smaller one).
    """
    app = app if app is not None else build_app()
    try:
        # Typer/click handle usage errors (exit 2), --help and Ctrl-C themselves.
        app(args=argv, prog_name="facefix")
    except FacefixError as exc:
        if debug_enabled():
            raise
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        return exc.exit_code
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
