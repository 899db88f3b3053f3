"""The errors facefix raises on purpose.

Every message names the offending value (a file, a person, a model id) and
says how to fix it. The CLI catches :class:`FacefixError` in one place, prints
one red line and exits non-zero; ``FACEFIX_DEBUG=1`` re-raises instead.
"""

from __future__ import annotations


class FacefixError(Exception):
    """Base class of every error facefix raises for a user to read."""

    exit_code = 1


class UsageError(FacefixError):
    """The command was called wrongly (bad option combination, bad name)."""

    exit_code = 2


class PhotoError(FacefixError):
    """A photo could not be read or written."""


class FaceError(FacefixError):
    """Face analysis failed or a backend is unusable."""


class ModelError(FacefixError):
    """Weights are missing, corrupt or of the wrong kind."""


class ProfileError(FacefixError):
    """A profile is missing, invalid or could not be written."""
