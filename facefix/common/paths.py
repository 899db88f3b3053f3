"""Where facefix keeps its state, and whether it may touch the network.

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


def offline() -> bool:
    """True when the user asked for no network access at all."""
    for name in ("FACEFIX_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}:
            return True
    return False
