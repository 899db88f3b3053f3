"""The fast restorer: a compact residual U-Net that runs on a CPU.

It restores aligned 512 face crops in well under a second on two cores and
is what every enrolled person gets (a generic model trained from all
references, and a per-person model fine-tuned from it). Design, in short:

* space-to-depth by 2 at the input, so the widest level works at 256 px; four
  levels with residual blocks and a few blocks at 1/16 of the size, where a
  whole face fits in the receptive field; depth-to-space back to 512;
* it predicts a *residual* on the degraded input, and the lowest frequencies
  of the result are taken from the input (``x − U(D(x)) + U(D(input))``, D/U
  = area down / bilinear up by ``color_lock``), so the face keeps the input's
  colours and tone by construction; grayscale crops come out grayscale;
* bf16 autocast on CPUs that have bf16 instructions (AVX512-BF16 / AMX),
  fp32 elsewhere; optional flip ensembling at test time.

Build apart from load: :meth:`FastRestorer.build` wires a fresh network,
:meth:`FastRestorer.load` takes tensors + settings (:meth:`state` gives them
back), :meth:`FastRestorer.from_file` / :meth:`save` use safetensors with the
settings as JSON metadata.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facefix.common.atomic import atomic_output
from facefix.errors import ModelError, UsageError
from facefix.restorers.base import check_crops, config_from_dict, config_to_dict

logger = logging.getLogger(__name__)

FORMAT = "facefix-fast"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class FastConfig:
    """Shape of the fast restorer. The defaults are the shipped model size.

    Args:
        channels: Width of each U-Net level (the first works at 1/``unshuffle`` size).
        blocks: Residual blocks per level, encoder side (the decoder mirrors them).
        mid_blocks: Residual blocks at the bottom level.
        unshuffle: Space-to-depth factor at the input (1 = none).
        color_lock: Down-sampling factor of the low-pass whose content is taken
            from the input (0 = off). 16 keeps 32-px-scale colour and tone of a 512 face.
        position: Side of a learned map of bottom-level features indexed by where a pixel
            is in the aligned face (0 = off). Aligned faces put each part at one place,
            so the map holds what the face looks like there: a structural prior in the
            generic model and the person's own features in theirs. 32 = one cell per
            16 px of a 512 face (the bottom level's own resolution). Off by default:
            at the default budget it measured no better (docs/fast_restorer.md).
    """

    channels: tuple[int, ...] = (32, 64, 128, 192)
    blocks: tuple[int, ...] = (1, 1, 2, 2)
    mid_blocks: int = 2
    unshuffle: int = 2
    color_lock: int = 16
    position: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FastConfig":
        return config_from_dict(cls, data, "fast restorer", LEGACY_DEFAULTS)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


#: Values for settings that weights made before the setting existed do not record.
LEGACY_DEFAULTS: dict[str, Any] = {"position": 0}

#: A tiny shape for tests: builds and runs in milliseconds.
TINY_CONFIG = FastConfig(channels=(16, 16, 16, 16), blocks=(1, 1, 1, 1), mid_blocks=1, position=8)


class ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        self.act = nn.LeakyReLU(0.2, inplace=True)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity (SkipInit):
        nn.init.zeros_(self.conv2.bias)  # a deep stack then trains from the first step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class FastNet(nn.Module):
    """The residual U-Net. Input and output: (N, 3, H, W) in [0, 1], H and W divisible
    by ``unshuffle * 2 ** (levels - 1)`` and by ``color_lock``."""

    def __init__(self, config: FastConfig) -> None:
        super().__init__()
        if len(config.channels) != len(config.blocks):
            raise UsageError(
                f"FastConfig channels {config.channels} and blocks {config.blocks} "
                "need the same length (one entry per level)"
            )
        self.config = config
        ch, u = config.channels, config.unshuffle
        self.head = nn.Conv2d(3 * u * u, ch[0], 3, padding=1)
        self.enc = nn.ModuleList(
            nn.Sequential(*[ResBlock(c) for _ in range(n)]) for c, n in zip(ch, config.blocks)
        )
        self.down = nn.ModuleList(nn.Conv2d(a, b, 4, stride=2, padding=1) for a, b in zip(ch, ch[1:]))
        self.mid = nn.Sequential(*[ResBlock(ch[-1]) for _ in range(config.mid_blocks)])
        self.up = nn.ModuleList(nn.Conv2d(b, a * 4, 1) for a, b in zip(ch, ch[1:]))
        self.fuse = nn.ModuleList(nn.Conv2d(2 * a, a, 1) for a in ch[:-1])
        self.dec = nn.ModuleList(
            nn.Sequential(*[ResBlock(c) for _ in range(n)]) for c, n in zip(ch[:-1], config.blocks[:-1])
        )
        # Zero at the start: a fresh network behaves as one without the map.
        self.position = nn.Parameter(torch.zeros(1, ch[-1], config.position, config.position)) if config.position else None
        self.tail = nn.Conv2d(ch[0], 3 * u * u, 3, padding=1)
        self.act = nn.LeakyReLU(0.2, inplace=True)
        nn.init.zeros_(self.tail.weight)  # start as the identity: output = input
        nn.init.zeros_(self.tail.bias)
        # NHWC: oneDNN's (and cuDNN's) fast convolution layout. On the AVX512-BF16
        # CPU it made a bf16 training step 1.3x faster (docs/fast_restorer.md).
        self.to(memory_format=torch.channels_last)

    @property
    def multiple(self) -> int:
        m = self.config.unshuffle * 2 ** (len(self.config.channels) - 1)
        return int(np.lcm(m, max(self.config.color_lock, 1)))

    def forward(self, x: torch.Tensor, box: torch.Tensor | None = None) -> torch.Tensor:
        """Restore ``x``; ``box`` (N, 4) says where each input lies in its aligned face.

        ``box`` rows are (x0, y0, x1, y1) as fractions of the face's width and height:
        training windows pass theirs; ``None`` means every input is a whole face.
        """
        u = self.config.unshuffle
        h = F.pixel_unshuffle(x, u) if u > 1 else x
        h = self.act(self.head(h.contiguous(memory_format=torch.channels_last)))
        skips = []
        for i, enc in enumerate(self.enc):
            h = enc(h)
            if i < len(self.down):
                skips.append(h)
                h = self.act(self.down[i](h))
        if self.position is not None:
            h = h + sample_position(self.position, box, h.shape).to(h.dtype)
        h = self.mid(h)
        for i in reversed(range(len(self.dec))):
            h = F.pixel_shuffle(self.up[i](h), 2)
            h = self.act(self.fuse[i](torch.cat([h, skips[i]], dim=1)))
            h = self.dec[i](h)
        r = self.tail(h)
        r = F.pixel_shuffle(r, u) if u > 1 else r
        out = x + r.float()
        return lock_low_frequencies(out, x, self.config.color_lock)


def sample_position(table: torch.Tensor, box: torch.Tensor | None, shape: torch.Size) -> torch.Tensor:
    """The position map's values at the cell centres of an (N, C, h, w) feature map covering ``box``.

    Bilinear between the map's own cells (a window on the 16-px grid reads cells
    exactly); ``box`` None = whole faces.
    """
    n, _, h, w = shape
    if box is None and (h, w) == tuple(table.shape[-2:]):
        return table.expand(n, -1, -1, -1)
    if box is None:
        box = torch.tensor([[0.0, 0.0, 1.0, 1.0]], device=table.device).expand(n, 4)
    box = box.to(device=table.device, dtype=torch.float32)
    fx = (torch.arange(w, device=table.device, dtype=torch.float32) + 0.5) / w
    fy = (torch.arange(h, device=table.device, dtype=torch.float32) + 0.5) / h
    gx = box[:, 0, None] + fx[None] * (box[:, 2] - box[:, 0])[:, None]  # (N, w) in [0, 1]
    gy = box[:, 1, None] + fy[None] * (box[:, 3] - box[:, 1])[:, None]  # (N, h)
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1) * 2 - 1
    return F.grid_sample(table.float().expand(n, -1, -1, -1), grid, mode="bilinear",
                         padding_mode="border", align_corners=False)


def export_weights(net: nn.Module) -> dict[str, torch.Tensor]:
    """A network's weights on the CPU in the standard (contiguous) layout, for safetensors and hashing."""
    return {k: v.detach().to("cpu").clone(memory_format=torch.contiguous_format) for k, v in net.state_dict().items()}


