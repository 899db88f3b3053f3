"""Which torch device and which weight dtype: decided here, once, for every engine and trainer."""

from __future__ import annotations


def resolve_device(device: str = "auto") -> str:
    """``auto`` → cuda when available, else cpu; anything else as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def inference_dtype(device) -> "torch.dtype":  # noqa: F821 (torch is imported lazily)
    """The dtype diffusion weights are loaded in: fp16 on CUDA, fp32 elsewhere (CPU fp16 is slow and inexact)."""
    import torch

    return torch.float16 if str(device).startswith("cuda") else torch.float32
