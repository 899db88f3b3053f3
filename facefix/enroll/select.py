"""Choose a person's reference faces from a folder of their photos.

For each photo: find the person's face (the only face, or in a group photo
the face closest to the identity consensus of the unambiguous photos), align
it, and reject — with a reason the user can act on — what would teach the
restorer the wrong thing: no face, an ambiguous group photo, someone else, a
face too small or too blurry to hold detail, a duplicate.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from facefix.common.files import file_sha256
from facefix.errors import FacefixError, UsageError
from facefix.faces import FaceAnalyzer, estimate_alignment, warp_face
from facefix.faces.types import Face, unit
from facefix.photos import is_photo_path, read_photo

log = logging.getLogger(__name__)

#: Default smallest eye-to-mouth distance (source pixels) of a reference; the
#: 512 template has 131, so 64 means the crop is enlarged at most about 2x.
MIN_FACE = 64.0
#: A reference is too blurry below this fraction of the set's median sharpness ...
BLUR_RATIO = 0.3
#: ... or below this absolute Laplacian variance (256-px crop, 0-255 scale).
BLUR_FLOOR = 12.0
#: Two references this similar in identity *and* pixels are the same shot.
DUPLICATE_SIMILARITY = 0.995
DUPLICATE_PSNR = 32.0
#: In a group photo, the chosen face must lead the next by this much.
GROUP_MARGIN = 0.03
FEW_REFERENCES = 5


@dataclass(frozen=True, eq=False)
class Candidate:
    """One accepted reference: where it came from and its aligned crop."""

    path: Path
    sha256: str
    face: Face
    crop: np.ndarray = field(repr=False)  # uint8 (512, 512, 3)
    sharpness: float


@dataclass(frozen=True)
class Rejection:
    path: Path
    reason: str


@dataclass(frozen=True, eq=False)
class Selection:
    accepted: tuple[Candidate, ...]
    rejected: tuple[Rejection, ...]


def scan_photos(folder: Path) -> list[Path]:
    """Photo files under ``folder``, recursively, sorted; hidden entries skipped.

    Symlinked folders are not followed, so a symlink loop cannot trap the scan.
    """
    if not folder.exists():
        raise UsageError(f"{folder} does not exist; give the folder holding the person's photos")
    if folder.is_file():
        return [folder] if is_photo_path(folder) else []
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in sorted(files) if not f.startswith(".") and is_photo_path(f)]
    return found


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the crop's luma at 256 px (higher is sharper)."""
    gray = cv2.cvtColor(cv2.resize(crop, (256, 256), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def _psnr8(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def select_references(
    photos: Sequence[Path],
    analyzer: FaceAnalyzer,
    *,
    known: np.ndarray | None = None,
    known_hashes: Iterable[str] = (),
    min_face: float = MIN_FACE,
    on_photo: Callable[[Path], None] | None = None,
) -> Selection:
    """Pick the person's face in each photo and reject what should not be learned.

    Args:
        photos: candidate photo files.
        analyzer: face backend (its embeddings decide who is who).
        known: embeddings of the person's existing references (``--add``),
            which anchor the identity consensus.
        known_hashes: sha256 of files already in the profile (skipped as duplicates).
        min_face: smallest eye-to-mouth distance in source pixels.
        on_photo: called after each photo is analysed (progress).
    """
    rejected: list[Rejection] = []
    found: list[tuple[Path, str, list[Face], object]] = []
    seen = {h: "the existing profile" for h in known_hashes}
    # 1. read and detect; exact duplicate files are caught by content hash
    for path in photos:
        try:
            digest = file_sha256(path)
            if digest in seen:
                rejected.append(Rejection(path, f"duplicate of {seen[digest]}"))
                continue
            photo = read_photo(path)
            faces = analyzer.detect(photo.rgb8(), embed=True)
        except (FacefixError, OSError) as exc:
            rejected.append(Rejection(path, f"unreadable: {exc}"))
            continue
        finally:
            if on_photo:
                on_photo(path)
        seen[digest] = path.name
        if not faces:
            rejected.append(Rejection(path, "no face found"))
            continue
        found.append((path, digest, faces, photo))
    # 2. the identity consensus: the median of single-face photos (and known refs)
    anchors = [f[2][0].embedding for f in found if len(f[2]) == 1]
    if known is not None and len(known):
        anchors += list(known)
    consensus = unit(np.median(np.stack(anchors), axis=0)) if anchors else None
    # 3. pick each photo's face, then check identity, size and sharpness
    picked: list[Candidate] = []
    for path, digest, faces, photo in found:
        if len(faces) == 1:
            face = faces[0]
        elif consensus is None:
            rejected.append(Rejection(path, f"ambiguous: {len(faces)} faces and no single-face photo to tell which is the person"))
            continue
        else:
            sims = sorted(((float(f.embedding @ consensus), i) for i, f in enumerate(faces)), reverse=True)
            if sims[0][0] - sims[1][0] < GROUP_MARGIN:
                rejected.append(Rejection(path, f"ambiguous: {len(faces)} faces, none clearly the person"))
                continue
            face = faces[sims[0][1]]
        if consensus is not None and float(face.embedding @ consensus) < analyzer.outlier_similarity:
            rejected.append(Rejection(path, f"a different person (identity similarity {float(face.embedding @ consensus):.2f}, "
                                            f"needs {analyzer.outlier_similarity:.2f})"))
            continue
        if face.eye_mouth < min_face:
            rejected.append(Rejection(path, f"too small ({face.eye_mouth:.0f} px between eyes and mouth, "
                                            f"needs {min_face:.0f}; use a larger photo or --min-face)"))
            continue
        crop = warp_face(photo.rgb8(), estimate_alignment(face.landmarks))
        picked.append(Candidate(path, digest, face, crop, sharpness(crop)))
    # 4. blur is judged against the set itself, with an absolute floor
    accepted: list[Candidate] = []
    median = float(np.median([c.sharpness for c in picked])) if picked else 0.0
    for cand in picked:
        limit = max(BLUR_FLOOR, BLUR_RATIO * median)
        if cand.sharpness < limit:
            rejected.append(Rejection(cand.path, f"too blurry (sharpness {cand.sharpness:.0f}, needs {limit:.0f})"))
            continue
        twin = next((a for a in accepted if float(a.face.embedding @ cand.face.embedding) > DUPLICATE_SIMILARITY
                     and _psnr8(a.crop, cand.crop) > DUPLICATE_PSNR), None)
        if twin is not None:
            rejected.append(Rejection(cand.path, f"duplicate of {twin.path.name} (same shot)"))
            continue
        accepted.append(cand)
    order = {p: i for i, p in enumerate(photos)}
    rejected.sort(key=lambda r: order.get(r.path, 0))
    return Selection(tuple(accepted), tuple(rejected))
