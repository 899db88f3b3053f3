"""The torch modules of a model set, and the few operations everyone needs on them.

:class:`DiffusionParts` only wires modules that already exist (tests build
them tiny, benchmarks at real size with random weights); :func:`load_parts`
is the one place that reads them from disk, through the same code for a hub
snapshot and for a local directory. Stage 1, stage 2 and the restorer all
work on a ``DiffusionParts``.

Real-size configurations of the default set (SD 1.5 + tile ControlNet) are
written out here, so that architecture checks and benchmarks need no download.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from facefix.errors import ModelError
from facefix.modelsets.hub import ModelPaths, weight_path
from facefix.modelsets.registry import ModelSet

log = logging.getLogger(__name__)

SAMPLERS = ("dpmsolver++", "unipc", "ddim", "euler")


@dataclass(frozen=True)
class DiffusionParts:
    """A base diffusion model and its guide, as torch modules.

    Args:
        unet: ``UNet2DConditionModel``.
        vae: ``AutoencoderKL``.
        text_encoder: ``CLIPTextModel``.
        tokenizer: ``CLIPTokenizer``.
        guide: ``ControlNetModel`` fed the pre-cleaned face.
        scheduler_config: the base model's scheduler config (betas, prediction type).
        condition: ``image`` or ``latent`` (see :data:`facefix.modelsets.registry.CONDITIONS`).
        provenance: model-set ids and revisions, recorded in every artifact.
    """

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    guide: torch.nn.Module
    scheduler_config: dict
    condition: str = "image"
    provenance: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ sizes
    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def resolution(self) -> int:
        """Image size the UNet was trained at (512 for SD 1.5)."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "DiffusionParts":
        """Move every module (in place) and return ``self``."""
        for module in (self.unet, self.vae, self.text_encoder, self.guide):
            param = next(module.parameters())
            same_device = device is None or param.device == torch.device(device)
            if not (same_device and (dtype is None or param.dtype == dtype)):
                module.to(device=device, dtype=dtype)
        return self

    # ------------------------------------------------------------------ schedulers
    def noise_scheduler(self):
        """The training-time (DDPM) scheduler of the base model."""
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(self.scheduler_config)

    def sampler(self, name: str = "dpmsolver++"):
        """A fast inference scheduler built from the base model's config.

        Args:
            name: ``dpmsolver++`` (DPM-Solver++ 2M, default: good at 20-25
                steps and deterministic), ``unipc``, ``ddim`` or ``euler``.
        """
        from diffusers import (
            DDIMScheduler,
            DPMSolverMultistepScheduler,
            EulerDiscreteScheduler,
            UniPCMultistepScheduler,
        )

        if name == "dpmsolver++":
            return DPMSolverMultistepScheduler.from_config(self.scheduler_config, algorithm_type="dpmsolver++")
        if name == "unipc":
            return UniPCMultistepScheduler.from_config(self.scheduler_config)
        if name == "ddim":
            return DDIMScheduler.from_config(self.scheduler_config)
        if name == "euler":
            return EulerDiscreteScheduler.from_config(self.scheduler_config)
        raise ValueError(f"unknown sampler {name!r}; use one of {', '.join(SAMPLERS)}")

    # ------------------------------------------------------------------ encoders
    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """Text-encoder hidden states (N, tokens, dim) for ``prompts``."""
        ids = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        device = next(self.text_encoder.parameters()).device
        return self.text_encoder(ids.to(device))[0]

    def vae_encode(self, images01: torch.Tensor, *, sample: bool = False, generator=None) -> torch.Tensor:
        """Scaled latents of (N, 3, H, W) images in [0, 1]."""
        vae_param = next(self.vae.parameters())
        dist = self.vae.encode((images01 * 2 - 1).to(vae_param.device, vae_param.dtype)).latent_dist
        latents = dist.sample(generator) if sample else dist.mode()
        return latents * self.vae.config.scaling_factor

    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) in [0, 1] from scaled latents."""
        vae_param = next(self.vae.parameters())
        images = self.vae.decode(latents.to(vae_param.device, vae_param.dtype) / self.vae.config.scaling_factor).sample
        return (images.float() / 2 + 0.5).clamp(0, 1)

    def guide_condition(self, images01: torch.Tensor) -> torch.Tensor:
        """What the guide is fed for pre-cleaned faces (N, 3, H, W) in [0, 1]."""
        if self.condition == "image":
            return images01
        return self.vae_encode(images01)

    def predict_noise(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        unet_embeds: torch.Tensor,
        guide_embeds: torch.Tensor,
        condition: torch.Tensor,
        *,
        guide_scale: float = 1.0,
    ) -> torch.Tensor:
        """The UNet's output with the guide's residuals added (ControlNet style).

        The UNet sees ``unet_embeds`` (the pivot prompt), the guide
        ``guide_embeds`` (the empty prompt), as in Dual-Pivot Tuning.
        """
        down, mid = self.guide(
            latents,
            timestep,
            encoder_hidden_states=guide_embeds,
            controlnet_cond=condition,
            conditioning_scale=guide_scale,
            return_dict=False,
        )
        return self.unet(
            latents,
            timestep,
            encoder_hidden_states=unet_embeds,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
            return_dict=False,
        )[0]


def _variant(folder: Path, stem: str, variant: str | None) -> str | None:
    """The variant of the weights the loader will read in ``folder`` (a single file or a shard index)."""
    found = weight_path(folder, stem, variant)
    name = found.name if found is not None else ""
    return next((v for v in (variant, "fp16") if v and f".{v}." in name), None)


def load_parts(paths: ModelPaths, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> DiffusionParts:
    """Load a located model set (see :func:`facefix.modelsets.registry.locate`).

    Args:
        paths: where the base and guide are; hub snapshots and local
            directories go through this same code; a single-file base or
            guide is converted on the fly with SD 1.5's configs shipped in
            the package (:mod:`facefix.modelsets.single_file`), offline.
        device: where to put the modules.
        dtype: their dtype (fp16 on GPU, fp32 on CPU).

    Raises:
        ModelError: a file is there but cannot be loaded (corrupt, wrong kind).
    """
    base, variant = Path(paths.base_dir), paths.model_set.variant
    with _quiet_loaders():
        parts = _load_parts(paths, base, variant, dtype)
    return parts.to(device)


@contextlib.contextmanager
def _quiet_loaders():
    """No "Loading weights" bars from transformers/diffusers: the CLI draws the one progress display."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    states = [(mod, mod.is_progress_bar_enabled()) for mod in (diffusers_logging, transformers_logging)]
    for mod, _ in states:
        mod.disable_progress_bar()
    try:
        yield
    finally:
        for mod, was in states:
            if was:
                mod.enable_progress_bar()


