"""The plain values that face analysis produces."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Order of the five landmarks everywhere in facefix (image left/right, as seen).
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face in a photo, in that photo's pixel coordinates.

    Attributes:
        box: (x0, y0, x1, y1) of the detection.
        landmarks: float32 (5, 2) points in :data:`LANDMARK_NAMES` order.
        score: detector confidence (the backend's own scale; higher is surer).
        embedding: unit-length identity vector, or None if not computed.
        backend: name of the analyzer that produced box, landmarks and embedding;
            embeddings of different backends are never compared.
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float
    backend: str
    embedding: np.ndarray | None = field(default=None, repr=False)

    @property
    def eye_mouth(self) -> float:
        """Distance between the eyes' midpoint and the mouth's midpoint, in pixels.

        A scale measure that does not depend on the detector's box conventions.
        """
        eyes = self.landmarks[0:2].mean(axis=0)
        mouth = self.landmarks[3:5].mean(axis=0)
        return float(np.linalg.norm(mouth - eyes))

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return ((x0 + x1) / 2.0, (y0 + y1) / 2.0)

    def to_dict(self) -> dict:
        """JSON-ready description (no embedding: it is large and backend-specific)."""
        return {
            "box": [round(float(v), 1) for v in self.box],
            "score": round(float(self.score), 4),
            "landmarks": {
                name: [round(float(x), 1), round(float(y), 1)]
                for name, (x, y) in zip(LANDMARK_NAMES, self.landmarks)
            },
            "eye_mouth_px": round(self.eye_mouth, 1),
            "backend": self.backend,
        }


def unit(vector: np.ndarray) -> np.ndarray:
    """Return ``vector`` scaled to unit length as float32."""
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v
