"""facefix: restore faces in personal photo libraries with per-person restorers."""

__version__ = "0.1.0"
