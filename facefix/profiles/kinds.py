"""The kinds of artifact a profile (or the generic store, or an adapted restorer) holds, named in one place.

A kind is a slash-separated name (``profiles.names`` validates it); the
stores keep one current artifact per kind.
"""

from __future__ import annotations

#: The fast CPU restorer's weights (a person's, the generic model, an adapted one).
FAST_KIND = "fast"


def unet_lora_kind(model_set_key: str) -> str:
    """Dual-Pivot stage 1: the UNet LoRA around the person's text pivot, for one model set."""
    return f"diffusion/{model_set_key}/unet_lora"


def guide_kind(model_set_key: str) -> str:
    """Dual-Pivot stage 2: the guide adapter tuned around the frozen personalized UNet, for one model set."""
    return f"diffusion/{model_set_key}/guide"
