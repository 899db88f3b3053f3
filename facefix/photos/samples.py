"""Locate real photos that installed packages ship, for examples and tests.

Nothing here is copied into the repository: the photos stay where their
packages put them and are found at run time.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tarfile
from pathlib import Path

from facefix.errors import FacefixError


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FacefixError(
            f"the package {package!r} is not installed; install it with 'pip install {package}'"
        )
    return Path(spec.origin).parent


def insightface_image(name: str = "t1.jpg") -> Path:
    """Path of a photo inside insightface's ``data/images`` (t1.jpg: six faces)."""
    path = _package_dir("insightface") / "data" / "images" / name
    if not path.is_file():
        raise FacefixError(f"{path} is missing from the installed insightface package")
    return path


def skimage_image(name: str = "astronaut.png") -> Path:
    """Path of a photo inside scikit-image's ``data`` folder (astronaut.png: one face)."""
    path = _package_dir("skimage") / "data" / name
    if not path.is_file():
        raise FacefixError(f"{path} is missing from the installed scikit-image package")
    return path


#: The source distribution that ships several distinct photos of one real person:
#: official White House photographs of Barack Obama (public domain, as works of the
#: US federal government) and one of Joe Biden, in ``tests/test_images``.
FACE_RECOGNITION_SDIST = "face_recognition==1.3.0"


def face_recognition_photos(cache: Path | None = None) -> Path:
    """The ``tests/test_images`` folder of face_recognition's sdist, downloaded once.

    The photos: ``obama.jpg``, ``obama2.jpg``, ``obama3.jpg`` (three distinct
    photos), ``obama_partial_face*.jpg`` (crops of obama.jpg), ``biden.jpg``.
    pip downloads the sdist from the package index into ``cache`` (default:
    facefix's cache directory), so this needs the index once.

    Raises:
        FacefixError: the download failed (names the command to retry).
    """
    from facefix.common import paths

    cache = cache or paths.cache_dir() / "eval-photos"
    folder = cache / "face_recognition-1.3.0" / "tests" / "test_images"
    if (folder / "obama2.jpg").is_file():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(cache),
               FACE_RECOGNITION_SDIST]
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    archives = sorted(cache.glob("face_recognition-1.3.0.tar.gz"))
    if done.returncode != 0 or not archives:
        raise FacefixError(f"could not download {FACE_RECOGNITION_SDIST} from the package index "
                           f"({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no archive'}); "
                           f"check the connection and retry, or run: {' '.join(command)}")
    with tarfile.open(archives[0]) as tar:
        members = [m for m in tar.getmembers() if "/tests/test_images/" in m.name and m.isfile()]
        tar.extractall(cache, members=members, filter="data")
    return folder


def make_variants(source: Path, folder: Path, count: int = 6, *, seed: int = 0) -> list[Path]:
    """Write ``count`` re-framed, re-lit copies of one photo, as a demo reference set.

    They stand in for "several photos of one person" where only one photo of
    that person is at hand (the quickstart, tests): each copy is cropped,
    rotated, scaled, mirrored and re-exposed differently, then saved as JPEG.
    They are *not* independent photos, and results measured on them say so.

    Args:
        source: the photo to vary.
        folder: where the JPEGs go (created).
        count: how many copies.
        seed: for reproducible variants.
    """
    import cv2
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    with Image.open(source) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    h, w = rgb.shape[:2]
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(count):
        angle = rng.uniform(-8, 8)
        scale = rng.uniform(0.9, 1.1)
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        matrix[:, 2] += rng.uniform(-0.05, 0.05, 2) * (w, h)
        img = cv2.warpAffine(rgb, matrix, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
        if rng.random() < 0.5:
            img = img[:, ::-1]
        gain = rng.uniform(0.85, 1.15, 3).astype(np.float32) * rng.uniform(0.85, 1.15)
        img = np.clip(img * gain, 0, 1) ** rng.uniform(0.85, 1.15)
        path = folder / f"{source.stem}_{i:02d}.jpg"
        Image.fromarray((img * 255 + 0.5).astype(np.uint8)).save(path, quality=int(rng.integers(88, 97)))
        written.append(path)
    return written
