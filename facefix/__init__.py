"""facefix: restore faces in personal photo libraries with per-person restorers.

The public API (:mod:`facefix.api`) is available here, loaded on first use so
that ``import facefix.errors`` or ``facefix --version`` stay light::

    import facefix
    facefix.restore_paths(["old_photo.jpg"], output=Path("restored"))
"""

__version__ = "0.1.0"

_API = frozenset({
    "AdaptCallbacks", "AdaptResult", "EnrollCallbacks", "EnrollOptions", "EnrollResult", "LearnCallbacks",
    "LearnOptions", "LearnResult", "PlannedPhoto", "RestoreOptions", "RestoreRequest", "RestoreSession",
    "RestoreSummary", "adapt", "enroll", "learn", "remove_person", "restore_paths",
})


def __getattr__(name: str):
    if name in _API:
        from facefix import api

        return getattr(api, name)
    raise AttributeError(f"module 'facefix' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
