"""The personalized diffusion restorer (Dual-Pivot Tuning's inference, DiffBIR-style).

For a batch of aligned 512 crops:

1. pre-clean with the fast restorer (DiffBIR's SwinIR stage);
2. feed the pre-cleaned face to the guide: the image itself for the default
   tile ControlNet (``condition="image"``), or its VAE latent for a
   DiffBIR-style guide (``condition="latent"``);
3. sample with the (personalized) UNet + (tuned) guide: DPM-Solver++ 2M,
   25 steps by default, no classifier-free guidance (the UNet gets the pivot
   prompt, the guide the empty prompt);
4. decode, resize back to the crop size and fix colour against the
   pre-cleaned face (wavelet by default), as DiffBIR does;
5. grayscale inputs stay grayscale.

Every face gets its own noise seeded from ``(seed, index in the call)``, so a
face's result does not depend on the batch it was in.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from facefix.common.devices import inference_dtype
from facefix.errors import ModelError, ProfileError
from facefix.modelsets.hub import sizes_only_note
from facefix.restorers.base import Restorer, check_crops
from facefix.restorers.colorfix import color_fix
from facefix.restorers.graphs import GraphedDenoiser

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplerSettings:
    """How the diffusion restorer samples.

    Args:
        steps: denoising steps (20-50; 25 is the speed/quality default).
        sampler: ``dpmsolver++``, ``unipc``, ``ddim`` or ``euler``.
        guidance_scale: classifier-free guidance; 1.0 = off (the paper's setting, half the cost).
        guide_scale: strength of the guide's residuals.
        strength: 1.0 starts from pure noise (the paper); below 1, from the
            pre-cleaned face noised that far (faster, more faithful, less detail).
        color_fix: ``wavelet``, ``adain`` or ``none``.
        batch_size: faces per UNet call.
        seed: base seed; faces are seeded from it and their index.
        low_vram: attention slicing, VAE tiling/slicing and model CPU offload (6-8 GB cards).
        fuse_lora: fold LoRA adapters into the weights once (faster sampling).
        cuda_graphs: on CUDA (without ``low_vram``), replay each denoising
            step from a CUDA graph (3x faster at batch 1 on an H100; docs/benchmarks.md).
        negative_prompt: the unconditional prompt when ``guidance_scale > 1``.
    """

    steps: int = 25
    sampler: str = "dpmsolver++"
    guidance_scale: float = 1.0
    guide_scale: float = 1.0
    strength: float = 1.0
    color_fix: str = "wavelet"
    batch_size: int = 4
    seed: int = 0
    low_vram: bool = False
    fuse_lora: bool = True
    negative_prompt: str = ""
    cuda_graphs: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= 1000:
            raise ValueError(f"steps must be between 1 and 1000, got {self.steps}")
        if not 0 < self.strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {self.strength}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")


StepCallback = Callable[[int, int], None]


def _same_local_content(key: str, settings: dict, provenance: dict) -> bool:
    """A local model folder that moved (or was copied) is the same part when its content fingerprint is."""
    if key not in ("base", "guide"):
        return False
    made, have = settings.get(f"{key}_revision"), provenance.get(f"{key}_revision")
    return bool(made) and made == have and str(made).startswith("local-")


def check_artifact(settings: dict, provenance: dict, what: str) -> None:
    """Refuse an artifact made for another model set, naming both.

    An artifact made when a local folder's fingerprint was its sizes only
    (:func:`facefix.modelsets.hub.sizes_only_note`) is refused for a folder at
    another path and warned about (then used) at its own path, each message
    saying so and to re-enroll.
    """
    for key in ("base", "guide", "condition"):
        made, have = settings.get(key), provenance.get(key)
        if made is not None and have is not None and made != have and not _same_local_content(key, settings, provenance):
            note = sizes_only_note(key, settings, provenance) if key != "condition" else None
            raise ProfileError(
                f"this {what} was made for model set {settings.get('model_set')!r} ({key} {made!r}), "
                f"not {provenance.get('model_set')!r} ({key} {have!r}){f' ({note})' if note else ''}; use that "
                "model set, or re-run `facefix enroll NAME DIR --engine diffusion` with this one"
            )
    notes = [n for n in (sizes_only_note(k, settings, provenance) for k in ("base", "guide")) if n]
    if notes:
        log.warning("%s: %s. It is used, as its folder is the one it was made with; if you replaced that "
                    "folder's weights, or to record the new fingerprint and end this warning, re-run "
                    "`facefix enroll NAME DIR --engine diffusion`", what, "; and ".join(notes))
    if (settings.get("base_revision") and provenance.get("base_revision")
            and settings["base_revision"] != provenance["base_revision"] and not sizes_only_note("base", settings, provenance)):
        log.warning(
            "%s was made with %s@%s, now %s: results may differ",
            what, settings.get("base"), settings["base_revision"], provenance["base_revision"],
        )  # fmt: skip


def personalize(
    parts,
    unet_lora: tuple[dict, dict] | None = None,
    guide_adapter: tuple[dict, dict] | None = None,
    *,
    adapter_name: str | None = None,
) -> None:
    """Put a person's stage-1 LoRA and stage-2 guide adapter on ``parts`` (in place).

    Everything is checked before anything is applied, so a refused artifact
    leaves ``parts`` as it was.

    Args:
        parts: loaded parts (without an adapter of this ``adapter_name``).
        unet_lora: ``(tensors, settings)`` of kind ``diffusion/<set>/unet_lora``.
        guide_adapter: ``(tensors, settings)`` of kind ``diffusion/<set>/guide``.
        adapter_name: peft adapter name (several people can share loaded parts,
            see :class:`facefix.providers.diffusion.DiffusionRestorers`); default ``facefix``.
    """
    from facefix.restorers.adapters import (
        ADAPTER,
        apply_guide_adapter,
        apply_unet_lora,
        tensors_digest,
    )

    adapter_name = adapter_name or ADAPTER
    if unet_lora is not None:
        check_artifact(unet_lora[1], parts.provenance, "UNet LoRA")
    if guide_adapter is not None:
        check_artifact(guide_adapter[1], parts.provenance, "guide adapter")
        digest = guide_adapter[1].get("unet_lora_digest")
        if digest and (unet_lora is None or tensors_digest(unet_lora[0]) != digest):
            raise ProfileError(
                "the guide adapter was tuned around another UNet LoRA than the one given; "
                "re-run `facefix enroll NAME DIR --engine diffusion` to make both again"
            )
    if unet_lora is not None:
        apply_unet_lora(parts.unet, *unet_lora, adapter_name=adapter_name)
    if guide_adapter is not None:
        apply_guide_adapter(parts.guide, *guide_adapter, adapter_name=adapter_name)


class DiffusionRestorer:
    """Restores aligned crops with a (personalized) latent diffusion model + guide.

    Build it from parts (tests, benchmarks) or with :meth:`load` (weights on disk).

    Args:
        parts: the model set, adapters already applied (see :func:`personalize`).
        precleaner: any :class:`~facefix.restorers.base.Restorer` run first
            (the fast restorer); None skips pre-cleaning.
        prompt: the UNet's prompt: the person's pivot prompt, or "" for generic faces.
        settings: sampling settings.
        name: label shown to users, e.g. ``diffusion/alice``.
        device: where to sample; default: where ``parts`` are.
    """

    def __init__(
        self,
        parts,
        *,
        precleaner: Restorer | None = None,
        prompt: str = "",
        settings: SamplerSettings = SamplerSettings(),
        name: str = "diffusion",
        device: str | torch.device | None = None,
    ):
        self.parts = parts
        self.precleaner = precleaner
        self.prompt = prompt
        self.settings = settings
        self.name = name
        self.device = torch.device(device) if device is not None else parts.device
        self.dtype = parts.dtype
        if settings.fuse_lora:
            from facefix.restorers.adapters import merge_adapters

            merge_adapters(parts.unet)
            merge_adapters(parts.guide)
        if settings.low_vram:
            for module in (parts.unet, parts.guide):
                module.set_attention_slice("auto")
            parts.vae.enable_tiling()
            parts.vae.enable_slicing()
            parts.to("cpu")
        graphs = settings.cuda_graphs and self.device.type == "cuda" and not settings.low_vram
        self._graphed = GraphedDenoiser(self._denoise) if graphs else None
        # The prompts never change: encode them once, then the text encoder can rest on the CPU.
        with self._on_device(parts.text_encoder):
            prompts = [prompt, "", settings.negative_prompt]
            self._embeds = parts.encode_prompt(prompts).to(self.device, self.dtype)

    @classmethod
    def load(
        cls,
        model_set=None,
        *,
        unet_lora: tuple[dict, dict] | None = None,
        guide_adapter: tuple[dict, dict] | None = None,
        precleaner: Restorer | None = None,
        settings: SamplerSettings = SamplerSettings(),
        device: str = "auto",
        dtype: torch.dtype | None = None,
        name: str | None = None,
    ) -> "DiffusionRestorer":
        """Load a model set from disk (no network) and a person's adapters.

        Args:
            model_set: a :class:`~facefix.modelsets.registry.ModelSet`, a name or a directory; None: the default.
            unet_lora: the person's stage-1 artifact ``(tensors, settings)``; None: generic.
            guide_adapter: the person's stage-2 artifact; None: the generic guide.
            precleaner: the fast restorer.
            settings: sampling settings.
            device: ``auto`` (CUDA if present), ``cpu``, ``cuda``, ``cuda:1``, ``mps``.
            dtype: default fp16 on CUDA, fp32 elsewhere.
            name: label; default ``diffusion/<set>``.

        Raises:
            ModelError: weights missing (names the id, where it looked and the
                ``facefix models pull`` command).
        """
        from facefix.modelsets.hub import locate
        from facefix.modelsets.parts import load_parts
        from facefix.modelsets.registry import ModelSet, resolve_model_set

        if not isinstance(model_set, ModelSet):
            model_set = resolve_model_set(model_set)
        paths = locate(model_set)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype is None:
            dtype = inference_dtype(device)
        parts = load_parts(paths, device="cpu" if settings.low_vram else device, dtype=dtype)
        personalize(parts, unet_lora, guide_adapter)
        prompt = unet_lora[1].get("pivot_prompt", "") if unet_lora else ""
        return cls(parts, precleaner=precleaner, prompt=prompt, settings=settings, name=name or f"diffusion/{model_set.name}", device=device)

    # ------------------------------------------------------------------ helpers
    @contextlib.contextmanager
    def _on_device(self, *modules):
        """Model CPU offload: with ``low_vram`` a module visits the GPU only while used."""
        if not self.settings.low_vram or self.device.type == "cpu":
            yield
            return
        for module in modules:
            module.to(self.device)
        try:
            yield
        finally:
            for module in modules:
                module.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def _denoise(self, latents, t, unet_embeds, guide_embeds, condition) -> torch.Tensor:
        return self.parts.predict_noise(
            latents, t, unet_embeds, guide_embeds, condition, guide_scale=self.settings.guide_scale
        )

    def _predict(self, latents, t, unet_embeds, guide_embeds, condition) -> torch.Tensor:
        """One denoiser call: replayed from a CUDA graph when enabled, else eager."""
        if self._graphed is None or self.settings.low_vram or not self.settings.cuda_graphs:
            return self._denoise(latents, t, unet_embeds, guide_embeds, condition)
        t = t.reshape(()) if torch.is_tensor(t) else torch.tensor(t, device=latents.device)
        return self._graphed(latents, t, unet_embeds, guide_embeds, condition, tag=self.settings.guide_scale)

    def _noise(self, shape, start: int, count: int) -> torch.Tensor:
        noises = []
        for i in range(start, start + count):
            gen = torch.Generator("cpu").manual_seed((self.settings.seed * 1_000_003 + i) % (2**63))
            noises.append(torch.randn(shape, generator=gen))
        return torch.stack(noises).to(self.device)

    # ------------------------------------------------------------------ restore
    @torch.no_grad()
    def restore(self, crops: np.ndarray, *, callback: StepCallback | None = None) -> np.ndarray:
        """Restore a batch of aligned crops.

        Args:
            crops: float32 (N, H, W, 3) RGB in [0, 1] (H = W = 512 in facefix).
            callback: ``callback(done, total)`` after every denoising step of
                the whole call (one progress bar for all faces).

        Returns:
            float32 array of the same shape, RGB in [0, 1].
        """
        crops = check_crops(crops)
        if len(crops) == 0:
            return crops.copy()
        pre = self.precleaner.restore(crops) if self.precleaner is not None else crops
        pre = np.clip(check_crops(pre), 0, 1)
        size = self.settings.batch_size
        total = -(-len(crops) // size) * self._steps_per_batch()
        done = 0
        outputs = []
        for start in range(0, len(crops), size):
            stop = min(start + size, len(crops))

            def step_done() -> None:
                nonlocal done
                done += 1
                if callback is not None:
                    callback(done, total)

            outputs.append(self._restore_batch(crops[start:stop], pre[start:stop], start, step_done))
        return np.concatenate(outputs).astype(np.float32)

    def _steps_per_batch(self) -> int:
        scheduler = self.parts.sampler(self.settings.sampler)
        scheduler.set_timesteps(self.settings.steps)
        first = int(round(len(scheduler.timesteps) * (1 - self.settings.strength)))
        return len(scheduler.timesteps) - first

    def _restore_batch(self, crops: np.ndarray, pre: np.ndarray, start: int, step_done) -> np.ndarray:
        parts, s = self.parts, self.settings
        n, height, width = crops.shape[:3]
        res = parts.resolution
        pre_t = torch.from_numpy(pre).permute(0, 3, 1, 2).to(self.device)
        pre_t = F.interpolate(pre_t, size=(res, res), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)

        scheduler = parts.sampler(s.sampler)
        scheduler.set_timesteps(s.steps, device=self.device)
        timesteps = scheduler.timesteps
        shape = (parts.unet.config.in_channels, res // parts.vae_scale_factor, res // parts.vae_scale_factor)
        noise = self._noise(shape, start, n).float()
        with self._on_device(parts.vae):
            condition = parts.guide_condition(pre_t.to(self.dtype)).to(self.dtype)
            if s.strength < 1:
                first = int(round(len(timesteps) * (1 - s.strength)))
                timesteps = timesteps[first:]
                clean = parts.vae_encode(pre_t.to(self.dtype)).float()
                latents = scheduler.add_noise(clean, noise, timesteps[:1].repeat(n))
            else:
                latents = noise * scheduler.init_noise_sigma

        unet_embeds = self._embeds[0:1].expand(n, -1, -1)
        guide_embeds = self._embeds[1:2].expand(n, -1, -1)
        cfg = s.guidance_scale > 1
        if cfg:
            unet_embeds = torch.cat([self._embeds[2:3].expand(n, -1, -1), unet_embeds])
            guide_embeds = torch.cat([guide_embeds, guide_embeds])
            condition = torch.cat([condition, condition])
        with self._on_device(parts.unet, parts.guide):
            for t in timesteps:
                model_in = torch.cat([latents, latents]) if cfg else latents
                model_in = scheduler.scale_model_input(model_in, t).to(self.dtype)
                pred = self._predict(model_in, t, unet_embeds, guide_embeds, condition).float()
                if cfg:
                    uncond, cond = pred.chunk(2)
                    pred = uncond + s.guidance_scale * (cond - uncond)
                latents = scheduler.step(pred, t, latents, return_dict=False)[0]
                step_done()
        if not torch.isfinite(latents).all():
            raise ModelError(
                f"{self.name}: sampling produced NaN/inf (dtype {self.dtype}); retry with --device cpu or "
                "fp32, or check the weights with `facefix models verify`"
            )
        with self._on_device(parts.vae):
            images = parts.vae_decode(latents)
        images = F.interpolate(images.float(), size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1)
        images = images.permute(0, 2, 3, 1).cpu().numpy()
        # Colours from the pre-cleaned face (DiffBIR, the official code): the
        # degraded input's colours carry its noise and compression shifts.
        images = color_fix(images, pre, s.color_fix)
        gray = np.all(np.abs(crops - crops[..., :1]) < 1e-6, axis=(1, 2, 3))
        if gray.any():
            # Old grayscale photos stay grayscale (luma of the result).
            luma = images[gray] @ np.array([0.299, 0.587, 0.114], np.float32)
            images[gray] = np.repeat(luma[..., None], 3, axis=-1)
        return np.clip(images, 0, 1)
