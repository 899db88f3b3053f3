"""Stage 1 of Dual-Pivot Tuning: personalize the generator around a fixed text pivot.

A LoRA on the UNet's attention projections learns the person from their
aligned reference faces, always captioned with the same pivot prompt
("a photo of sks person"). With prior preservation, images the base model made
for the class prompt ("a photo of a person") are trained alongside, so that
the rest of the class is not pulled towards this one face.

The paper fine-tunes the whole UNet (lr 1e-6, 2,500 steps); a rank-16 LoRA at
lr 1e-4 reaches the same job in a few hundred steps and ~13 MB (see
docs/diffusion.md for how these settings were chosen).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facefix.restorers.adapters import UNET_TARGETS, apply_unet_lora
from facefix.training import diffusion_loop as common
from facefix.training.lora import add_lora, unet_lora_tensors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage1Config:
    """Settings of stage 1.

    Args:
        token: the rare token that names the person in the pivot prompt.
        class_noun: the class word ("person"; the paper used "man"/"woman").
        rank: LoRA rank.
        alpha: LoRA alpha; equal to ``rank`` (scale 1) so that any diffusers
            loader, with or without metadata, applies it identically.
        targets: UNet modules that get LoRA.
        steps: optimizer steps.
        lr: AdamW learning rate (constant after ``warmup``).
        warmup: linear warm-up steps.
        batch_size: references per step.
        weight_decay: AdamW weight decay.
        max_grad_norm: gradient clipping.
        prior_weight: weight of the class-image loss (used when class images are given).
        flip: also train on mirrored references.
        seed: seed of every random draw.
        mixed_precision: ``auto`` (fp16/bf16 autocast on CUDA), ``fp16``, ``bf16`` or ``no``.
        gradient_checkpointing: trade compute for activation memory; ``auto``:
            only on CUDA cards under 16 GiB (on an H100 it halved the step rate and
            saved no memory at batch 2, docs/benchmarks.md).
        attention: ``sdpa``, ``xformers`` or ``sliced``.
        checkpoint_every: steps between resumable checkpoints.
    """

    token: str = "sks"
    class_noun: str = "person"
    rank: int = 16
    alpha: float = 16.0
    targets: tuple[str, ...] = UNET_TARGETS
    steps: int = 500
    lr: float = 1e-4
    warmup: int = 0
    batch_size: int = 2
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    prior_weight: float = 1.0
    flip: bool = True
    seed: int = 0
    mixed_precision: str = "auto"
    gradient_checkpointing: bool | str = "auto"
    attention: str = "sdpa"
    checkpoint_every: int = 100

    @property
    def pivot_prompt(self) -> str:
        return f"a photo of {self.token} {self.class_noun}"

    @property
    def class_prompt(self) -> str:
        return f"a photo of a {self.class_noun}"


@dataclass(frozen=True)
class Stage1Result:
    """The UNet LoRA as ``(tensors, settings)`` plus the loss of every step."""

    tensors: dict
    settings: dict
    losses: tuple[float, ...]


def train_stage1(
    parts,
    references: np.ndarray,
    config: Stage1Config = Stage1Config(),
    *,
    class_images: np.ndarray | None = None,
    work_dir: Path | None = None,
    progress: common.ProgressFn | None = None,
) -> Stage1Result:
    """Train the UNet LoRA on one person's aligned references.

    On return ``parts.unet`` carries the trained adapter (frozen), ready for
    stage 2. Interrupting (Ctrl-C) leaves the last checkpoint in ``work_dir``;
    calling again with the same inputs resumes from it.

    Args:
        parts: the loaded model set (:class:`facefix.modelsets.parts.DiffusionParts`).
        references: aligned faces (N, H, W, 3) float32 in [0, 1]; resized to
            the model's resolution.
        config: stage settings.
        class_images: prior-preservation images (M, H, W, 3) in [0, 1], painted
            by the base model from exactly ``config.class_prompt``, the prompt
            they are trained under here
            (:func:`facefix.training.generic_faces.cached_class_images`).
        work_dir: where checkpoints go (``ProfileStore.work_dir``); None: no checkpoints.
        progress: called after every step with a :class:`~facefix.training.diffusion_loop.TrainProgress`.
    """
    if len(references) == 0:
        raise ValueError("stage 1 needs at least one reference face")
    unet, device = parts.unet, parts.device
    precision = common.precision_for(device, config.mixed_precision)
    scheduler = parts.noise_scheduler()
    settings = {
        "kind": "unet_lora",
        "stage": 1,
        "rank": config.rank,
        "alpha": config.alpha,
        "targets": list(config.targets),
        "pivot_prompt": config.pivot_prompt,
        "config": asdict(config),
        "references": int(len(references)),
        "class_images": int(0 if class_images is None else len(class_images)),
        **parts.provenance,
    }
    run_id = common.fingerprint(settings, references, class_images if class_images is not None else 0)

    # Frozen inputs, computed once: latent distributions and prompt embeddings.
    res = parts.resolution
    images = common.to_model_images(references, res, device)
    if config.flip:
        images = torch.cat([images, torch.flip(images, dims=[-1])])
    ref_mean, ref_std = common.encode_distribution(parts, images)
    prompts = [config.pivot_prompt, config.class_prompt]
    embeds = parts.encode_prompt(prompts).to(device)
    pivot_embeds, class_embeds = embeds[:1], embeds[1:]
    use_prior = class_images is not None and len(class_images) > 0 and config.prior_weight > 0
    if use_prior:
        class_mean, class_std = common.encode_distribution(parts, common.to_model_images(class_images, res, device))

    params = add_lora(unet, config.rank, config.alpha, config.targets, seed=config.seed)
    checkpointing = common.checkpointing_for(config.gradient_checkpointing, device)
    if checkpointing:
        unet.enable_gradient_checkpointing()
    common.set_attention(unet, config.attention)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scaler = precision.scaler()

    loop = common.loop_settings("stage1", config)
    start, losses = common.resume_adapter(work_dir, run_id, optimizer, lambda state: _load_lora_into_training(unet, state), loop)

    def compute_loss(step: int, gen: torch.Generator) -> torch.Tensor:
        index = torch.randint(0, len(ref_mean), (config.batch_size,), generator=gen).to(device)
        latents = ref_mean[index] + ref_std[index] * torch.randn(ref_mean[index].shape, generator=gen).to(device)
        cond = pivot_embeds.expand(len(index), -1, -1)
        if use_prior:
            cindex = torch.randint(0, len(class_mean), (config.batch_size,), generator=gen).to(device)
            clat = class_mean[cindex] + class_std[cindex] * torch.randn(class_mean[cindex].shape, generator=gen).to(device)
            latents = torch.cat([latents, clat])
            cond = torch.cat([cond, class_embeds.expand(len(cindex), -1, -1)])
        noisy, noise, timesteps = common.noised(scheduler, latents, gen)
        target = common.diffusion_target(scheduler, latents, noise, timesteps)
        with precision.autocast():
            pred = unet(noisy.to(parts.dtype), timesteps, encoder_hidden_states=cond, return_dict=False)[0]
        pred = pred.float()
        if not use_prior:
            return F.mse_loss(pred, target)
        pred, prior_pred = pred.chunk(2)
        target, prior_target = target.chunk(2)
        return F.mse_loss(pred, target) + config.prior_weight * F.mse_loss(prior_pred, prior_target)

    unet.train()
    try:
        common.run_adapter_steps(
            loop, compute_loss=compute_loss, optimizer=optimizer, scaler=scaler, params=params,
            adapter_tensors=lambda: unet_lora_tensors(unet), work_dir=work_dir, run_id=run_id,
            start=start, losses=losses, progress=progress,
        )  # fmt: skip
    finally:
        unet.eval()
        unet.requires_grad_(False)
        if checkpointing:
            unet.disable_gradient_checkpointing()
    tensors = unet_lora_tensors(unet)
    settings["steps_done"] = len(losses)
    settings["final_loss"] = float(np.mean(losses[-20:])) if losses else None
    return Stage1Result(tensors, settings, tuple(losses))


def _load_lora_into_training(unet, tensors: dict) -> None:
    """Copy checkpointed LoRA values into the freshly added (trainable) adapter."""
    from diffusers.utils import convert_unet_state_dict_to_peft

    from facefix.restorers.adapters import set_adapter_state

    stripped = {k[len("unet.") :]: v for k, v in tensors.items()}
    set_adapter_state(unet, convert_unet_state_dict_to_peft(stripped), "facefix", "stage-1 checkpoint")
    for name, param in unet.named_parameters():
        if "lora_" in name:
            param.data = param.data.float()


def personalized_unet(parts, tensors: dict, settings: dict) -> None:
    """Put a saved stage-1 LoRA on ``parts.unet`` (for stage 2 or restoring)."""
    apply_unet_lora(parts.unet, tensors, settings)
