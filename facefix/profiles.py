"""The on-disk profile store: one directory per enrolled person, one manifest each.

Layout of ``paths.data_dir()/"profiles"/<name>/``::

    manifest.json                       schema-versioned; the only file that is ever overwritten
    embeddings-<hash>.safetensors       every reference's embeddings, keyed "<ref id>/<backend>"
    crops/<hash>.png                    aligned 512x512 RGB references, lossless
    artifacts/<kind>-<hash>.safetensors trained weights; the manifest records how they were made
    work/<kind>/                        training scratch for resume; never in the manifest

Why it is crash safe: every file except ``manifest.json`` is content-addressed
(its name holds a hash of its bytes) and is written before the manifest, and
the manifest is replaced atomically (temp file + fsync + ``os.replace``) last.
A crash at any point therefore leaves the previous manifest, and everything it
names, intact. Files that no manifest names are garbage-collected on the next
successful commit. Writers of one profile are serialised with a lock file
(``fcntl.flock``; no locking where that is unavailable).

The generic model is not a person: :class:`GenericStore` keeps its artifacts
under ``paths.data_dir()/"generic"/`` with the same mechanism.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import shlex
import shutil
import tempfile
import threading
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import paths
from .errors import ProfileError, UsageError
from .hashing import file_sha256
from .restorers.base import CROP_SIZE

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MAX_NAME_LENGTH = 64
MANIFEST = "manifest.json"

_TMP_PREFIX = ".tmp-"
_FORBIDDEN_CHARS = set('/\\:*?"<>|')
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul"} | {f"{p}{i}" for p in ("com", "lpt") for i in range(1, 10)}
_KIND_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
_BACKEND_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_NAME_RULES = (
    "profile names are 1-64 characters of letters (any script), digits, spaces and punctuation, "
    "not starting with '.' or '_' nor ending with '.', without '/', '\\', '..', ':*?\"<>|' "
    "or control characters"
)


# --------------------------------------------------------------------------- names


def validate_name(name: str) -> str:
    """Check a person's name for use as a profile and return it NFC-normalised.

    Args:
        name: the name as the user typed it, e.g. ``"alice"``, ``"Zoë"`` or ``"李雷"``.

    Returns:
        The name in Unicode NFC form (so that "Zoë" typed on macOS and on Linux is one name).

    Raises:
        UsageError: naming the value and what is allowed.
    """
    if not isinstance(name, str):
        raise UsageError(f"profile name must be text, got {name!r}")
    norm = unicodedata.normalize("NFC", name)

    def bad(why: str) -> UsageError:
        return UsageError(f"invalid profile name {name!r}: {why}; {_NAME_RULES}")

    if not norm:
        raise bad("it is empty")
    if len(norm) > MAX_NAME_LENGTH:
        raise bad(f"it is {len(norm)} characters long")
    if norm != norm.strip():
        raise bad("it starts or ends with whitespace")
    if norm[0] == ".":
        raise bad("it starts with '.'")
    if norm[0] == "_":
        raise bad("names starting with '_' are reserved for facefix")
    if ".." in norm:
        raise bad("it contains '..'")
    if norm.endswith("."):
        raise bad("it ends with '.'")
    for ch in norm:
        if ch in _FORBIDDEN_CHARS:
            raise bad(f"it contains {ch!r}")
        if unicodedata.category(ch) in {"Cc", "Cs", "Co", "Cn", "Zl", "Zp"}:
            raise bad(f"it contains the control character {ch!r}")
    if norm.split(".")[0].lower() in _WINDOWS_RESERVED:
        raise bad("it is a reserved device name on Windows")
    return norm


def _validate_kind(kind: str) -> str:
    if not isinstance(kind, str) or not _KIND_RE.match(kind) or ".." in kind:
        raise ValueError(
            f"invalid artifact kind {kind!r}: use '/'-separated parts of letters, digits, "
            "'.', '_' and '-', e.g. 'fast' or 'diffusion/sd21/unet_lora'"
        )
    return kind


# --------------------------------------------------------------------------- records


def _now() -> datetime:
    # Whole seconds: readable manifests, and a record equals its reloaded self.
    return datetime.now(timezone.utc).replace(microsecond=0)


@dataclass(frozen=True)
class Reference:
    """One enrolled photo of a person: where it came from, its aligned crop and embeddings.

    Args:
        id: first 16 hex digits of ``sha256``; stable across re-enrolls.
        source: absolute path of the source photo, as a string.
        sha256: sha256 of the source file's bytes (duplicates are detected by it).
        crop: path of the aligned 512x512 RGB PNG, relative to the profile directory.
        embeddings: backend name (e.g. "dlib", "insightface") -> unit-length float32 vector.
        box: face box ``(x0, y0, x1, y1)`` in the source photo, in pixels.
        added: when it was enrolled (UTC).
        info: free JSON-compatible details, e.g. ``{"sharpness": 123.4}``.
    """

    id: str
    source: str
    sha256: str
    crop: str
    embeddings: dict[str, np.ndarray] = field(compare=False, repr=False)
    box: tuple[float, float, float, float]
    added: datetime
    info: dict[str, Any]


@dataclass(frozen=True)
class Artifact:
    """Trained weights of one kind (e.g. "fast", "diffusion/sd21/unet_lora").

    Args:
        kind: the artifact's name within its profile.
        file: path of the safetensors file, relative to the profile directory.
        settings: JSON-compatible record of what made it (steps, base model, loss, ...).
        created: when this version was committed (UTC).
    """

    kind: str
    file: str
    settings: dict[str, Any]
    created: datetime


@dataclass(frozen=True)
class Profile:
    """A snapshot of one profile as its manifest described it when loaded.

    Args:
        name: the person's name (the directory's name).
        path: the profile directory.
        created: when the profile was first committed (UTC).
        updated: when it was last committed (UTC).
        references: the enrolled references, in enrolment order.
        artifacts: kind -> :class:`Artifact`.
    """

    name: str
    path: Path
    created: datetime
    updated: datetime
    references: tuple[Reference, ...]
    artifacts: dict[str, Artifact]

    @property
    def backends(self) -> list[str]:
        """Embedding backends that at least one reference has, sorted."""
        return sorted({b for ref in self.references for b in ref.embeddings})

    def embeddings(self, backend: str) -> np.ndarray:
        """Stack the references' embeddings of one backend.

        Args:
            backend: e.g. "dlib" or "insightface"; references without it are skipped.

        Returns:
            float32 array (N, D), one unit-length row per reference that has it.

        Raises:
            ProfileError: when no reference has that backend (check :attr:`backends` first
                to avoid it).
        """
        rows = [ref.embeddings[backend] for ref in self.references if backend in ref.embeddings]
        if not rows:
            have = ", ".join(self.backends) or "none"
            raise ProfileError(
                f"profile {self.name!r} has no {backend!r} embeddings (it has: {have}); "
                f"re-enroll it with the {backend!r} face backend"
            )
        return np.stack(rows).astype(np.float32, copy=False)


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


def _plain_json(value: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    """Round-trip through JSON so that what is returned equals what will be reloaded."""
    try:
        return json.loads(json.dumps(dict(value or {}), default=_json_default, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be JSON-compatible (str/number/bool/list/dict): {exc}") from exc


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform.
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new bytes, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _parse_time(value: Any, manifest: Path) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"{manifest} is corrupt: bad timestamp {value!r}") from exc


# --------------------------------------------------------------------------- locking

_held = threading.local()


@contextlib.contextmanager
def _lock(lock_path: Path, label: str) -> Iterator[None]:
    """Exclusive inter-process lock on ``lock_path``; refuses nesting in one thread."""
    held: set[str] = _held.__dict__.setdefault("paths", set())
    key = str(lock_path)
    if key in held:
        raise ProfileError(
            f"{label} is already being edited by this program; save through the open editor "
            "instead of starting a second edit"
        )
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; writers are not serialised.
        fcntl = None
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as fh:
        if fcntl is not None:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.info("waiting for another facefix process that is editing %s", label)
                fcntl.flock(fh, fcntl.LOCK_EX)
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
            if fcntl is not None:
                fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- one manifest directory


class _Slot:
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
            _atomic_write(self.manifest_path, text.encode("utf-8"))
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
        candidates = [*self.path.glob(f"{_TMP_PREFIX}*"), *self.path.glob("embeddings-*.safetensors")]
        for sub in ("crops", "artifacts"):
            if (self.path / sub).is_dir():
                candidates += [p for p in (self.path / sub).iterdir() if p.is_file()]
        for file in candidates:
            if file not in keep and file.name != MANIFEST:
                logger.debug("removing unreferenced %s", file)
                with contextlib.suppress(OSError):
                    file.unlink()

    def work_dir(self, kind: str) -> Path:
        path = self.path / "work" / _validate_kind(kind)
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


class ProfileEditor:
    """An open edit of one profile; use it as a context manager.

    Files are written as they are added, the manifest only at a successful exit
    of the ``with`` block: until then (and forever, if the block raises) every
    reader sees the profile as it was.
    """

    def __init__(self, slot: _Slot, *, create: bool, check: Callable[[], None] | None = None):
        self._slot = slot
        self._create = create
        self._check = check
        self._lock_cm: contextlib.AbstractContextManager | None = None
        self._base: dict[str, Any] | None = None
        self._refs: list[Reference] = []
        self._artifacts: dict[str, Artifact] = {}
        self._new_files: list[Path] = []
        self._dirty = False

    # -- context manager
    def __enter__(self) -> ProfileEditor:
        self._lock_cm = _lock(self._slot.lock_path, self._slot.label)
        self._lock_cm.__enter__()
        try:
            if self._check is not None:
                self._check()  # again, now that no other writer can create or rename
            if self._slot.exists():
                self._base = self._slot.read_manifest()
                current = self._slot.load()
                self._refs = list(current.references)
                self._artifacts = dict(current.artifacts)
            elif not self._create:
                raise ProfileError(f"{self._slot.label} does not exist")
            self._slot.path.mkdir(parents=True, exist_ok=True)
        except BaseException as exc:
            self._release(type(exc), exc, exc.__traceback__)
            self._lock_cm = None
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._commit()
            else:
                self._abort()
        except BaseException:
            self._abort()
            raise
        finally:
            self._release(exc_type, exc, tb)
            self._lock_cm = None

    def _release(self, *exc_info) -> None:
        if self._lock_cm is not None:
            self._lock_cm.__exit__(*exc_info)

    def _check_open(self) -> None:
        if self._lock_cm is None:
            raise RuntimeError("use the editor inside 'with store.edit(name, create=...) as editor:'")

    # -- reading
    @property
    def name(self) -> str:
        return self._slot.name

    @property
    def path(self) -> Path:
        return self._slot.path

    @property
    def references(self) -> tuple[Reference, ...]:
        """The references as they will be committed."""
        return tuple(self._refs)

    @property
    def artifacts(self) -> dict[str, Artifact]:
        """The artifacts as they will be committed."""
        return dict(self._artifacts)

    # -- changing
    def add_reference(
        self,
        crop: np.ndarray,
        *,
        source: Path | str,
        sha256: str,
        embeddings: Mapping[str, np.ndarray],
        box: tuple[float, float, float, float] | list[float] | np.ndarray,
        info: Mapping[str, Any] | None = None,
    ) -> Reference:
        """Add one aligned face; a source already enrolled (same sha256) is ignored.

        Args:
            crop: uint8 RGB array (512, 512, 3), aligned to the five-point template.
            source: the photo it came from (stored as an absolute path).
            sha256: sha256 hex digest of the source file's bytes.
            embeddings: backend name -> 1-D vector; stored as unit-length float32.
            box: face box ``(x0, y0, x1, y1)`` in the source photo.
            info: JSON-compatible details (numpy scalars are converted), e.g. sharpness.

        Returns:
            The new :class:`Reference`, or the existing one with the same ``sha256``.
        """
        self._check_open()
        sha256 = str(sha256).lower()
        if not _SHA256_RE.match(sha256):
            raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
        for ref in self._refs:
            if ref.sha256 == sha256:
                logger.info("%s is already enrolled in %s as %s; skipped", source, self._slot.label, ref.id)
                return ref
        crop = np.asarray(crop)
        if crop.dtype != np.uint8 or crop.shape != (CROP_SIZE, CROP_SIZE, 3):
            raise ValueError(
                f"crop must be uint8 RGB of shape ({CROP_SIZE}, {CROP_SIZE}, 3), "
                f"got {crop.dtype} {crop.shape}"
            )
        box_t = tuple(float(v) for v in np.asarray(box, dtype=np.float64).reshape(-1))
        if len(box_t) != 4:
            raise ValueError(f"box must be (x0, y0, x1, y1), got {box!r}")
        emb = {backend: self._unit(backend, vec) for backend, vec in embeddings.items()}
        info_d = _plain_json(info, "info")

        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(crop), "RGB").save(buf, format="PNG")
        png = buf.getvalue()
        crop_rel = f"crops/{hashlib.sha256(png).hexdigest()[:16]}.png"
        self._write_file(self._slot.path / crop_rel, png)
        ref = Reference(
            id=sha256[:16], source=str(Path(source).expanduser().absolute()), sha256=sha256,
            crop=crop_rel, embeddings=emb, box=box_t, added=_now(), info=info_d,
        )
        self._refs.append(ref)
        self._dirty = True
        return ref

    def _unit(self, backend: str, vec: np.ndarray) -> np.ndarray:
        if not isinstance(backend, str) or not _BACKEND_RE.match(backend):
            raise ValueError(
                f"invalid embedding backend name {backend!r}: use letters, digits, '.', '_', '-'"
            )
        v = np.asarray(vec, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(v))
        if not np.isfinite(norm) or norm == 0.0:
            raise ValueError(f"the {backend!r} embedding is zero or not finite; it cannot identify anyone")
        for ref in self._refs:
            other = ref.embeddings.get(backend)
            if other is not None and other.shape != v.shape:
                raise ValueError(
                    f"the {backend!r} embedding has {v.size} values but {self._slot.label} stores "
                    f"{other.size}; use the same backend model for every reference"
                )
        return (v / norm).astype(np.float32)

    def remove_reference(self, ref_id: str) -> None:
        """Drop a reference by its id; its files go at the next commit's clean-up."""
        self._check_open()
        kept = [r for r in self._refs if r.id != ref_id]
        if len(kept) == len(self._refs):
            have = ", ".join(r.id for r in self._refs) or "none"
            raise ProfileError(f"{self._slot.label} has no reference {ref_id!r} (it has: {have})")
        self._refs = kept
        self._dirty = True

    def save_artifact(self, kind: str, tensors: Mapping[str, Any], settings: Mapping[str, Any]) -> Artifact:
        """Store trained weights under ``kind``, replacing any previous version at commit.

        Args:
            kind: e.g. "fast" or "diffusion/sd21/unet_lora".
            tensors: name -> ``torch.Tensor``; saved with safetensors (moved to CPU).
            settings: JSON-compatible record of what made them (steps, base model, loss, ...).

        Returns:
            The :class:`Artifact` as it will be committed.
        """
        import torch
        from safetensors.torch import save_file

        self._check_open()
        _validate_kind(kind)
        settings_d = _plain_json(settings, "artifact settings")
        bad = [k for k, v in tensors.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
        if bad or not tensors:
            raise ValueError(f"tensors must be a non-empty dict of str -> torch.Tensor (bad keys: {bad})")
        cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        # Settings ride along in the file too, so weights found without their manifest explain themselves.
        meta = {"facefix.kind": kind, "facefix.settings": json.dumps(settings_d, ensure_ascii=False)}
        adir = self._slot.path / "artifacts"
        adir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=adir, suffix=".safetensors")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            save_file(cpu, str(tmp), metadata=meta)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            rel = f"artifacts/{kind.replace('/', '__')}-{file_sha256(tmp)[:16]}.safetensors"
            final = self._slot.path / rel
            if final.exists():
                tmp.unlink()
            else:
                os.replace(tmp, final)
                self._new_files.append(final)
                _fsync_dir(adir)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise ProfileError(
                f"could not write the {kind!r} artifact of {self._slot.label} ({exc})"
            ) from exc
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        art = Artifact(kind=kind, file=rel, settings=settings_d, created=_now())
        self._artifacts[kind] = art
        self._dirty = True
        return art

    # -- committing
    def _write_file(self, path: Path, data: bytes) -> None:
        if path.exists():  # content-addressed: same name, same bytes
            return
        try:
            _atomic_write(path, data)
        except OSError as exc:
            raise ProfileError(f"could not write {path} ({exc}); {self._slot.label} is unchanged") from exc
        self._new_files.append(path)

    def _commit(self) -> None:
        if not self._dirty and self._base is not None:
            return
        from safetensors.numpy import save

        emb_rel = None
        vectors = {f"{r.id}/{b}": v for r in self._refs for b, v in r.embeddings.items()}
        if vectors:
            blob = save(vectors)
            emb_rel = f"embeddings-{hashlib.sha256(blob).hexdigest()[:16]}.safetensors"
            self._write_file(self._slot.path / emb_rel, blob)
        now = _now()
        data = {
            "schema": SCHEMA_VERSION,
            "name": self._slot.name,
            "created": self._base["created"] if self._base else now.isoformat(),
            "updated": now.isoformat(),
            "embeddings": emb_rel,
            "references": [
                {
                    "id": r.id, "source": r.source, "sha256": r.sha256, "crop": r.crop,
                    "box": list(r.box), "added": r.added.isoformat(), "info": r.info,
                    "embeddings": {b: int(v.size) for b, v in r.embeddings.items()},
                }
                for r in self._refs
            ],
            "artifacts": {
                a.kind: {"file": a.file, "created": a.created.isoformat(), "settings": a.settings}
                for a in self._artifacts.values()
            },
        }
        self._slot.write_manifest(data)  # the commit point
        self._new_files.clear()
        self._slot.collect_garbage(data)

    def _abort(self) -> None:
        for file in self._new_files:
            with contextlib.suppress(OSError):
                file.unlink()
        self._new_files.clear()
        if self._base is None and not self._slot.exists():
            # A profile that was never committed leaves nothing behind (rmdir: only if empty,
            # so the generic model's work/ and lock survive).
            for sub in ("crops", "artifacts", ""):
                with contextlib.suppress(OSError):
                    (self._slot.path / sub).rmdir()


