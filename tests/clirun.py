"""The one way tests run the ``facefix`` command: in this process, or (where the process matters) as one.

:func:`facefix` calls the console script's own function, ``facefix.cli.main.main(argv)``,
in this interpreter: no new interpreter and no second torch import, so a run
costs what the command costs. It behaves as the real process would for what the
tests look at:

* the environment is the test's plus ``FACEFIX_HOME``/offline/``COLUMNS`` and any
  extra variables, set for the run only and put back exactly afterwards;
* stdout and stderr are separate UTF-8 streams with strict errors, like the pipes
  of a subprocess (a surrogate-escaped file name that reached the console would
  fail here as it fails there), decoded with universal newlines as
  ``subprocess.run(text=True)`` decodes them;
* the rich consoles of ``facefix.cli.common`` write to ``sys.stdout``/``sys.stderr``
  at print time (``Console(file=None)``), so they land in these streams; their
  width is pinned to ``COLUMNS`` for the run as a fresh process would read it;
* stdin is empty and not a terminal;
* an exception that escapes ``main`` is printed as the interpreter prints it, exit
  status 1 (``FACEFIX_DEBUG=1`` shows a traceback);
* what ``main`` changes in this process for the next command (the ``facefix``
  logger's handlers, level and propagation; the consoles) is put back.

:func:`facefix_process` runs ``python -m facefix`` for the few tests where the
process itself is the subject (exit status of the real entry point, SIGKILL,
``python -m``, what reaches the two file descriptors).
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

#: As every CLI test ran: wide enough that rich wraps no line a test reads.
COLUMNS = "250"


@dataclass
class Result:
    """What a finished command left: its exit status and its two streams (as ``CompletedProcess``)."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def _environment(home: Path | None, env: Mapping[str, str | None] | None) -> dict[str, str | None]:
    """The variables a run sets (``None``: unset), on top of the test's environment."""
    wanted: dict[str, str | None] = {"FACEFIX_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": COLUMNS}
    if home is not None:
        wanted["FACEFIX_HOME"] = str(home)
    wanted.update(env or {})
    return wanted


@contextmanager
def using_env(changes: Mapping[str, str | None]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in changes}
    try:
        for key, value in changes.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _pipe() -> io.TextIOWrapper:
    """A text stream like a subprocess's stdout pipe: UTF-8, strict, not a terminal."""
    return io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", write_through=True)


def _read(stream: io.TextIOWrapper) -> str:
    stream.flush()
    data = stream.buffer.getvalue()
    # as subprocess.run(text=True) reads a pipe: universal newlines
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="strict", newline=None).read()


@contextmanager
def _cli_state() -> Iterator[None]:
    """Put back what a command changes in this process: the ``facefix`` logger and the consoles."""
    from facefix.cli import common

    logger = logging.getLogger("facefix")
    saved_logger = (list(logger.handlers), logger.level, logger.propagate, logger.disabled)
    consoles = [common.out, common.err]
    saved_consoles = [(c, c._file, c._width) for c in consoles]
    columns = os.environ.get("COLUMNS", "")
    for console in consoles:
        # A fresh process reads COLUMNS when it creates its consoles; these were
        # created at this process's first import, with whatever COLUMNS it had.
        console._file = None
        console._width = int(columns) if columns.isdigit() else None
    try:
        yield
    finally:
        logger.handlers[:] = saved_logger[0]
        logger.setLevel(saved_logger[1])
        logger.propagate, logger.disabled = saved_logger[2], saved_logger[3]
        for console, file, width in saved_consoles:
            console._file, console._width = file, width


def facefix(*args: object, home: Path | None = None, env: Mapping[str, str | None] | None = None,
            stdin: str = "", check: bool = False) -> Result:
    """Run ``facefix ARGS`` in this process, as the console script runs it; returns its status and output.

    Args:
        args: the command line (paths and numbers are turned into strings).
        home: ``FACEFIX_HOME`` for the run (default: the test's, see conftest.py).
        env: more variables for the run; ``None`` as a value unsets one.
        stdin: what the command reads on stdin.
        check: assert the exit status is 0 (showing stderr if not).
    """
    from facefix.cli.main import main

    argv = [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in args]
    stdout, stderr = _pipe(), _pipe()
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    with using_env(_environment(home, env)), _cli_state():
        sys.stdin, sys.stdout, sys.stderr = io.StringIO(stdin), stdout, stderr
        try:
            code = main(argv)
        except Exception:  # noqa: BLE001 - what the interpreter does with an uncaught exception
            traceback.print_exc(file=stderr)
            code = 1
        finally:
            sys.stdin, sys.stdout, sys.stderr = saved_streams
    result = Result(["facefix", *argv], code, _read(stdout), _read(stderr))
    if check:
        assert result.returncode == 0, result.stderr
    return result


def facefix_process(*args: object, home: Path | None = None, env: Mapping[str, str | None] | None = None,
                    timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m facefix ARGS`` as a real process (a new interpreter), with the same environment as :func:`facefix`."""
    full = dict(os.environ)
    for key, value in _environment(home, env).items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    return subprocess.run([sys.executable, "-m", "facefix", *map(str, args)], capture_output=True, text=True,
                          env=full, timeout=timeout)
