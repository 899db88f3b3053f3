"""What the workers need of this machine's data folder, packed once on the driver and unpacked once per node.

A worker must restore with exactly the models the driver's settings key names,
without reading the user's data folder (another machine may not see it, and
several hundred workers should not all read it). The driver packs the
profiles (embeddings, reference crops, trained weights), the generic model,
the adapted restorer the run uses and the registered local model sets into one
tar (a few MB per person: training scratch under ``work/``, locks and temp files
stay out) and puts it in Ray's object store once; each node receives it once.
A worker unpacks it, once per node, into a read-only folder named by its hash,
and points its own ``FACEFIX_HOME`` at a private home whose ``data`` is that
folder and whose ``cache`` is the node's own cache (analyzer models, converted
weights: downloaded once per node, as on one host). Base diffusion weights are
not shipped: they stay in each node's Hugging Face cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from facefix.common import paths
from facefix.profiles import GenericStore, ProfileStore
from facefix.profiles.adapted import AdaptedStore


def _wanted(rel: Path) -> bool:
    """A file the workers need: not training scratch, a lock or a temp/hidden file."""
    return not any(part.startswith(".") or part == "work" for part in rel.parts)


def pack(store: ProfileStore, generic: GenericStore, restorer: str | None) -> bytes:
    """The data folder's parts a restore run reads, as an uncompressed tar (its members sorted)."""
    parts = {"profiles": store.root, "generic": generic.root, "model-sets": paths.data_dir() / "model-sets"}
    if restorer is not None:
        parts[f"adapted/{restorer}"] = AdaptedStore().root / restorer
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, root in sorted(parts.items()):
            if not root.is_dir():
                continue
            for path in sorted(root.rglob("*")):
                rel = path.relative_to(root)
                if path.is_file() and not path.is_symlink() and _wanted(rel):
                    tar.add(path, arcname=f"{name}/{rel.as_posix()}", recursive=False)
    return buffer.getvalue()


def unpack_once(bundle: bytes, under: Path | None = None) -> Path:
    """The bundle's data folder on this node: unpacked on first use into a folder named by its hash
    (a rename makes it appear whole, so workers on one node share one copy)."""
    base = Path(under) if under is not None else Path(tempfile.gettempdir())
    folder = base / f"facefix-cluster-data-{hashlib.sha256(bundle).hexdigest()[:16]}"
    if folder.is_dir():
        return folder
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".facefix-cluster-unpack-", dir=base))
    try:
        with tarfile.open(fileobj=io.BytesIO(bundle), mode="r") as tar:
            tar.extractall(work, filter="data")
        for path in work.rglob("*"):
            if path.is_file():
                path.chmod(0o444)
        try:
            os.rename(work, folder)
        except OSError:
            if not folder.is_dir():  # not another worker's copy that won the race
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return folder


def worker_home(data: Path) -> Path:
    """A private ``FACEFIX_HOME`` for one worker: ``data`` shipped, ``cache`` this node's own."""
    cache = paths.cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="facefix-worker-"))
    (home / "data").symlink_to(data, target_is_directory=True)
    (home / "cache").symlink_to(cache, target_is_directory=True)
    return home


def remove_home(home: Path) -> None:
    """Remove a worker's private home (its two links; the shared data stays for the node's other workers)."""
    for name in ("data", "cache"):
        with contextlib.suppress(FileNotFoundError):
            (home / name).unlink()
    with contextlib.suppress(OSError):
        home.rmdir()
