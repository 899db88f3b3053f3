"""Where facefix keeps its state, whether it may touch the network: every environment variable facefix reads is read here.

``FACEFIX_HOME`` overrides both the data directory (profiles) and the cache
directory (generated data), as ``LLM_USER_PATH`` does for ``llm``. Model
weights are never kept here: they stay in the Hugging Face cache or in a
directory the user names.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "facefix"


def home_override() -> Path | None:
    value = os.environ.get("FACEFIX_HOME", "").strip()
    return Path(value).expanduser() if value else None


def data_dir() -> Path:
    """Directory for profiles and adapted restorers (not created here)."""
    home = home_override()
    return home / "data" if home else Path(platformdirs.user_data_dir(APP_NAME))


def cache_dir() -> Path:
    """Directory for regenerable data: analyzer models, generated faces."""
    home = home_override()
    return home / "cache" if home else Path(platformdirs.user_cache_dir(APP_NAME))


def pseudo_target_cache() -> Path:
    """Where album adaptation keeps its pseudo-targets: restored copies of album faces,
    content-addressed and shared by all albums. Regenerable; ``profiles rm`` deletes it
    whole, since it cannot tell whose faces they are."""
    return cache_dir() / "adapt" / "pseudo_targets"


_TRUE = {"1", "true", "yes", "on"}

#: Any of these set to 1/true/yes/on: no network access at all. ``TRANSFORMERS_OFFLINE``
#: is here because huggingface_hub itself treats it as ``HF_HUB_OFFLINE`` (its
#: ``constants.HF_HUB_OFFLINE``): without it, a pull would start and fail inside
#: the hub client with a misleading message.
OFFLINE_VARIABLES = ("FACEFIX_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def offline_variables() -> list[str]:
    """The offline variables that are set (empty: the network may be used)."""
    return [n for n in OFFLINE_VARIABLES if _flag(n)]


def offline() -> bool:
    """True when the user asked for no network access at all."""
    return bool(offline_variables())


def debug_enabled() -> bool:
    """``FACEFIX_DEBUG=1``: show tracebacks instead of one-line errors."""
    return os.environ.get("FACEFIX_DEBUG", "").strip() not in {"", "0", "false", "no"}


def model_set_override() -> str | None:
    """``FACEFIX_MODEL_SET``: the diffusion model set to use when none is named."""
    return os.environ.get("FACEFIX_MODEL_SET", "").strip() or None


def hf_cache() -> Path:
    """The Hugging Face hub cache: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else the hub library's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub.constants import HF_HUB_CACHE

    return Path(HF_HUB_CACHE)


#: The largest photo (in pixels) facefix decodes unless told otherwise: a guard against decompression bombs.
MAX_PIXELS_ENV = "FACEFIX_MAX_PIXELS"


def max_pixels_override() -> int | None:
    """``FACEFIX_MAX_PIXELS``: a larger (or smaller) decode limit, or None when unset.

    Raises:
        UsageError: the value is not a positive whole number.
    """
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        from facefix.errors import UsageError

        raise UsageError(f"{MAX_PIXELS_ENV}={raw!r} is not a positive whole number of pixels; "
                         f"set it like {MAX_PIXELS_ENV}=500000000 or unset it")
    return value
