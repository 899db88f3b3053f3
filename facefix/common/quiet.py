"""Keep decoders' chatter off the console: what they print while one file is read or written becomes one debug line naming that file.

Three kinds of chatter, each caught where it is made, inside :func:`quiet_decoders`:

* Python warnings (Pillow's "Truncated File Read", "Corrupt EXIF data", ...),
  which would print with the library's source path.
* Records of the decoders' own Python loggers (tifffile, Pillow, pillow_heif),
  which Python's last-resort handler prints when the application configured none.
* What C libraries write to file descriptor 2 (libtiff's errors inside Pillow,
  which silences only its warnings; libpng's warnings inside OpenCV; libjpeg's
  notes inside Pillow's encoder; OpenCV's logger; libheif), caught by
  :func:`c_output_caught` around the C calls only: fd 2 is pointed at a
  temporary file for the call and read back. None of these libraries has a
  switch reachable from Python that keeps the text (OpenCV's ``setLogLevel``
  would drop it, process-wide, and does not reach libpng). A temporary file,
  not a pipe: a pipe needs a reader thread, or a decoder writing more than the
  pipe holds blocks. The window holds C calls only, so facefix's own log lines
  (a handler may hold a stream on fd 2) are never in it.

Threads: fd 2, ``sys.stderr`` and the warnings filters are process-wide, so one
capture runs at a time (a lock, held for the file; a nested capture in the same
thread is part of the outer one). While fd 2 is redirected, ``sys.stderr`` is a
second descriptor on the real stderr, so what Python code in any thread prints
through ``sys.stderr`` (the progress bar, rich log lines, errors) still reaches
the console. What C code in *another* thread writes to fd 2 in that window
(rare: torch or OpenCV in a restore thread), and Python warnings raised in
another thread while a file is read, land in this file's debug line instead of
the console: misattributed, not lost.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import tempfile
import threading
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

#: The Python loggers of the decoders facefix calls, whose warnings and errors are caught.
DECODER_LOGGERS = ("PIL", "tifffile", "pillow_heif")

_LOCK = threading.Lock()


class _State(threading.local):
    said: list[str] | None = None  # what the current thread's capture caught so far


_STATE = _State()


@contextmanager
def quiet_decoders(name: object) -> Iterator[None]:
    """Run the body with decoders' console output caught and logged at debug level.

    Whatever was caught (Python warnings, the decoder loggers' records, and the
    C libraries' lines of each :func:`c_output_caught` window in the body) is
    logged as one ``DEBUG`` line on this module's logger,
    ``"<name>: decoders said: ..."``, repeated lines counted; nothing reaches
    the console. The body's exceptions pass through unchanged (the line is
    logged first).

    Args:
        name: what is being decoded (a path), named in the log line.
    """
    if _STATE.said is not None:  # nested: the outer capture takes it all
        yield
        return
    with _LOCK:
        said: list[str] = []
        _STATE.said = said
        try:
            with _warnings_caught(said), _loggers_caught(said):
                yield
        finally:
            _STATE.said = None
            if said:
                logger.debug("%s: decoders said: %s", _printable(name), _summary(said))


@contextmanager
def c_output_caught() -> Iterator[None]:
    """Catch what C code writes to file descriptor 2 during the body, for the enclosing :func:`quiet_decoders`.

    Put it around calls into C decoders and encoders only (no logging of
    facefix's own inside: a log handler holding a stream on fd 2 would be caught too).

    Raises:
        RuntimeError: not inside :func:`quiet_decoders` in this thread (a
            window outside the lock would race another thread's).
    """
    said = _STATE.said
    if said is None:
        raise RuntimeError("c_output_caught() is used inside quiet_decoders() only")
    with _fd2_caught(said):
        yield


def _printable(name: object) -> str:
    # A non-UTF-8 file name (surrogate-escaped) must not break a UTF-8 log stream.
    return str(name).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _summary(said: list[str]) -> str:
    counts = Counter(said)
    return " | ".join(line if counts[line] == 1 else f"{line} (×{counts[line]})"
                      for line in dict.fromkeys(said))


@contextmanager
def _warnings_caught(said: list[str]) -> Iterator[None]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every file's own warnings, not the first file's only
        try:
            yield
        finally:
            said.extend(f"{w.category.__name__}: {w.message}" for w in caught)


class _Collector(logging.Handler):
    def __init__(self, said: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.said = said

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.said.append(f"{record.name}: {record.getMessage()}")
        except Exception:  # a record with bad arguments: logging's own report, as every handler
            self.handleError(record)


@contextmanager
def _loggers_caught(said: list[str]) -> Iterator[None]:
    # A handler on the decoder's logger means Python's last-resort handler (stderr)
    # is not used; handlers the application put on the root logger still get the record.
    collector = _Collector(said)
    loggers = [logging.getLogger(n) for n in DECODER_LOGGERS]
    for each in loggers:
        each.addHandler(collector)
    try:
        yield
    finally:
        for each in loggers:
            each.removeHandler(collector)


def _on_fd2(stream: object) -> bool:
    """Whether ``stream`` (``sys.stderr``) writes to file descriptor 2."""
    if stream is None:
        return False
    try:
        return stream.fileno() == 2
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return False  # no descriptor (StringIO, a test's capture) or closed: not fd 2


@contextmanager
def _fd2_caught(said: list[str]) -> Iterator[None]:
    try:
        console = os.dup(2)
    except OSError:  # fd 2 is closed: nothing C writes there can reach a console
        yield
        return
    python_stderr = sys.stderr
    moved = None
    if _on_fd2(python_stderr):
        # Python's writes (any thread) keep going to the real stderr through a second descriptor.
        moved = open(os.dup(console), "w", buffering=1,  # noqa: SIM115 (closed below)
                     encoding=python_stderr.encoding, errors=python_stderr.errors)
        sys.stderr = moved
        python_stderr.flush()
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(console, 2)
                sink.seek(0)
                text = sink.read().decode("utf-8", "replace")
                said.extend(line.strip() for line in text.splitlines() if line.strip())
    finally:
        os.close(console)
        if moved is not None:
            if sys.stderr is moved:
                sys.stderr = python_stderr
            moved.close()
