"""One interface over the face-analysis backends, and the choice between them.

``auto`` uses insightface when its model pack is already on disk and dlib
otherwise (dlib's models ship with pip packages, so it always works offline).
The chosen backend is logged and recorded on every :class:`Face`.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Protocol

import numpy as np

from facefix.errors import FaceError, UsageError
from facefix.faces.types import Face

log = logging.getLogger(__name__)

BACKENDS = ("auto", "insightface", "dlib")


class FaceAnalyzer(Protocol):
    """Detect faces with five landmarks, and compute identity embeddings."""

    #: "dlib" or "insightface"; tags every Face and embedding.
    name: str
    #: Cosine similarity at or above which two embeddings are the same person.
    same_person_similarity: float
    #: Below this similarity to the others, an enrolment photo is someone else.
    outlier_similarity: float

    def detect(self, image: np.ndarray, *, embed: bool = True) -> list[Face]:
        """Find faces in an RGB uint8 HxWx3 image, largest first.

        Args:
            image: the photo (any size; large photos are detected on a
                downscaled copy, landmarks refined at full resolution).
            embed: also compute each face's identity embedding.
        """
        ...

    def embed_aligned(self, crops: np.ndarray) -> np.ndarray:
        """Embeddings (N, D) of aligned 512 RGB uint8 crops (N, 512, 512, 3)."""
        ...


def describe_backends() -> list[dict]:
    """What each backend needs and whether it is usable now (for ``doctor``)."""
    from facefix.faces import dlib_backend, insightface_backend

    return [dlib_backend.status(), insightface_backend.status()]


def resolve_backend(name: str = "auto") -> str:
    """Turn ``auto`` into a concrete backend name, without loading anything."""
    from facefix.faces import insightface_backend

    if name not in BACKENDS:
        raise UsageError(f"unknown face backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name != "auto":
        return name
    return "insightface" if insightface_backend.models_present() else "dlib"


@lru_cache(maxsize=4)
def _load(name: str) -> FaceAnalyzer:
    if name == "dlib":
        from facefix.faces.dlib_backend import DlibAnalyzer

        return DlibAnalyzer.load()
    if name == "insightface":
        from facefix.faces.insightface_backend import InsightFaceAnalyzer

        return InsightFaceAnalyzer.load()
    raise FaceError(f"no face backend named {name!r}")


def get_analyzer(name: str = "auto") -> FaceAnalyzer:
    """Load (once per process) and return the analyzer for ``name``."""
    concrete = resolve_backend(name)
    analyzer = _load(concrete)
    if name == "auto":
        log.debug("face backend: %s", concrete)
    return analyzer
