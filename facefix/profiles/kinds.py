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


def kind_label(kind: str) -> str:
    """How messages name an artifact of this kind ("fast model", "diffusion guide (sd15-tile)")."""
    if kind == FAST_KIND:
        return "fast model"
    if kind == FUSION_KIND:
        return "reference fusion"
    parts = kind.split("/")
    if len(parts) == 3 and parts[0] == "diffusion":
        role = {"unet_lora": "diffusion generator", "guide": "diffusion guide"}.get(parts[2], f"diffusion {parts[2]}")
        return f"{role} ({parts[1]})"
    return f"{kind!r} artifact"


def scratch_of(kind: str) -> str:
    """The training scratch (``work/<scratch>``) that holds an artifact's resume checkpoints:
    a diffusion adapter's is its model set's Dual-Pivot run, every other kind's its own."""
    parts = kind.split("/")
    return "/".join(parts[:2]) if len(parts) == 3 and parts[0] == "diffusion" else kind


#: A person's learned reference fusion (facefix.enroll.fusion; facefix.restorers.fusion_net reads it).
FUSION_KIND = "fusion"
