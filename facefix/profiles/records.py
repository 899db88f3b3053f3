"""What a profile's manifest records: references, artifacts, the profile."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from facefix.errors import ProfileError

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- records


def utc_now() -> datetime:
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


