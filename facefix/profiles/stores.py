"""The stores: every enrolled person (:class:`ProfileStore`) and the generic model (:class:`GenericStore`)."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from facefix.common import paths
from facefix.errors import ProfileError
from facefix.faces.align import CROP_SIZE
from facefix.profiles.editor import ProfileEditor
from facefix.profiles.names import MANIFEST, validate_name
from facefix.profiles.records import Artifact, Profile
from facefix.profiles.storage import Slot, fsync_dir, lock

logger = logging.getLogger(__name__)

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

    def _slot(self, name: str) -> Slot:
        dirname = self._dir_names().get(name, name)
        lock = self.root / ".locks" / f"{name.casefold()}.lock"
        return Slot(self.root / dirname, name, f"profile {name!r}", lock)

    def _existing(self, name: str) -> Slot:
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
        with lock(self._slot(name).lock_path, f"profile {name!r}"):
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
                stack.enter_context(lock(self.root / ".locks" / f"{key}.lock", f"profile {key!r}"))
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
            fsync_dir(self.root)
            moved = Slot(dst, new, f"profile {new!r}", src.lock_path)
            data = moved.read_manifest()
            data["name"] = new  # informational: the directory name is what counts
            moved.write_manifest(data)
        logger.debug("renamed profile %r to %r", old, new)


class GenericStore:
    """Artifacts with no references: the generic (not personalised) model, under ``paths.data_dir()/"generic"``.

    The same crash-safe slot holds each adapted restorer (:mod:`facefix.profiles.adapted`).

    Args:
        root: directory to use instead of the default.
        name: the slot's name in its manifest.
        label: how messages name it.
    """

    def __init__(self, root: Path | None = None, *, name: str = "_generic", label: str = "the generic model"):
        self.root = Path(root) if root is not None else paths.data_dir() / "generic"
        self._slot = Slot(self.root, name, label, self.root / ".lock")

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
