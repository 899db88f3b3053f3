"""Face restorers: aligned 512x512 crops in, restored crops out, batched."""

from facefix.restorers.base import Restorer

__all__ = ["Restorer"]