# --------------------------------------------------------------------------- stores


class ProfileStore:
    """All enrolled people, one directory each under ``root``.

    Args:
        root: directory holding the profiles; default ``paths.data_dir()/"profiles"``.
    """

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else paths.data_dir() / "profiles"

    # -- lookup
    def _dir_names(self) -> dict[str, str]:
        """NFC name -> directory name on disk, for committed profiles."""
        if not self.root.is_dir():
            return {}
        found = {}
        for entry in self.root.iterdir():
            if entry.name[:1] in {".", "_"} or not (entry / MANIFEST).is_file():
                continue
            found[unicodedata.normalize("NFC", entry.name)] = entry.name
        return found

    def names(self) -> list[str]:
        """Names of the enrolled people, sorted case-insensitively."""
        return sorted(self._dir_names(), key=lambda n: (n.casefold(), n))

    def exists(self, name: str) -> bool:
        return validate_name(name) in self._dir_names()

    def _slot(self, name: str) -> _Slot:
        dirname = self._dir_names().get(name, name)
        lock = self.root / ".locks" / f"{name.casefold()}.lock"
        return _Slot(self.root / dirname, name, f"profile {name!r}", lock)

    def _existing(self, name: str) -> _Slot:
        name = validate_name(name)
        names = self.names()
        if name not in names:
            raise self._missing(name, names)
        return self._slot(name)

    @staticmethod
    def _missing(name: str, names: list[str]) -> ProfileError:
        close = [n for n in names if n.casefold() == name.casefold()]
        if close:
            return ProfileError(f"no profile named {name!r}; did you mean {close[0]!r}?")
        enrolled = ", ".join(names) if names else "none yet"
        arg = shlex.quote(name)
        if arg != name and not set(name) & set("$`!\\"):
            arg = f'"{name}"'  # reads better inside the single-quoted hint
        return ProfileError(
            f"no profile named {name!r}; enrolled: {enrolled} — "
            f"enroll with 'facefix enroll {arg} DIR'"
        )

    def path(self, name: str | None = None) -> Path:
        """The store's root, or the directory of an existing profile."""
        return self.root if name is None else self._existing(name).path

    def load(self, name: str) -> Profile:
        """Read a profile's manifest and embeddings (crops stay on disk; see :meth:`load_crops`)."""
        return self._existing(name).load()

    def load_crops(self, profile: Profile) -> np.ndarray:
        """Read a profile's aligned reference crops.

        Returns:
            uint8 array (N, 512, 512, 3), RGB, in the order of ``profile.references``.
        """
        from PIL import Image

        crops = np.empty((len(profile.references), CROP_SIZE, CROP_SIZE, 3), dtype=np.uint8)
        for i, ref in enumerate(profile.references):
            file = profile.path / ref.crop
            try:
                with Image.open(file) as im:
                    arr = np.asarray(im.convert("RGB"))
            except OSError as exc:
                raise ProfileError(
                    f"cannot read the reference crop {file} ({exc}); re-enroll {profile.name!r}"
                ) from exc
            if arr.shape != crops.shape[1:]:
                raise ProfileError(
                    f"{file} is {arr.shape[1]}x{arr.shape[0]}, not {CROP_SIZE}x{CROP_SIZE}; "
                    f"re-enroll {profile.name!r}"
                )
            crops[i] = arr
        return crops

    # -- writing
    def edit(self, name: str, *, create: bool) -> ProfileEditor:
        """Open a profile for changes: ``with store.edit("alice", create=True) as ed: ...``.

        Args:
            name: the person.
            create: allow creating the profile when it does not exist yet (an existing
                profile is edited either way); without it a missing profile is an error.

        Changes become visible only when the ``with`` block ends without an exception.
        """
        name = validate_name(name)

        def check() -> None:
            names = self.names()
            if name in names:
                return
            if not create:
                raise self._missing(name, names)
            clash = [n for n in names if n.casefold() == name.casefold()]
            if clash:
                raise ProfileError(
                    f"cannot create profile {name!r}: {clash[0]!r} exists and names are case-insensitive; "
                    f"use {clash[0]!r} or another name"
                )

        check()
        return ProfileEditor(self._slot(name), create=create, check=check)

    def commit_artifact(
        self, name: str, kind: str, tensors: Mapping[str, Any], settings: Mapping[str, Any]
    ) -> Artifact:
        """Save one artifact of an existing profile atomically (e.g. a training checkpoint)."""
        with self.edit(name, create=False) as editor:
            return editor.save_artifact(kind, tensors, settings)

    def load_artifact(
        self, name: str, kind: str, *, device: str = "cpu"
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Load an artifact's tensors (safetensors, never pickle) and its settings.

        Returns:
            ``(tensors, settings)``: name -> ``torch.Tensor`` on ``device``, and the settings dict.
        """
        return self._existing(name).load_artifact(kind, device)

    def work_dir(self, name: str, kind: str) -> Path:
        """Scratch directory for resuming training of ``kind`` (created; deletable at any time)."""
        return self._existing(name).work_dir(kind)

    def remove(self, name: str) -> None:
        """Delete a profile with everything in it."""
        name = validate_name(name)
        with _lock(self._slot(name).lock_path, f"profile {name!r}"):
            slot = self._existing(name)
            # Move aside first so that a crash mid-delete never leaves a half profile.
            trash = self.root / f".trash-{os.getpid()}-{slot.path.name}"
            os.replace(slot.path, trash)
            shutil.rmtree(trash, ignore_errors=True)
        logger.debug("removed profile %r", name)

    def rename(self, old: str, new: str) -> None:
        """Rename a profile; ``new`` may differ from ``old`` only in case."""
        old, new = validate_name(old), validate_name(new)
        if old == new:
            return
        with contextlib.ExitStack() as stack:
            for key in sorted({old.casefold(), new.casefold()}):  # one order: no deadlock
                stack.enter_context(_lock(self.root / ".locks" / f"{key}.lock", f"profile {key!r}"))
            src = self._existing(old)
            clash = [n for n in self.names() if n != old and n.casefold() == new.casefold()]
            if clash:
                raise ProfileError(
                    f"cannot rename {old!r} to {new!r}: profile {clash[0]!r} exists; "
                    "remove it first or pick another name"
                )
            dst = self.root / new
            if dst.exists() and not os.path.samefile(src.path, dst):
                # A directory without a manifest is the leftover of a crashed first enroll.
                shutil.rmtree(dst)
            os.rename(src.path, dst)
            _fsync_dir(self.root)
            moved = _Slot(dst, new, f"profile {new!r}", src.lock_path)
            data = moved.read_manifest()
            data["name"] = new  # informational: the directory name is what counts
            moved.write_manifest(data)
        logger.debug("renamed profile %r to %r", old, new)


class GenericStore:
    """Artifacts of the generic (not personalised) model, under ``paths.data_dir()/"generic"``.

    Args:
        root: directory to use instead of the default.
    """

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else paths.data_dir() / "generic"
        self._slot = _Slot(self.root, "_generic", "the generic model", self.root / ".lock")

    def path(self) -> Path:
        return self.root

    def exists(self) -> bool:
        return self._slot.exists()

    def load(self) -> Profile:
        """The generic model's manifest as a :class:`Profile` (it has no references)."""
        if not self._slot.exists():
            raise ProfileError("the generic model has no artifacts yet; train or download it first")
        return self._slot.load()

    def edit(self) -> ProfileEditor:
        """Open the generic model for changes (created on first commit)."""
        return ProfileEditor(self._slot, create=True)

    def commit_artifact(self, kind: str, tensors: Mapping[str, Any], settings: Mapping[str, Any]) -> Artifact:
        """Save one generic artifact atomically."""
        with self.edit() as editor:
            return editor.save_artifact(kind, tensors, settings)

    def load_artifact(self, kind: str, *, device: str = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
        """Load a generic artifact's tensors and settings."""
        self.load()
        return self._slot.load_artifact(kind, device)

    def work_dir(self, kind: str) -> Path:
        """Scratch directory for resuming generic training of ``kind``."""
        return self._slot.work_dir(kind)