def weights_settings(config: FastConfig, **extra: Any) -> dict[str, Any]:
    """The settings stored beside fast-restorer weights: file format, network shape, and ``extra``."""
    return {"format": FORMAT, "version": FORMAT_VERSION, "config": config.to_dict(), **extra}


def lock_low_frequencies(out: torch.Tensor, ref: torch.Tensor, factor: int) -> torch.Tensor:
    """Replace the lowest frequencies of ``out`` with those of ``ref``.

    ``out − U(D(out)) + U(D(ref))`` with D = area downscale by ``factor`` and
    U = bilinear upscale back: colour and tone at the coarse scale come from
    ``ref``, detail from ``out``. ``factor`` 0 or 1 returns ``out`` unchanged.
    """
    if factor <= 1:
        return out
    size = out.shape[-2:]
    low = F.avg_pool2d(out - ref, factor)
    return out - F.interpolate(low, size=size, mode="bilinear", align_corners=False)


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when this CPU has native bf16 math (AVX512-BF16 or AMX-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """Map "auto" | "fp32" | "bf16" to the autocast dtype for ``device``."""
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise UsageError(f"unknown precision {precision!r}; use 'auto', 'fp32' or 'bf16'")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if device.type == "cpu" and cpu_has_bf16() else torch.float32


class FastRestorer(nn.Module):
    """A loaded fast restorer; implements :class:`facefix.restorers.base.Restorer`.

    Args:
        net: The network.
        name: Label for reports, e.g. "fast/generic" or "fast/alice".
        settings: Extra settings kept with the weights (training recipe, steps, ...).
        device: Where to run ("cpu", "cuda", "cuda:1").
        precision: "auto" (bf16 where the hardware has it), "fp32" or "bf16".
        tta: Average with the horizontally flipped face (twice the time, a bit sharper/truer).
    """

    def __init__(
        self,
        net: FastNet,
        *,
        name: str = "fast",
        settings: dict[str, Any] | None = None,
        device: str | torch.device = "cpu",
        precision: str = "auto",
        tta: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.name = name
        self.settings = dict(settings or {})
        self.precision = precision
        self.tta = tta
        self.device = _device(device)
        self.net.to(self.device).eval()

    @property
    def config(self) -> FastConfig:
        return self.net.config

    # ------------------------------------------------------------------ build / load

    @classmethod
    def build(cls, config: FastConfig | None = None, *, seed: int | None = 0, **kwargs: Any) -> "FastRestorer":
        """A fresh, untrained restorer (it starts as the identity)."""
        with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
            if seed is not None:
                torch.manual_seed(seed)
            net = FastNet(config or FastConfig())
        return cls(net, **kwargs)

    @classmethod
    def load(cls, tensors: dict[str, torch.Tensor], settings: dict[str, Any], **kwargs: Any) -> "FastRestorer":
        """Restore from :meth:`state` output (tensors + settings)."""
        if settings.get("format") != FORMAT:
            raise ModelError(
                f"settings are for {settings.get('format')!r}, not {FORMAT!r}; "
                "pass the settings saved with these fast-restorer weights"
            )
        if int(settings.get("version", 0)) > FORMAT_VERSION:
            raise ModelError(
                f"fast restorer format version {settings.get('version')} is newer than "
                f"this facefix understands ({FORMAT_VERSION}); upgrade facefix"
            )
        config = FastConfig.from_dict(settings["config"])
        net = FastNet(config)
        try:
            net.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise ModelError(f"fast restorer weights do not match their settings ({exc}); re-run enroll") from exc
        extra = {k: v for k, v in settings.items() if k not in ("format", "version", "config")}
        return cls(net, settings=extra, **kwargs)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Weights (CPU, contiguous) and the JSON-able settings needed to rebuild them."""
        return export_weights(self.net), weights_settings(self.config, **self.settings)

    def save(self, path: str | Path) -> None:
        """Write weights + settings as one safetensors file (settings in the metadata)."""
        from safetensors.torch import save_file

        tensors, settings = self.state()
        with atomic_output(path) as tmp:
            save_file(tensors, str(tmp), metadata={"facefix": json.dumps(settings)})

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> "FastRestorer":
        """Load a file written by :meth:`save`."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise ModelError(f"no fast restorer weights at {path}; run 'facefix enroll' to make them")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(path))
            settings = json.loads(meta["facefix"])
        except (KeyError, ValueError, OSError) as exc:
            raise ModelError(f"{path} is not a facefix fast restorer file ({exc}); re-run enroll") from exc
        return cls.load(tensors, settings, **kwargs)

    # ------------------------------------------------------------------ inference

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @torch.inference_mode()
    def restore(self, crops: np.ndarray, *, batch_size: int = 4) -> np.ndarray:
        """Restore aligned crops (N, H, W, 3) float32 RGB in [0, 1]; same shape back.

        H and W must be multiples of :attr:`FastNet.multiple` (512 crops are).
        """
        crops = check_crops(crops)
        n, h, w, _ = crops.shape
        m = self.net.multiple
        if h % m or w % m:
            raise UsageError(f"crop size {w}x{h} is not a multiple of {m}; pass aligned 512x512 crops")
        dtype = resolve_precision(self.precision, self.device)
        out = np.empty_like(crops)
        for i in range(0, n, batch_size):
            x = torch.from_numpy(crops[i : i + batch_size]).permute(0, 3, 1, 2).to(self.device)
            with torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32):
                y = self.net(x)
                if self.tta:
                    y = 0.5 * (y + self.net(x.flip(-1)).flip(-1))
            out[i : i + batch_size] = y.float().clamp_(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        return keep_grayscale(crops, out)


def keep_grayscale(inputs: np.ndarray, outputs: np.ndarray, tol: float = 2.0 / 255.0) -> np.ndarray:
    """Make every output whose input was grayscale (three equal channels) exactly gray."""
    for i in range(len(inputs)):
        x = inputs[i]
        if np.abs(x[..., 0] - x[..., 1]).mean() < tol and np.abs(x[..., 1] - x[..., 2]).mean() < tol:
            y = outputs[i] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            outputs[i] = y[..., None]
    return outputs


def _device(device: str | torch.device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} was asked for but CUDA is not available; use --device cpu")
    return dev
