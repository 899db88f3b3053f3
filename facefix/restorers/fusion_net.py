"""The learned reference fusion: a small CNN that decides, pixel by pixel, how much
of each warped reference's detail a pre-cleaned face takes.

GFRNet and ASFFNet learn where a warped guide can be trusted; this is the CPU
version of that idea, small enough to train at enroll from the person's own
references (:mod:`facefix.training.fusion_train`) and to run in about 0.1 s per
face on one core (plus 0.3 s for the detail bands of a 512-px face and three
guides). It does not paint pixels: it predicts *coefficients*.

* Each image (the pre-cleaned face ``y`` and the ``k`` warped references ``g_i``)
  is split into detail bands by differences of Gaussians whose widths
  (:attr:`FusionConfig.bands`, in 512-template pixels) scale with the working size.
* A small U-Net looks at the brightness of the face and of each reference (and
  their differences), on a 64 x 64 grid whatever the face's size, with the face's estimated
  blur, each reference's pose/expression distance and the pixel's place in the
  aligned face as extra channels, and predicts for every band ``b`` one weight
  ``alpha[i, b]`` per reference and one ``beta[b]`` for the face's own detail.
* The result is ``y + sum_b beta_b * y_b + sum_{i,b} alpha_{i,b} * (g_{i,b} - y_b)``
  with the weights bilinearly enlarged to the face's size: the face's coarse
  shape and colour below the widest band are never touched, a reference's detail
  comes in only where the network learned it agrees, and the face's own detail
  (sharpened JPEG blocks included) can be turned down. All weights start at zero:
  an untrained network returns the pre-cleaned face.

Inference only. Weights are safetensors with the settings as JSON metadata
(``format`` = :data:`FORMAT`): :func:`fusion_state` / :func:`load_fusion` give and
take (tensors, settings), as a profile artifact holds them; :func:`fusion_to_bytes` /
:func:`fusion_from_bytes` the file's bytes; :func:`save_fusion` / :func:`fusion_from_file`
write and read a file. Measured in docs/references.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facefix.errors import ModelError
from facefix.restorers.base import config_from_dict, config_to_dict

FORMAT = "facefix-fusion"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class FusionConfig:
    """Shape of the fusion network.

    Args:
        guides: how many warped references it takes (fewer are padded with the face itself,
            whose difference to the face is zero, so a padded slot changes nothing).
        bands: edges of the detail bands, Gaussian sigmas in 512-template pixels, finest
            first; detail coarser than the last is the face's own.
        channels: widths of the U-Net's three levels.
        grid: the weights are predicted on a grid of this side (whatever the face's size, so
            the network sees a face at one scale: 64 = 8 template pixels a cell), then
            bilinearly enlarged.
    """

    guides: int = 3
    bands: tuple[float, ...] = (1.5, 4.0, 10.0)
    channels: tuple[int, ...] = (24, 32, 48)
    grid: int = 64

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FusionConfig":
        return config_from_dict(cls, data, "fusion")

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @property
    def in_channels(self) -> int:
        # face luma, per guide: luma and luma difference, per guide: its distance; blur; x, y
        return 1 + 3 * self.guides + 1 + 2

    @property
    def out_channels(self) -> int:
        return (self.guides + 1) * len(self.bands)


#: A tiny shape for tests.
TINY_FUSION = FusionConfig(guides=2, bands=(1.5, 4.0), channels=(8, 8, 8), grid=16)

_LUMA = (0.299, 0.587, 0.114)


def detail_bands(img: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """Difference-of-Gaussian bands of a float32 (S, S, 3) image, finest first: (B, 3, S, S).

    ``edges`` are sigmas in 512-template pixels (scaled to S). Made with OpenCV, in
    the data (no gradient flows through them), identically for training and restore.
    """
    import cv2

    img = np.ascontiguousarray(img, np.float32)
    scale = img.shape[0] / 512.0
    levels = [img] + [cv2.GaussianBlur(img, (0, 0), s * scale, borderType=cv2.BORDER_REFLECT) for s in edges]
    return np.stack([np.transpose(a - b, (2, 0, 1)) for a, b in zip(levels, levels[1:])])


def luma(x: torch.Tensor) -> torch.Tensor:
    """Brightness (N, 1, H, W) of (N, 3, H, W) RGB (the network's and its training loss's)."""
    w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


class _Block(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(ch, ch, 3, padding=1)
        self.b = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(F.leaky_relu(self.a(x), 0.2))


class FusionNet(nn.Module):
    """The fusion network (see the module's notes).

    ``forward(face, guides, blur, distance, own, theirs)``: face (N, 3, S, S)
    pre-cleaned, guides (N, k, 3, S, S) warped references, blur (N,) estimated blur in
    512-px sigma, distance (N, k) their pose/expression distances, and the detail
    bands of the face and guides; returns (N, 3, S, S).
    Any S from 16 up (512: the template).
    """

    def __init__(self, config: FusionConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or FusionConfig()
        c0, c1, c2 = config.channels
        self.head = nn.Sequential(nn.Conv2d(config.in_channels, c0, 3, padding=1), nn.LeakyReLU(0.2),
                                  _Block(c0))
        self.down1 = nn.Conv2d(c0, c1, 4, stride=2, padding=1)
        self.enc1 = _Block(c1)
        self.down2 = nn.Conv2d(c1, c2, 4, stride=2, padding=1)
        self.mid = nn.Sequential(_Block(c2), _Block(c2))
        self.up2 = nn.Conv2d(c2, c1, 1)
        self.dec1 = nn.Sequential(nn.Conv2d(2 * c1, c1, 3, padding=1), nn.LeakyReLU(0.2), _Block(c1))
        self.up1 = nn.Conv2d(c1, c0, 1)
        self.dec0 = nn.Sequential(nn.Conv2d(2 * c0, c0, 3, padding=1), nn.LeakyReLU(0.2), _Block(c0))
        self.tail = nn.Conv2d(c0, config.out_channels, 3, padding=1)
        nn.init.zeros_(self.tail.weight)  # start as "take nothing": the pre-cleaned face
        nn.init.zeros_(self.tail.bias)

    def weights(self, face: torch.Tensor, guides: torch.Tensor, blur: torch.Tensor,
                distance: torch.Tensor) -> torch.Tensor:
        """The per-band weights (N, (k + 1) * bands, grid, grid): guides' first, the face's last."""
        cfg = self.config
        n, k = guides.shape[:2]
        size = min(cfg.grid, face.shape[-1])
        small = lambda x: F.adaptive_avg_pool2d(x, size)  # noqa: E731
        y = small(luma(face))
        g = small(luma(guides.reshape(n * k, *guides.shape[2:]))).view(n, k, size, size)
        coords = torch.linspace(-1, 1, size, device=face.device, dtype=face.dtype)
        gy, gx = torch.meshgrid(coords, coords, indexing="ij")
        const = lambda v: v.view(n, -1, 1, 1).expand(-1, -1, size, size)  # noqa: E731
        x = torch.cat([y - 0.5, g - 0.5, (g - y) * 4, const(distance.to(face.dtype)),
                       const(torch.log(blur.to(face.dtype).clamp(min=0.5)) / math.log(16.0)),
                       gx.expand(n, 1, -1, -1), gy.expand(n, 1, -1, -1)], 1)
        h0 = self.head(x)
        h1 = self.enc1(F.leaky_relu(self.down1(h0), 0.2))
        h2 = self.mid(F.leaky_relu(self.down2(h1), 0.2))
        d1 = self.dec1(torch.cat([F.interpolate(self.up2(h2), size=h1.shape[-2:], mode="bilinear",
                                                align_corners=False), h1], 1))
        d0 = self.dec0(torch.cat([F.interpolate(self.up1(d1), size=h0.shape[-2:], mode="bilinear",
                                                align_corners=False), h0], 1))
        return self.tail(d0)

    def forward(self, face: torch.Tensor, guides: torch.Tensor, blur: torch.Tensor, distance: torch.Tensor,
                own: torch.Tensor, theirs: torch.Tensor, window: tuple[int, int, int] | None = None) -> torch.Tensor:
        """``own`` (N, B, 3, S, S) and ``theirs`` (N, k, B, 3, S, S): :func:`detail_bands` of
        the face and of each guide. With ``window`` = (top, left, side) only that square of
        the face is made (training): ``own`` and ``theirs`` then cover just the window,
        while the weights still come from the whole face."""
        cfg = self.config
        n, k = guides.shape[:2]
        if k != cfg.guides:
            raise ModelError(f"the fusion network takes {cfg.guides} guides, got {k}; pad with the face")
        size = face.shape[-1]
        w = F.interpolate(self.weights(face, guides, blur, distance), size=(size, size), mode="bilinear",
                          align_corners=False)
        if window is not None:
            top, left, side = window
            w = w[..., top:top + side, left:left + side]
            face = face[..., top:top + side, left:left + side]
        nb = len(cfg.bands)
        out = face
        for b in range(nb):
            diff = theirs[:, :, b] - own[:, None, b]
            alpha = w[:, b * k:(b + 1) * k, None]  # (N, k, 1, S, S)
            beta = w[:, k * nb + b, None]  # (N, 1, S, S)
            out = out + beta * own[:, b] + (alpha * diff).sum(1)
        return out


# --------------------------------------------------------------------------- file format


def fusion_settings(config: FusionConfig, **extra: Any) -> dict[str, Any]:
    return {"format": FORMAT, "version": FORMAT_VERSION, "config": config.to_dict(), **extra}


def load_fusion(tensors: dict[str, torch.Tensor], settings: dict[str, Any]) -> "FusionNet":
    """A :class:`FusionNet` from its tensors and settings (what :func:`fusion_state` gives)."""
    if settings.get("format") != FORMAT:
        raise ModelError(f"settings are for {settings.get('format')!r}, not {FORMAT!r}; "
                         "pass a reference-fusion weight file")
    if int(settings.get("version", 0)) > FORMAT_VERSION:
        raise ModelError(f"reference-fusion format version {settings.get('version')} is newer than this "
                         f"facefix understands ({FORMAT_VERSION}); upgrade facefix")
    net = FusionNet(FusionConfig.from_dict(settings["config"]))
    try:
        net.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"reference-fusion weights do not match their settings ({exc}); re-run enroll") from exc
    net.settings = {k: v for k, v in settings.items() if k not in ("format", "version", "config")}
    return net.eval()


def fusion_state(net: FusionNet, **extra: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    return tensors, fusion_settings(net.config, **{**getattr(net, "settings", {}), **extra})


def fusion_to_bytes(net: FusionNet, **extra: Any) -> bytes:
    """The weight file's bytes (safetensors, settings as JSON metadata)."""
    from safetensors.torch import save

    tensors, settings = fusion_state(net, **extra)
    return save(tensors, metadata={"facefix": json.dumps(settings)})


def fusion_from_bytes(data: bytes, what: str = "reference-fusion weights") -> FusionNet:
    """Read what :func:`fusion_to_bytes` wrote."""
    from safetensors.torch import load

    try:
        meta = _metadata(data)
        settings = json.loads(meta["facefix"])
        tensors = load(data)
    except (KeyError, ValueError, OSError, RuntimeError) as exc:
        raise ModelError(f"{what} is not a facefix reference-fusion file ({exc}); re-run enroll") from exc
    return load_fusion(tensors, settings)


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of safetensors bytes."""
    if len(data) < 8:
        raise ValueError("too short")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise ValueError("header length past the end")
    return json.loads(data[8:8 + n]).get("__metadata__") or {}


def save_fusion(net: FusionNet, path: str | Path, **extra: Any) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(fusion_to_bytes(net, **extra))
    tmp.replace(path)


def fusion_from_file(path: str | Path) -> FusionNet:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"no reference-fusion weights at {path}; run 'facefix enroll' to make them")
    return fusion_from_bytes(path.read_bytes(), what=str(path))


@torch.inference_mode()
def apply_fusion(net: FusionNet, face: np.ndarray, guides: list[np.ndarray], blur: float,
                 distance: np.ndarray) -> np.ndarray:
    """Run the network on one face: float32 (S, S, 3) face, up to ``k`` warped references
    (best first; missing ones are the face itself), blur (512-px sigma), their distances."""
    k = net.config.guides
    guides = list(guides[:k]) + [face] * (k - len(guides[:k]))
    dist = np.zeros(k, np.float32)
    dist[: min(k, len(distance))] = np.asarray(distance, np.float32)[:k]
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32)).permute(2, 0, 1)  # noqa: E731
    edges = net.config.bands
    own = torch.from_numpy(detail_bands(face, edges))[None]
    theirs = torch.from_numpy(np.stack([detail_bands(g, edges) for g in guides]))[None]
    out = net(t(face)[None], torch.stack([t(g) for g in guides])[None],
              torch.tensor([blur], dtype=torch.float32), torch.from_numpy(dist)[None], own, theirs)
    return out[0].permute(1, 2, 0).clamp(0, 1).numpy()
