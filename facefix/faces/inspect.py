"""Find and describe the faces in a photo file (what ``facefix faces`` shows)."""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image, ImageDraw

from facefix.common.atomic import atomic_output
from facefix.faces import get_analyzer
from facefix.photos import read_photo

log = logging.getLogger(__name__)


def find_faces(path: Path, *, backend: str = "auto") -> dict:
    """Detect faces in one photo file and return a JSON-ready record.

    Args:
        path: the photo.
        backend: face backend name (``auto``, ``dlib``, ``insightface``).

    Returns:
        ``{"photo", "width", "height", "backend", "faces": [Face.to_dict(), ...]}``
        with coordinates in the upright (orientation-applied) photo.
    """
    photo = read_photo(path)
    analyzer = get_analyzer(backend)
    faces = analyzer.detect(photo.rgb8(), embed=False)
    height, width = photo.pixels.shape[:2]
    return {
        "photo": str(path),
        "width": width,
        "height": height,
        "backend": analyzer.name,
        "faces": [face.to_dict() for face in faces],
    }


def draw_faces(record: dict, target: Path) -> Path:
    """Draw the boxes, landmark dots and indices of ``record`` onto its photo."""
    image = Image.fromarray(read_photo(Path(record["photo"])).rgb8())
    pen = ImageDraw.Draw(image)
    width = max(2, round(max(image.size) / 500))
    for i, face in enumerate(record["faces"]):
        x0, y0, x1, y1 = face["box"]
        pen.rectangle([x0, y0, x1, y1], outline=(0, 255, 0), width=width)
        pen.text((x0 + 2, y0 + 2), str(i), fill=(255, 255, 0))
        for x, y in face["landmarks"].values():
            pen.ellipse([x - width, y - width, x + width, y + width], fill=(255, 0, 0))
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(target) as tmp:
        image.save(tmp, format="PNG")
    log.info("drew %d faces into %s", len(record["faces"]), target)
    return target

