"""Every command's --help reads like a conventional CLI's: flags with no type, click's value names, ``NAME...`` arguments.

Typer draws arguments as ``{NAME}...`` with a ``<list[Path]>`` type and has no
setting for it; facefix.cli.common.conventional_help changes that. These tests pin
the text, so a Typer release that draws help another way fails here.
"""

from __future__ import annotations

import re

import pytest
import typer.main
from clirun import facefix
from typer.core import TyperGroup

from facefix.cli.main import build_app


def _help(*command: str) -> str:
    result = facefix(*command, "--help")
    assert result.returncode == 0, result.stderr
    return result.stdout


def _commands(group=None, path=()):
    group = group or typer.main.get_command(build_app())
    for name, command in sorted(group.commands.items()):
        yield (*path, name)
        if isinstance(command, TyperGroup):
            yield from _commands(command, (*path, name))


def test_restore_help_is_conventional():
    text = _help("restore")
    assert text.splitlines()[0] == "Usage: facefix restore [OPTIONS] PHOTO_OR_FOLDER..."
    assert re.search(r"^  PHOTO_OR_FOLDER\.\.\.  Photos or folders of photos\.", text, re.M)
    assert re.search(r"^  -r, --recursive +Descend into subfolders\.", text, re.M)  # a flag: no type
    assert re.search(r"^  --aligned / --no-aligned +Inputs are already aligned", text, re.M)
    assert re.search(r"^  -p, --person TEXT +Enrolled person", text, re.M)
    assert re.search(r"^  --upscale INTEGER +Enlarge", text, re.M)
    assert re.search(r"^  --strength FLOAT +1 = fully restored", text, re.M)
    assert re.search(r"^  -o, --output PATH +Directory for the outputs", text, re.M)
    assert re.search(r"^  --ext \[same\|jpg\|png\] +Output format", text, re.M)
    assert re.search(r"^  --include GLOB +Only photos", text, re.M)  # a declared metavar is kept
    assert '"facefix[cluster]"' in text  # help text printed as written: no markup, no escapes


def test_enroll_help_is_conventional():
    text = _help("enroll")
    assert text.splitlines()[0] == "Usage: facefix enroll [OPTIONS] NAME [FOLDER]"
    assert re.search(r"^  NAME +The person's name", text, re.M)
    assert re.search(r"^  --no-train +Only store the references\.", text, re.M)
    assert re.search(r"^  --budget FLOAT +Training time", text, re.M)


@pytest.mark.parametrize("command", [(), *_commands()], ids=lambda c: " ".join(c) or "facefix")
def test_no_typer_type_labels_in_any_help(command):
    text = _help(*command)
    usage = text.splitlines()[0]
    assert usage.startswith("Usage: facefix") and "{" not in usage
    assert not re.search(r"<(bool|int|float|str|path|list\[)", text), text


def test_missing_argument_is_named_as_in_the_help():
    result = facefix("restore")
    assert result.returncode == 2
    assert "Usage: facefix restore [OPTIONS] PHOTO_OR_FOLDER..." in result.stderr
    assert "Missing argument 'PHOTO_OR_FOLDER...'" in result.stderr
