"""Find faces, align them to the 512 template, and put them back."""

from facefix.faces.align import TEMPLATE_512, Alignment, estimate_alignment, warp_face
from facefix.faces.analyzer import (
    BACKENDS,
    FaceAnalyzer,
    describe_backends,
    get_analyzer,
    resolve_backend,
)
from facefix.faces.paste import face_mask, paste_faces
from facefix.faces.types import LANDMARK_NAMES, Face

__all__ = [
    "BACKENDS", "LANDMARK_NAMES", "TEMPLATE_512", "Alignment", "Face", "FaceAnalyzer",
    "describe_backends", "estimate_alignment", "face_mask", "get_analyzer", "paste_faces",
    "resolve_backend", "warp_face",
]
