"""One manifest directory on disk: atomic writes, the lock, reading and garbage collection."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from facefix.common.atomic import atomic_write_bytes
from facefix.errors import ProfileError
from facefix.profiles.names import MANIFEST, SCHEMA_VERSION, TMP_PREFIX, validate_kind
from facefix.profiles.records import Artifact, Profile, Reference

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- file helpers


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, datetime)):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-compatible")


def plain_json(value: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    """Round-trip through JSON so that what is returned equals what will be reloaded."""
    try:
        return json.loads(json.dumps(dict(value or {}), default=_json_default, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be JSON-compatible (str/number/bool/list/dict): {exc}") from exc


def fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform.
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _parse_time(value: Any, manifest: Path) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"{manifest} is corrupt: bad timestamp {value!r}") from exc


# --------------------------------------------------------------------------- locking

_held = threading.local()


@contextlib.contextmanager
def lock(lock_path: Path, label: str) -> Iterator[None]:
    """Exclusive inter-process lock on ``lock_path`` (filelock: flock on POSIX, msvcrt on Windows); refuses nesting in one thread."""
    held: set[str] = _held.__dict__.setdefault("paths", set())
    key = str(lock_path)
    if key in held:
        raise ProfileError(
            f"{label} is already being edited by this program; save through the open editor "
            "instead of starting a second edit"
        )
    from filelock import FileLock, Timeout

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    file_lock = FileLock(lock_path)
    try:
        file_lock.acquire(timeout=0)
    except Timeout:
        logger.info("waiting for another facefix process that is editing %s", label)
        file_lock.acquire()
    held.add(key)
    try:
        yield
    finally:
        held.discard(key)
        file_lock.release()


# --------------------------------------------------------------------------- one manifest directory


class Slot:
    """One directory with a manifest: a person's profile or the generic model."""

    def __init__(self, path: Path, name: str, label: str, lock_path: Path):
        self.path = path
        self.name = name
        self.label = label
        self.lock_path = lock_path

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def read_manifest(self) -> dict[str, Any]:
        path = self.manifest_path
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ProfileError(f"{self.label} does not exist ({path} is missing)") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProfileError(f"{path} is corrupt ({exc}); restore it from a backup or re-enroll") from exc
        schema = data.get("schema") if isinstance(data, dict) else None
        if not isinstance(schema, int):
            raise ProfileError(f"{path} is corrupt: no schema version; restore it from a backup or re-enroll")
        if schema > SCHEMA_VERSION:
            raise ProfileError(
                f"{self.label} was written by a newer facefix (schema {schema}; this version reads "
                f"up to {SCHEMA_VERSION}); upgrade facefix with 'pip install -U facefix'"
            )
        return data

    def load(self) -> Profile:
        data = self.read_manifest()
        mpath = self.manifest_path
        try:
            vectors: dict[str, np.ndarray] = {}
            if data.get("embeddings"):
                vectors = self._read_embeddings(data["embeddings"])
            refs = []
            for r in data["references"]:
                emb = {}
                for backend, dim in r["embeddings"].items():
                    vec = vectors.get(f"{r['id']}/{backend}")
                    if vec is None or vec.shape != (dim,):
                        raise ProfileError(
                            f"{self.path / data['embeddings']} lacks the {backend!r} embedding of "
                            f"reference {r['id']}; re-enroll {self.label}"
                        )
                    emb[backend] = vec
                refs.append(
                    Reference(
                        id=r["id"], source=r["source"], sha256=r["sha256"], crop=r["crop"],
                        embeddings=emb, box=tuple(float(v) for v in r["box"]),
                        added=_parse_time(r["added"], mpath), info=dict(r.get("info") or {}),
                    )
                )
            artifacts = {
                kind: Artifact(kind=kind, file=a["file"], settings=dict(a.get("settings") or {}),
                               created=_parse_time(a["created"], mpath))
                for kind, a in data["artifacts"].items()
            }
            return Profile(
                name=self.name, path=self.path, created=_parse_time(data["created"], mpath),
                updated=_parse_time(data["updated"], mpath), references=tuple(refs), artifacts=artifacts,
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ProfileError(
                f"{mpath} is corrupt (bad or missing field {exc}); restore it from a backup or re-enroll"
            ) from exc

    def _read_embeddings(self, rel: str) -> dict[str, np.ndarray]:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        file = self.path / rel
        try:
            return load_file(str(file))
        except (OSError, SafetensorError) as exc:
            raise ProfileError(f"cannot read {file} ({exc}); re-enroll {self.label}") from exc

    def write_manifest(self, data: dict[str, Any]) -> None:
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        try:
            atomic_write_bytes(self.manifest_path, text.encode("utf-8"))
        except OSError as exc:
            raise ProfileError(
                f"could not write {self.manifest_path} ({exc}); {self.label} is unchanged"
            ) from exc

    def collect_garbage(self, data: dict[str, Any]) -> None:
        """Delete files in the directory that this manifest does not name (never ``work/``)."""
        keep = {self.path / r["crop"] for r in data["references"]}
        keep |= {self.path / a["file"] for a in data["artifacts"].values()}
        if data.get("embeddings"):
            keep.add(self.path / data["embeddings"])
        candidates = [*self.path.glob(f"{TMP_PREFIX}*"), *self.path.glob(".*.part"), *self.path.glob("embeddings-*.safetensors")]
        for sub in ("crops", "artifacts"):
            if (self.path / sub).is_dir():
                candidates += [p for p in (self.path / sub).iterdir() if p.is_file()]
        for file in candidates:
            if file not in keep and file.name != MANIFEST:
                logger.debug("removing unreferenced %s", file)
                with contextlib.suppress(OSError):
                    file.unlink()

    def work_dir(self, kind: str) -> Path:
        path = self.path / "work" / validate_kind(kind)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def load_artifact(self, kind: str, device: str = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        profile = self.load()
        art = profile.artifacts.get(kind)
        if art is None:
            have = ", ".join(sorted(profile.artifacts)) or "none"
            raise ProfileError(f"{self.label} has no {kind!r} artifact (it has: {have}); train it first")
        file = self.path / art.file
        try:
            tensors = load_file(str(file), device=device)
        except (OSError, SafetensorError) as exc:
            raise ProfileError(f"cannot read {file} ({exc}); train the {kind!r} artifact again") from exc
        return tensors, dict(art.settings)


