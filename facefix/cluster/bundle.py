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


#: A worker's home is ``<tmp>/facefix-worker-<pid>-<random>``: the pid lets a later worker on
#: the node remove the homes of workers that were killed before they could (SIGKILL, OOM).
HOME_PREFIX = "facefix-worker-"


def worker_home(data: Path) -> Path:
    """A private ``FACEFIX_HOME`` for one worker: ``data`` shipped, ``cache`` this node's own.
    Homes left by killed workers on this node are removed first (:func:`sweep_homes`)."""
    cache = paths.cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    sweep_homes()
    home = Path(tempfile.mkdtemp(prefix=f"{HOME_PREFIX}{os.getpid()}-"))
    (home / "data").symlink_to(data, target_is_directory=True)
    (home / "cache").symlink_to(cache, target_is_directory=True)
    return home


def sweep_homes() -> list[Path]:
    """Remove the homes of workers on this node whose process is gone; the removed homes.

    Only a folder named for a dead pid and holding nothing but a home's two links is
    touched (a live worker's, or anything else in the temporary folder, is left)."""
    removed = []
    for home in Path(tempfile.gettempdir()).glob(f"{HOME_PREFIX}*-*"):
        pid = home.name[len(HOME_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)) or not home.is_dir() or home.is_symlink():
            continue
        if {p.name for p in home.iterdir()} <= {"data", "cache"} and all(p.is_symlink() for p in home.iterdir()):
            remove_home(home)
            if not home.exists():
                removed.append(home)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def remove_home(home: Path) -> None:
    """Remove a worker's private home (its two links; the shared data stays for the node's other workers)."""
    for name in ("data", "cache"):
        with contextlib.suppress(FileNotFoundError):
            (home / name).unlink()
    with contextlib.suppress(OSError):
        home.rmdir()
