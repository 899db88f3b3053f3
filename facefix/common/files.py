"""Content hashes: of files (read in chunks, so a 50 MP scan is never held twice) and of JSON-able settings."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def file_sha256(path: Path | str) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def stable_json(value: Any, *, compact: bool = False) -> bytes:
    """The same bytes for equal settings: keys sorted, anything not JSON written as ``str``."""
    separators = (",", ":") if compact else None
    return json.dumps(value, sort_keys=True, default=str, separators=separators).encode()


def json_key(value: Any, length: int = 32, *, compact: bool = False) -> str:
    """A short stable hash (hex sha256 prefix) of JSON-able settings: cache names, settings keys."""
    return hashlib.sha256(stable_json(value, compact=compact)).hexdigest()[:length]
