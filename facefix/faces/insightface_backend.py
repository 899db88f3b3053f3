"""insightface backend: SCRFD detector, five landmarks, ArcFace embedding.

Used when the ``buffalo_l`` model pack is on disk: in facefix's cache
(``<cache>/insightface/models/buffalo_l``) or insightface's own default
(``~/.insightface/models/buffalo_l``). insightface downloads the pack itself
when asked for explicitly and the network is allowed; never when
``FACEFIX_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from facefix.common import paths
from facefix.errors import FaceError
from facefix.faces.align import TEMPLATE_512
from facefix.faces.types import Face, unit

log = logging.getLogger(__name__)

PACK = "buffalo_l"
REQUIRED = ("det_10g.onnx", "w600k_r50.onnx")
#: ArcFace's own five-point template on its 112x112 input.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
     [41.5493, 92.3655], [70.7299, 92.2041]], np.float32,
)


def candidate_roots() -> list[Path]:
    return [paths.cache_dir() / "insightface", Path.home() / ".insightface"]


def find_root() -> Path | None:
    for root in candidate_roots():
        folder = root / "models" / PACK
        if all((folder / name).is_file() for name in REQUIRED):
            return root
    return None


def models_present() -> bool:
    return find_root() is not None


def status() -> dict:
    try:
        import insightface  # noqa: F401
        import onnxruntime  # noqa: F401

        installed = True
    except ImportError:
        installed = False
    root = find_root()
    where = " or ".join(str(r / "models" / PACK) for r in candidate_roots())
    return {
        "backend": "insightface",
        "usable": installed and root is not None,
        "models": str(root / "models" / PACK) if root else where,
        "models_present": root is not None,
        "fix": None if root else f"facefix faces --backend insightface PHOTO (downloads {PACK}; needs the network)",
    }


class InsightFaceAnalyzer:
    """Face analysis with insightface; see :class:`facefix.faces.analyzer.FaceAnalyzer`."""

    name = "insightface"
    # ArcFace cosine similarity; ~0.4 is the usual verification line.
    same_person_similarity = 0.45
    outlier_similarity = 0.30

    def __init__(self, app):
        self.app = app
        self.recognizer = app.models.get("recognition")

    @classmethod
    def load(cls) -> InsightFaceAnalyzer:
        try:
            from insightface.app import FaceAnalysis
        except ImportError as exc:  # pragma: no cover - a dependency
            raise FaceError("insightface is not installed; pip install insightface onnxruntime") from exc
        root = find_root()
        if root is None:
            where = ", ".join(str(r / "models" / PACK) for r in candidate_roots())
            if paths.offline():
                raise FaceError(
                    f"insightface's {PACK} models are not on disk (looked in {where}) and "
                    "FACEFIX_OFFLINE/HF_HUB_OFFLINE forbid downloading them; unset those "
                    "variables once, or use --backend dlib"
                )
            root = candidate_roots()[0]
            log.info("downloading insightface's %s models into %s", PACK, root)
        import onnxruntime

        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in onnxruntime.get_available_providers()]
        try:
            app = FaceAnalysis(name=PACK, root=str(root), providers=providers,
                               allowed_modules=["detection", "recognition"])
            app.prepare(ctx_id=0 if "CUDAExecutionProvider" in providers else -1, det_size=(640, 640))
        except Exception as exc:
            raise FaceError(f"could not load insightface's {PACK} from {root}: {exc}") from exc
        return cls(app)

    def detect(self, image: np.ndarray, *, embed: bool = True) -> list[Face]:
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        found = self.app.get(bgr)
        faces = []
        for f in found:
            emb = unit(f.normed_embedding) if embed and getattr(f, "normed_embedding", None) is not None else None
            faces.append(Face(box=tuple(float(v) for v in f.bbox), landmarks=np.asarray(f.kps, np.float32),
                              score=float(f.det_score), backend=self.name, embedding=emb))
        faces.sort(key=lambda f: -f.eye_mouth)
        return faces

    def embed_aligned(self, crops: np.ndarray) -> np.ndarray:
        matrix, _ = cv2.estimateAffinePartial2D(TEMPLATE_512, ARCFACE_112, method=cv2.LMEDS)
        out = []
        for crop in np.asarray(crops, np.uint8):
            small = cv2.warpAffine(crop, matrix, (112, 112), flags=cv2.INTER_AREA)
            out.append(unit(self.recognizer.get_feat(small[:, :, ::-1]).reshape(-1)))
        return np.stack(out) if out else np.zeros((0, 512), np.float32)
