"""Stage 2 of Dual-Pivot Tuning: tune the guide around the frozen personalized generator.

The UNet carries the person's stage-1 LoRA and does not change (every UNet
parameter is frozen; tests check it bit for bit). The guide learns, on
*generic* faces degraded on the fly, to steer this personalized UNet: the UNet
gets the pivot prompt, the guide the empty prompt, as in the paper.

Guide = LoRA, not full tuning, because:

* size: a full SD 1.5 ControlNet is 361 M parameters (1.4 GB fp32); a rank-32
  LoRA on its attention projections and output ("zero") convolutions plus the
  fully tuned pixel encoder (~1 M parameters) is ~20 MB, so a profile stays
  well under 100 MB;
* data: ~800 steps on a few hundred generic faces can shift how the guide
  steers, but would start to over-fit 361 M parameters (the official code
  itself tunes only the first 150 tensors, for memory);
* safety: the generic guide stays intact for faces of unknown people.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from facefix.restorers.adapters import UNET_TARGETS, tensors_digest
from facefix.restorers.base import Restorer
from facefix.training import diffusion_loop as common
from facefix.training.lora import add_guide_adapter, guide_adapter_tensors

log = logging.getLogger(__name__)

Degrade = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Stage2Config:
    """Settings of stage 2.

    Args:
        rank: LoRA rank of the guide.
        alpha: LoRA alpha (= rank: scale 1).
        targets: guide modules with LoRA; ``zero_convs`` stands for its output convolutions.
        full_modules: guide modules tuned in full (the pixel/latent encoder of the condition).
        steps: optimizer steps (~800 in the official code).
        lr: AdamW learning rate (the official full tuning used 5e-5; LoRA takes a larger one).
        warmup: linear warm-up steps.
        batch_size: faces per step.
        weight_decay: AdamW weight decay.
        max_grad_norm: gradient clipping.
        guide_scale: the guide's residual scale during training (as at inference).
        flip: also use mirrored faces.
        seed: seed of every random draw (degradations included).
        mixed_precision: ``auto``, ``fp16``, ``bf16`` or ``no``.
        gradient_checkpointing: on both UNet and guide; ``auto``: only on CUDA
            cards under 16 GiB (see stage 1).
        attention: ``sdpa``, ``xformers`` or ``sliced``.
        checkpoint_every: steps between resumable checkpoints.
    """

    rank: int = 32
    alpha: float = 32.0
    targets: tuple[str, ...] = (*UNET_TARGETS, "zero_convs")
    full_modules: tuple[str, ...] = ("controlnet_cond_embedding",)
    steps: int = 800
    lr: float = 1e-4
    warmup: int = 20
    batch_size: int = 2
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    guide_scale: float = 1.0
    flip: bool = True
    seed: int = 0
    mixed_precision: str = "auto"
    gradient_checkpointing: bool | str = "auto"
    attention: str = "sdpa"
    checkpoint_every: int = 100


@dataclass(frozen=True)
class Stage2Result:
    """The guide adapter as ``(tensors, settings)`` plus the loss of every step."""

    tensors: dict
    settings: dict
    losses: tuple[float, ...]


def train_stage2(
    parts,
    faces: np.ndarray,
    degrade: Degrade,
    *,
    pivot_prompt: str,
    unet_lora: dict | None = None,
    precleaner: Restorer | None = None,
    config: Stage2Config = Stage2Config(),
    work_dir: Path | None = None,
    progress: common.ProgressFn | None = None,
) -> Stage2Result:
    """Tune the guide on generic degraded faces around the frozen personalized UNet.

    Args:
        parts: the model set with the stage-1 LoRA already on ``parts.unet``.
        faces: generic high-quality aligned faces (N, H, W, 3) float32 in [0, 1],
            at crop size (512); degraded and pre-cleaned at that size, then
            resized to the model's resolution.
        degrade: ``degrade(face, rng) -> degraded face`` of the same shape (the
            fast restorer's degradation model).
        pivot_prompt: the stage-1 pivot prompt, given to the UNet.
        unet_lora: the stage-1 tensors; their digest is recorded so that a
            guide is only ever used with the UNet LoRA it was tuned around.
        precleaner: the fast restorer, applied to the degraded face as at
            inference (None: the guide sees the degraded face itself).
        config: stage settings.
        work_dir: where checkpoints go; None: no checkpoints.
        progress: called after every step.
    """
    if len(faces) == 0:
        raise ValueError("stage 2 needs at least one generic face")
    unet, guide, device = parts.unet, parts.guide, parts.device
    precision = common.precision_for(device, config.mixed_precision)
    scheduler = parts.noise_scheduler()
    settings = {
        "kind": "guide",
        "stage": 2,
        "rank": config.rank,
        "alpha": config.alpha,
        "full_modules": list(config.full_modules),
        "config": asdict(config),
        "pivot_prompt": pivot_prompt,
        "unet_lora_digest": tensors_digest(unet_lora) if unet_lora else None,
        "precleaner": precleaner.name if precleaner is not None else None,
        "faces": int(len(faces)),
        **parts.provenance,
    }
    run_id = common.fingerprint(settings, faces)

    unet.requires_grad_(False)
    unet.eval()
    res = parts.resolution
    clean = common.to_model_images(faces, res, device)
    if config.flip:
        clean = torch.cat([clean, torch.flip(clean, dims=[-1])])
    clean_mean, clean_std = common.encode_distribution(parts, clean)
    faces_full = np.concatenate([faces, faces[:, :, ::-1]]) if config.flip else faces
    embeds = parts.encode_prompt([pivot_prompt, ""]).to(device)
    pivot_embeds, empty_embeds = embeds[:1], embeds[1:]

    params, lora_modules = add_guide_adapter(
        guide, config.rank, config.alpha, config.targets, config.full_modules, seed=config.seed
    )
    settings["lora_modules"] = lora_modules
    checkpointing = common.checkpointing_for(config.gradient_checkpointing, device)
    if checkpointing:
        unet.enable_gradient_checkpointing()
        guide.enable_gradient_checkpointing()
    common.set_attention(unet, config.attention)
    common.set_attention(guide, config.attention)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scaler = precision.scaler()

    loop = common.loop_settings("stage2", config)
    start, losses = common.resume_adapter(work_dir, run_id, optimizer, lambda state: _load_adapter_into_training(guide, state), loop)

    def compute_loss(step: int, gen: torch.Generator) -> torch.Tensor:
        rng = np.random.default_rng([config.seed, step])
        index = torch.randint(0, len(clean_mean), (config.batch_size,), generator=gen)
        latents = clean_mean[index.to(device)]
        latents = latents + clean_std[index.to(device)] * torch.randn(latents.shape, generator=gen).to(device)
        # Degrade at crop size, pre-clean as at inference, then resize.
        low = np.stack([degrade(faces_full[i], rng) for i in index.tolist()]).astype(np.float32)
        if precleaner is not None:
            low = precleaner.restore(low)
        with torch.no_grad():
            condition = parts.guide_condition(common.to_model_images(low, res, device))
        noisy, noise, timesteps = common.noised(scheduler, latents, gen)
        target = common.diffusion_target(scheduler, latents, noise, timesteps)
        n = len(index)
        with precision.autocast():
            pred = parts.predict_noise(
                noisy.to(parts.dtype),
                timesteps,
                pivot_embeds.expand(n, -1, -1),
                empty_embeds.expand(n, -1, -1),
                condition.to(parts.dtype),
                guide_scale=config.guide_scale,
            )
        return F.mse_loss(pred.float(), target)

    guide.train()
    try:
        common.run_adapter_steps(
            loop, compute_loss=compute_loss, optimizer=optimizer, scaler=scaler, params=params,
            adapter_tensors=lambda: guide_adapter_tensors(guide, config.full_modules), work_dir=work_dir,
            run_id=run_id, start=start, losses=losses, progress=progress,
        )  # fmt: skip
    finally:
        guide.eval()
        guide.requires_grad_(False)
        if checkpointing:
            unet.disable_gradient_checkpointing()
            guide.disable_gradient_checkpointing()
    settings["steps_done"] = len(losses)
    settings["final_loss"] = float(np.mean(losses[-20:])) if losses else None
    return Stage2Result(guide_adapter_tensors(guide, config.full_modules), settings, tuple(losses))


def _load_adapter_into_training(guide, tensors: dict) -> None:
    from facefix.restorers.adapters import set_adapter_state

    lora = {k[len("lora.") :]: v for k, v in tensors.items() if k.startswith("lora.")}
    set_adapter_state(guide, lora, "facefix", "stage-2 checkpoint")
    params = dict(guide.named_parameters())
    with torch.no_grad():
        for key, value in tensors.items():
            if key.startswith("full."):
                params[key[len("full.") :]].copy_(value)
    for name, param in guide.named_parameters():
        if "lora_" in name:
            param.data = param.data.float()
