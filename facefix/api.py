"""facefix's public Python API: the front door each workflow has, the one the CLI calls too.

    import facefix

    facefix.enroll("alice", Path("alice_photos"), facefix.EnrollOptions(budget_minutes=10))
    summary = facefix.restore_paths([Path("old_photo.jpg")], output=Path("restored"),
                                    options=facefix.RestoreOptions(person="alice"))
    facefix.adapt(Path("album"), name="album-1970s")
    facefix.learn(Path("~/Pictures"), facefix.LearnOptions(budget_minutes=20))

Every request and option is a frozen dataclass carrying everything that
changes an output; errors are :class:`facefix.errors.FacefixError` subclasses
whose message names the file and the fix.
"""

from __future__ import annotations

from facefix.adapt.album import AdaptCallbacks, AdaptResult
from facefix.adapt.album import adapt_album as adapt
from facefix.enroll.api import EnrollCallbacks, EnrollOptions, EnrollResult, enroll
from facefix.enroll.forget import remove_person
from facefix.learn.api import LearnCallbacks, LearnOptions, LearnResult, learn
from facefix.restore.api import (
    PlannedPhoto,
    RestoreRequest,
    RestoreSession,
    RestoreSummary,
    restore_paths,
)
from facefix.restore.pipeline import RestoreOptions

__all__ = [
    "AdaptCallbacks",
    "AdaptResult",
    "EnrollCallbacks",
    "EnrollOptions",
    "EnrollResult",
    "LearnCallbacks",
    "LearnOptions",
    "LearnResult",
    "PlannedPhoto",
    "RestoreOptions",
    "RestoreRequest",
    "RestoreSession",
    "RestoreSummary",
    "adapt",
    "enroll",
    "learn",
    "remove_person",
    "restore_paths",
]
