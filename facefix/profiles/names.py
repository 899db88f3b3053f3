"""Profile names and artifact kinds: what is allowed and why."""

from __future__ import annotations

import logging
import re
import unicodedata

from facefix.errors import UsageError

logger = logging.getLogger(__name__)


SCHEMA_VERSION = 1
MAX_NAME_LENGTH = 64
MANIFEST = "manifest.json"

TMP_PREFIX = ".tmp-"
_FORBIDDEN_CHARS = set('/\\:*?"<>|')
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul"} | {f"{p}{i}" for p in ("com", "lpt") for i in range(1, 10)}
_KIND_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
BACKEND_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_NAME_RULES = (
    "profile names are 1-64 characters of letters (any script), digits, spaces and punctuation, "
    "not starting with '.' or '_' nor ending with '.', without '/', '\\', '..', ':*?\"<>|' "
    "or control characters"
)


# --------------------------------------------------------------------------- names


def validate_name(name: str) -> str:
    """Check a person's name for use as a profile and return it NFC-normalised.

    Args:
        name: the name as the user typed it, e.g. ``"alice"``, ``"Zoë"`` or ``"李雷"``.

    Returns:
        The name in Unicode NFC form (so that "Zoë" typed on macOS and on Linux is one name).

    Raises:
        UsageError: naming the value and what is allowed.
    """
    if not isinstance(name, str):
        raise UsageError(f"profile name must be text, got {name!r}")
    norm = unicodedata.normalize("NFC", name)

    def bad(why: str) -> UsageError:
        return UsageError(f"invalid profile name {name!r}: {why}; {_NAME_RULES}")

    if not norm:
        raise bad("it is empty")
    if len(norm) > MAX_NAME_LENGTH:
        raise bad(f"it is {len(norm)} characters long")
    if norm != norm.strip():
        raise bad("it starts or ends with whitespace")
    if norm[0] == ".":
        raise bad("it starts with '.'")
    if norm[0] == "_":
        raise bad("names starting with '_' are reserved for facefix")
    if ".." in norm:
        raise bad("it contains '..'")
    if norm.endswith("."):
        raise bad("it ends with '.'")
    for ch in norm:
        if ch in _FORBIDDEN_CHARS:
            raise bad(f"it contains {ch!r}")
        if unicodedata.category(ch) in {"Cc", "Cs", "Co", "Cn", "Zl", "Zp"}:
            raise bad(f"it contains the control character {ch!r}")
    if norm.split(".")[0].lower() in _WINDOWS_RESERVED:
        raise bad("it is a reserved device name on Windows")
    return norm


def validate_kind(kind: str) -> str:
    if not isinstance(kind, str) or not _KIND_RE.match(kind) or ".." in kind:
        raise ValueError(
            f"invalid artifact kind {kind!r}: use '/'-separated parts of letters, digits, "
            "'.', '_' and '-', e.g. 'fast' or 'diffusion/sd21/unet_lora'"
        )
    return kind