def _load_folder_base(base: Path, variant, dtype):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(base / "tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(
        base / "text_encoder", variant=_variant(base / "text_encoder", "model", variant), dtype=dtype
    )
    unet = UNet2DConditionModel.from_pretrained(
        base, subfolder="unet", variant=_variant(base / "unet", "diffusion_pytorch_model", variant), torch_dtype=dtype
    )
    vae = AutoencoderKL.from_pretrained(
        base, subfolder="vae", variant=_variant(base / "vae", "diffusion_pytorch_model", variant), torch_dtype=dtype
    )
    scheduler_config = json.loads((base / "scheduler" / "scheduler_config.json").read_text())
    return unet, vae, text_encoder, tokenizer, scheduler_config


def _load_folder_guide(guide_dir: Path, dtype):
    from diffusers import ControlNetModel

    guide_file = weight_path(guide_dir)
    return ControlNetModel.from_pretrained(
        guide_dir,
        torch_dtype=dtype,
        variant=_variant(guide_dir, "diffusion_pytorch_model", None),
        use_safetensors=guide_file is not None and ".safetensors" in guide_file.name,
    )


def _load_parts(paths: ModelPaths, base: Path, variant, dtype) -> DiffusionParts:
    from facefix.modelsets.single_file import is_single_file, load_single_file_base, load_single_file_guide

    guide_dir = Path(paths.guide_dir)
    try:
        unet, vae, text_encoder, tokenizer, scheduler_config = (
            load_single_file_base(base, dtype) if is_single_file(base) else _load_folder_base(base, variant, dtype)
        )
        guide = load_single_file_guide(guide_dir, dtype) if is_single_file(guide_dir) else _load_folder_guide(guide_dir, dtype)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(
            f"model set {paths.model_set.name!r} is present but could not be loaded from {base} and "
            f"{paths.guide_dir}: {exc}. Check it with `facefix models verify {paths.model_set.name}`"
        ) from exc
    for module in (unet, vae, text_encoder, guide):
        module.requires_grad_(False)
        module.eval()
    parts = DiffusionParts(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        guide=guide,
        scheduler_config=dict(scheduler_config),
        condition=paths.model_set.condition,
        provenance=paths.provenance(),
    )
    return parts


def load_model_set(model_set: ModelSet, **kwargs) -> DiffusionParts:
    """``locate`` + ``load_parts`` in one call (no network)."""
    from facefix.modelsets.hub import locate

    return load_parts(locate(model_set), **kwargs)
