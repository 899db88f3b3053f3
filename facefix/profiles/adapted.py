"""Where adapted restorers live: fast restorers fine-tuned on one album's own faces (``facefix adapt``).

Layout of ``paths.data_dir()/"adapted"/<name>/`` is a generic-store slot
(:mod:`facefix.profiles`, the same crash-safe manifest + content-addressed
artifacts as the generic model)::

    manifest.json                       artifacts only (no references)
    artifacts/fast-<hash>.safetensors   the adapted fast restorer; its settings
                                        record the album, the person, the prior, the recipe
    work/fast/adapt_train.ckpt          fine-tuning checkpoint for --resume
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

from facefix.common import paths
from facefix.errors import FacefixError, ProfileError
from facefix.profiles.kinds import FAST_KIND
from facefix.profiles.names import validate_name
from facefix.profiles.stores import GenericStore


class AdaptedStore:
    """Every adapted restorer, one directory each.

    Args:
        root: default ``paths.data_dir()/"adapted"``.
    """

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else paths.data_dir() / "adapted"

    def names(self) -> list[str]:
        """Names of the adapted restorers, sorted case-insensitively."""
        if not self.root.is_dir():
            return []
        found = [p.name for p in self.root.iterdir()
                 if p.name[:1] not in {".", "_"} and (p / "manifest.json").is_file()]
        return sorted(found, key=lambda n: (n.casefold(), n))

    def exists(self, name: str) -> bool:
        return validate_name(name) in self.names()

    def slot(self, name: str) -> GenericStore:
        name = validate_name(name)
        return GenericStore(self.root / name, name=name, label=f"adapted restorer {name!r}")

    def _existing(self, name: str) -> GenericStore:
        name = validate_name(name)
        if name not in self.names():
            have = ", ".join(self.names()) or "none yet"
            raise ProfileError(f"no adapted restorer named {name!r} (have: {have}); "
                               "make one with 'facefix adapt DIR --name NAME'")
        return self.slot(name)

    def commit(self, name: str, tensors: dict, settings: dict[str, Any]) -> None:
        """Save (or replace) an adapted restorer atomically."""
        self.slot(name).commit_artifact(FAST_KIND, tensors, settings)

    def load(self, name: str, *, device: str = "cpu") -> tuple[dict, dict[str, Any]]:
        """``(tensors, settings)`` of an adapted restorer, for :meth:`FastRestorer.load`."""
        return self._existing(name).load_artifact(FAST_KIND, device=device)

    def info(self, name: str) -> dict[str, Any]:
        """A JSON-able summary (for ``facefix adapted list``)."""
        slot = self._existing(name)
        art = slot.load().artifacts.get(FAST_KIND)
        if art is None:
            raise ProfileError(f"adapted restorer {name!r} has no weights; run 'facefix adapt' again")
        a = art.settings.get("adaptation", {})
        t = art.settings.get("training", {})
        return {"name": name, "album": a.get("album"), "person": a.get("person"), "faces": a.get("faces"),
                "started_from": a.get("started_from"), "model_set": (a.get("prior") or {}).get("model_set"),
                "steps": t.get("steps"), "seconds": t.get("seconds"), "loss_before": a.get("loss_before"),
                "loss_after": a.get("loss_after"), "created": art.created.isoformat(), "path": str(slot.root)}

    def for_folder(self, folder: Path) -> list[str]:
        """Adapted restorers made from ``folder`` (album-wide ones first)."""
        target = str(Path(folder).expanduser().resolve())
        found = []
        for name in self.names():
            with contextlib.suppress(FacefixError):
                info = self.info(name)
                if info["album"] == target:
                    found.append((info["person"] is not None, name))
        return [n for _, n in sorted(found)]

    def work_dir(self, name: str) -> Path:
        """Scratch directory of the fine-tuning checkpoint (created)."""
        return self.slot(name).work_dir(FAST_KIND)

    def remove(self, name: str) -> None:
        """Delete an adapted restorer (its cached pseudo-targets stay in the cache)."""
        slot = self._existing(name)
        trash = self.root / f".trash-{os.getpid()}-{slot.root.name}"
        os.replace(slot.root, trash)  # a crash mid-delete never leaves half a restorer
        shutil.rmtree(trash, ignore_errors=True)


def load_adapted(name: str, *, store: AdaptedStore | None = None, device: str = "cpu") -> tuple[dict, dict[str, Any]]:
    """``(tensors, settings)`` of the adapted restorer ``name`` (see :meth:`FastRestorer.load`)."""
    return (store or AdaptedStore()).load(name, device=device)
