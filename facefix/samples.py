"""Locate real photos that installed packages ship, for examples and tests.

Nothing here is copied into the repository: the photos stay where their
packages put them and are found at run time.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import FacefixError


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
