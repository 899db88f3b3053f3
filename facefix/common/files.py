"""Content hashes of files, read in chunks (a 50 MP scan is never held twice)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path | str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
