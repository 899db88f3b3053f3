"""Editing one profile: add or remove references, save artifacts, commit the manifest last."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from facefix.common.atomic import atomic_write_bytes
from facefix.common.files import file_sha256
from facefix.errors import ProfileError
from facefix.faces.align import CROP_SIZE
from facefix.profiles.names import (
    BACKEND_RE,
    SCHEMA_VERSION,
    SHA256_RE,
    TMP_PREFIX,
    validate_kind,
)
from facefix.profiles.records import Artifact, Reference, utc_now
from facefix.profiles.storage import (
    Slot,
    fsync_dir,
    lock,
    plain_json,
)

logger = logging.getLogger(__name__)

class ProfileEditor:
    """An open edit of one profile; use it as a context manager.

    Files are written as they are added, the manifest only at a successful exit
    of the ``with`` block: until then (and forever, if the block raises) every
    reader sees the profile as it was.
    """

    def __init__(self, slot: Slot, *, create: bool, check: Callable[[], None] | None = None):
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
        self._lock_cm = lock(self._slot.lock_path, self._slot.label)
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
        if not SHA256_RE.match(sha256):
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
        info_d = plain_json(info, "info")

        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(crop), "RGB").save(buf, format="PNG")
        png = buf.getvalue()
        crop_rel = f"crops/{hashlib.sha256(png).hexdigest()[:16]}.png"
        self._write_file(self._slot.path / crop_rel, png)
        ref = Reference(
            id=sha256[:16], source=str(Path(source).expanduser().absolute()), sha256=sha256,
            crop=crop_rel, embeddings=emb, box=box_t, added=utc_now(), info=info_d,
        )
        self._refs.append(ref)
        self._dirty = True
        return ref

    def _unit(self, backend: str, vec: np.ndarray) -> np.ndarray:
        if not isinstance(backend, str) or not BACKEND_RE.match(backend):
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

    def remove_artifact(self, kind: str, *, scratch: str | None = None) -> None:
        """Drop an artifact and its training scratch ``work/<scratch>`` (default: ``kind``; its resume
        checkpoints hold the same weights); its file goes at the next commit's clean-up."""
        self._check_open()
        if kind not in self._artifacts:
            have = ", ".join(sorted(self._artifacts)) or "none"
            raise ProfileError(f"{self._slot.label} has no {kind!r} artifact (it has: {have})")
        del self._artifacts[kind]
        self._dirty = True
        work = self._slot.path / "work" / validate_kind(scratch or kind)
        if work.is_dir():
            shutil.rmtree(work)

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
        validate_kind(kind)
        settings_d = plain_json(settings, "artifact settings")
        bad = [k for k, v in tensors.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
        if bad or not tensors:
            raise ValueError(f"tensors must be a non-empty dict of str -> torch.Tensor (bad keys: {bad})")
        cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        # Settings ride along in the file too, so weights found without their manifest explain themselves.
        meta = {"facefix.kind": kind, "facefix.settings": json.dumps(settings_d, ensure_ascii=False)}
        adir = self._slot.path / "artifacts"
        adir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=TMP_PREFIX, dir=adir, suffix=".safetensors")
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
                fsync_dir(adir)
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
        art = Artifact(kind=kind, file=rel, settings=settings_d, created=utc_now())
        self._artifacts[kind] = art
        self._dirty = True
        return art

    # -- committing
    def _write_file(self, path: Path, data: bytes) -> None:
        if path.exists():  # content-addressed: same name, same bytes
            return
        try:
            atomic_write_bytes(path, data)
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
        now = utc_now()
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


