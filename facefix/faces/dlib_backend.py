"""dlib backend: HOG detector, 68-point landmarks reduced to five, 128-D ResNet.

The models come from the ``face-recognition-models`` package. Its
``__init__`` imports ``pkg_resources``, which new Pythons lack, so the
``models/`` folder is located through the import system without importing it.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import cv2
import numpy as np

from facefix.errors import FaceError
from facefix.faces.types import Face, unit

log = logging.getLogger(__name__)

PREDICTOR = "shape_predictor_68_face_landmarks.dat"
RECOGNIZER = "dlib_face_recognition_resnet_model_v1.dat"
#: Longest side of the copy the detector sees; faces are refined at full size.
DETECT_MAX_SIDE = 1600


def models_dir() -> Path | None:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "models"


def status() -> dict:
    folder = models_dir()
    try:
        import dlib  # noqa: F401

        has_dlib = True
    except ImportError:
        has_dlib = False
    present = bool(folder and (folder / PREDICTOR).is_file() and (folder / RECOGNIZER).is_file())
    return {
        "backend": "dlib",
        "usable": has_dlib and present,
        "models": str(folder) if folder else None,
        "models_present": present,
        "fix": None if has_dlib and present else "pip install dlib-bin face-recognition-models",
    }


def _five_points(shape) -> np.ndarray:
    pts = np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], np.float32)
    return np.stack(
        [pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]]
    ).astype(np.float32)


class DlibAnalyzer:
    """Face analysis with dlib; see :class:`facefix.faces.analyzer.FaceAnalyzer`."""

    name = "dlib"
    # dlib's published same-person line is Euclidean 0.6 (cosine ~0.82), but
    # strangers in insightface's t1.jpg group photo reach cosine 0.91 with it.
    # A person's model applied to a stranger pulls the face towards the wrong
    # identity, so matching is kept conservative: Euclidean 0.4 on unit vectors.
    same_person_similarity = 0.92
    # Enrolment rejects a reference below this similarity to the set's
    # consensus: dlib's same-person photos mostly sit at 0.90-0.97, while
    # Tom Hanks vs scikit-image's astronaut reaches 0.87. A lost reference
    # costs little; a stranger's face teaches the restorer the wrong person.
    outlier_similarity = 0.90

    def __init__(self, detector, predictor, recognizer, *, upsample: int = 1, threshold: float = 0.25):
        # threshold: dlib's HOG score. Real faces in the sample photos score
        # 0.37-2.8; the false detection on the astronaut's suit scores 0.12.
        self.detector = detector
        self.predictor = predictor
        self.recognizer = recognizer
        self.upsample = upsample
        self.threshold = threshold

    @classmethod
    def load(cls) -> DlibAnalyzer:
        info = status()
        if not info["usable"]:
            raise FaceError(f"the dlib face backend is not usable; fix: {info['fix']}")
        import dlib

        folder = Path(info["models"])
        return cls(
            dlib.get_frontal_face_detector(),
            dlib.shape_predictor(str(folder / PREDICTOR)),
            dlib.face_recognition_model_v1(str(folder / RECOGNIZER)),
        )

    def detect(self, image: np.ndarray, *, embed: bool = True) -> list[Face]:
        import dlib

        image = np.ascontiguousarray(image)
        h, w = image.shape[:2]
        factor = min(1.0, DETECT_MAX_SIDE / max(h, w))
        small = image if factor == 1.0 else cv2.resize(
            image, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_AREA
        )
        boxes, scores, _ = self.detector.run(small, self.upsample, self.threshold)
        faces = []
        for rect, score in zip(boxes, scores):
            box = tuple(v / factor for v in (rect.left(), rect.top(), rect.right(), rect.bottom()))
            full = dlib.rectangle(*(int(round(v)) for v in box))
            shape = self.predictor(image, full)
            embedding = None
            if embed:
                embedding = unit(self.recognizer.compute_face_descriptor(image, shape))
            faces.append(Face(box=box, landmarks=_five_points(shape), score=float(score),
                              backend=self.name, embedding=embedding))
        faces.sort(key=lambda f: -f.eye_mouth)
        return faces

    def embed_aligned(self, crops: np.ndarray) -> np.ndarray:
        import dlib

        # In a template-aligned crop the face sits where dlib's detector puts
        # its box on such crops (measured on real faces), so no detection runs.
        rect = dlib.rectangle(95, 130, 405, 439)
        out = []
        for crop in np.asarray(crops, np.uint8):
            crop = np.ascontiguousarray(crop)
            shape = self.predictor(crop, rect)
            out.append(unit(self.recognizer.compute_face_descriptor(crop, shape)))
        return np.stack(out) if out else np.zeros((0, 128), np.float32)

