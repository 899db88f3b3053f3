"""Atomic file output: a temp file beside the destination, fsync, then rename.

A reader of the destination sees either the old file or the complete new one,
never a half-written file, even if the process is killed mid-write. Reusable
by any module that writes user files (photos, reports, manifests).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _read_umask() -> int:
    # os.umask can only be read by setting it; do it once, at import, before
    # any worker threads exist.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _fsync_path(path: Path, *, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:  # Windows cannot open a directory; the rename is still atomic
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: Path | str) -> Iterator[Path]:
    """Yield a temp path to write; on success it atomically becomes ``path``.

    The temp file lives in the destination directory (a rename across file
    systems would not be atomic) under a hidden ``.<name>.*.part`` name that no
    photo scanner picks up. On success it is fsynced, given the permissions a
    normal new file would get (or the replaced file's), and renamed over
    ``path``; on any exception, including ``KeyboardInterrupt``, it is removed
    and the exception propagates. Missing parent directories are created.

    Args:
        path: the final destination.

    Yields:
        The temp file's path (the file exists, empty); write to it by name.

    Raises:
        OSError: the directory cannot be created or written; callers wrap it in
            their own :class:`~facefix.errors.FacefixError`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync_path(tmp)
        # mkstemp creates 0600; a photo should get the user's usual permissions.
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~_UMASK
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_path(path.parent, directory=True)


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`).

    Args:
        path: the destination file.
        data: the complete contents.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return path
