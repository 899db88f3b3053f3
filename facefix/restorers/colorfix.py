"""Colour fixes: give a restored face the colours of its input again.

Diffusion restorers hallucinate detail well but drift in colour (users'
complaint #2: shifted or washed-out faces). Both fixes here keep the restored
image's detail and take the reference's colour:

* :func:`wavelet_color_fix` (StableSR / DiffBIR): split both images into a
  low-frequency part (a stack of dilated 3x3 blurs) and the high-frequency
  rest; keep the restored high frequencies, take the reference's low ones.
* :func:`adain_color_fix`: match each channel's mean and standard deviation
  to the reference's. Cheaper, global, keeps local shading of the result.

Every function takes numpy arrays (..., H, W, 3) in [0, 1] or torch tensors
(N, 3, H, W) and returns the same kind it was given.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["adain_color_fix", "color_fix", "wavelet_color_fix", "wavelet_decompose"]

_KERNEL = torch.tensor([[1 / 16, 1 / 8, 1 / 16], [1 / 8, 1 / 4, 1 / 8], [1 / 16, 1 / 8, 1 / 16]])


def _blur(image: torch.Tensor, dilation: int) -> torch.Tensor:
    channels = image.shape[1]
    kernel = _KERNEL.to(image.dtype).to(image.device).expand(channels, 1, 3, 3)
    # Replicate padding keeps the border colours instead of darkening them; it
    # needs pad < size, so very small images clamp the dilation.
    pad = min(dilation, image.shape[-1] - 1, image.shape[-2] - 1)
    if pad < 1:
        return image
    padded = F.pad(image, (pad, pad, pad, pad), mode="replicate")
    return F.conv2d(padded, kernel, groups=channels, dilation=pad)


def wavelet_decompose(image: torch.Tensor, levels: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Split an (N, C, H, W) image into (high frequencies, low frequencies).

    Args:
        image: the image, any range.
        levels: number of dilated blurs (dilation 1, 2, 4, ...); 5 reaches
            structures of about 64 px, the scale of colour casts on a 512 face.

    Returns:
        ``(high, low)`` with ``high + low == image``.
    """
    low = image
    high = torch.zeros_like(image)
    for level in range(levels):
        blurred = _blur(low, 2**level)
        high = high + (low - blurred)
        low = blurred
    return high, low


def _as_nchw(image) -> tuple[torch.Tensor, callable]:
    """Turn numpy (..., H, W, 3) or torch (N, C, H, W) into float NCHW and a way back."""
    if isinstance(image, torch.Tensor):
        if image.ndim != 4:
            raise ValueError(f"expected a tensor of shape (N, C, H, W), got {tuple(image.shape)}")
        dtype = image.dtype
        return image.float(), lambda t: t.to(dtype)
    array = np.asarray(image)
    if array.ndim not in (3, 4) or array.shape[-1] != 3:
        raise ValueError(f"expected an array of shape ([N,] H, W, 3), got {array.shape}")
    single = array.ndim == 3
    dtype = array.dtype if array.dtype.kind == "f" else np.float32
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    tensor = tensor[None] if single else tensor
    tensor = tensor.permute(0, 3, 1, 2)

    def back(t: torch.Tensor) -> np.ndarray:
        out = t.permute(0, 2, 3, 1).cpu().numpy().astype(dtype, copy=False)
        return out[0] if single else out

    return tensor, back


def _check_pair(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    if content.shape[0] != style.shape[0] or content.shape[1] != style.shape[1]:
        raise ValueError(
            f"colour fix needs matching batches and channels: {tuple(content.shape)} vs {tuple(style.shape)}"
        )
    if content.shape[-2:] != style.shape[-2:]:
        style = F.interpolate(style, size=content.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
    return style


def wavelet_color_fix(content, style, *, levels: int = 5, clip: bool = True):
    """Keep ``content``'s high frequencies and take ``style``'s low frequencies.

    Args:
        content: the restored image(s).
        style: the reference colours (the degraded input); resized to
            ``content`` if it differs in size.
        levels: wavelet levels, see :func:`wavelet_decompose`.
        clip: clamp the result to [0, 1].

    Returns:
        The colour-fixed image, same type and shape as ``content``.
    """
    content_t, back = _as_nchw(content)
    style_t, _ = _as_nchw(style)
    style_t = _check_pair(content_t, style_t.to(content_t.device))
    high, _ = wavelet_decompose(content_t, levels)
    _, low = wavelet_decompose(style_t, levels)
    result = high + low
    return back(result.clamp(0, 1) if clip else result)


def adain_color_fix(content, style, *, eps: float = 1e-5, clip: bool = True):
    """Match each channel's mean and standard deviation to ``style``'s.

    Args:
        content: the restored image(s).
        style: the reference colours.
        eps: added to the variance before the square root.
        clip: clamp the result to [0, 1].

    Returns:
        The colour-fixed image, same type and shape as ``content``.
    """
    content_t, back = _as_nchw(content)
    style_t, _ = _as_nchw(style)
    style_t = _check_pair(content_t, style_t.to(content_t.device))
    c_mean = content_t.mean(dim=(2, 3), keepdim=True)
    c_std = (content_t.var(dim=(2, 3), keepdim=True, unbiased=False) + eps).sqrt()
    s_mean = style_t.mean(dim=(2, 3), keepdim=True)
    s_std = (style_t.var(dim=(2, 3), keepdim=True, unbiased=False) + eps).sqrt()
    result = (content_t - c_mean) / c_std * s_std + s_mean
    return back(result.clamp(0, 1) if clip else result)


def color_fix(content, style, method: str = "wavelet"):
    """Apply the colour fix named ``method``: ``wavelet``, ``adain`` or ``none``."""
    if method == "wavelet":
        return wavelet_color_fix(content, style)
    if method == "adain":
        return adain_color_fix(content, style)
    if method == "none":
        return content
    raise ValueError(f"unknown colour fix {method!r}; use 'wavelet', 'adain' or 'none'")
