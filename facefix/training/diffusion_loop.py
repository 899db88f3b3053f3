"""What both tuning stages share: progress reports, resumable checkpoints, precision, images.

Checkpoints are one safetensors file per stage (``checkpoint.safetensors`` in
the stage's work directory), written to a temporary name and renamed, so a
Ctrl-C or a crash always leaves the last good one. The file holds the trainable
tensors (``model.*``), the optimizer's moment tensors (``optim.*``) and, in its
metadata, the step, the losses so far and a fingerprint of everything that
shaped the run; a rerun with the same fingerprint resumes from it. Randomness
is drawn per step from ``(seed, step)``, so a resumed run takes exactly the
steps an uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from facefix.common.atomic import atomic_output
from facefix.common.files import stable_json

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.safetensors"


@dataclass(frozen=True)
class TrainProgress:
    """One report per optimizer step (for a single progress display).

    Args:
        stage: ``stage1`` or ``stage2``.
        step: steps done, 1-based.
        total: steps planned.
        loss: this step's loss.
        resumed_from: step the run resumed at (0 for a fresh run).
    """

    stage: str
    step: int
    total: int
    loss: float
    resumed_from: int = 0


ProgressFn = Callable[[TrainProgress], None]


def fingerprint(*parts) -> str:
    """Hash of JSON-able settings and arrays/tensors: the identity of a training run."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, torch.Tensor):
            digest.update(part.detach().cpu().contiguous().numpy().tobytes())
        else:
            digest.update(stable_json(part))
    return digest.hexdigest()[:20]


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator for one step (resumable randomness)."""
    return torch.Generator("cpu").manual_seed((seed * 1_000_003 + step) % (2**63))


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(work_dir: Path, model_tensors: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, meta: dict) -> Path:
    """Write the stage's checkpoint atomically."""
    from safetensors.torch import save_file

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model_tensors.items()}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous()
    with atomic_output(work_dir / CHECKPOINT) as tmp:
        save_file(tensors, str(tmp), metadata={"facefix": json.dumps(meta)})
    return work_dir / CHECKPOINT


def load_checkpoint(work_dir: Path | None, expected_fingerprint: str) -> tuple[dict, dict, dict] | None:
    """``(model tensors, optimizer state by index, meta)`` of a matching checkpoint, else None."""
    from safetensors import safe_open

    if work_dir is None or not (Path(work_dir) / CHECKPOINT).is_file():
        return None
    path = Path(work_dir) / CHECKPOINT
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads(fh.metadata()["facefix"])
            if meta.get("fingerprint") != expected_fingerprint:
                log.warning("ignoring checkpoint %s: it belongs to a run with other settings or data", path)
                return None
            model, optim = {}, {}
            for key in fh.keys():
                if key.startswith("model."):
                    model[key[len("model.") :]] = fh.get_tensor(key)
                elif key.startswith("optim."):
                    _, index, name = key.split(".", 2)
                    optim.setdefault(int(index), {})[name] = fh.get_tensor(key)
    except Exception as exc:  # a damaged checkpoint costs a restart, not the run
        log.warning("ignoring unreadable checkpoint %s: %s", path, exc)
        return None
    return model, optim, meta


def restore_optimizer(optimizer: torch.optim.Optimizer, state: dict[int, dict]) -> None:
    current = optimizer.state_dict()
    optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})


# --------------------------------------------------------------------------- precision


@dataclass(frozen=True)
class Precision:
    """How a step runs: autocast dtype (None: plain fp32) and a loss scaler for fp16."""

    device_type: str
    autocast_dtype: torch.dtype | None

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.autocast_dtype)

    def scaler(self):
        return torch.amp.GradScaler(self.device_type, enabled=self.autocast_dtype == torch.float16)


def checkpointing_for(setting: bool | str, device: torch.device) -> bool:
    """Whether to use gradient checkpointing: ``True``/``False`` as given; ``auto`` where memory is short.

    Measured on an H100 at 512 px, batch 2 (docs/benchmarks.md): checkpointing
    halved the step rate and lowered the peak by nothing visible (5.8 GB
    either way), so ``auto`` keeps it for CUDA cards under 16 GiB only.
    """
    if isinstance(setting, bool):
        return setting
    if setting != "auto":
        raise ValueError(f"gradient_checkpointing must be true, false or 'auto', got {setting!r}")
    if device.type != "cuda":
        return False
    return torch.cuda.get_device_properties(device).total_memory < 16 * 2**30


def precision_for(device: torch.device, mixed_precision: str) -> Precision:
    """``auto``: the weights' dtype on CUDA (fp16/bf16), fp32 elsewhere; or ``fp16``, ``bf16``, ``no``."""
    if device.type != "cuda" or mixed_precision == "no":
        return Precision(device.type, None)
    if mixed_precision == "bf16":
        return Precision("cuda", torch.bfloat16)
    return Precision("cuda", torch.float16)


def set_attention(module: torch.nn.Module, attention: str) -> None:
    """``sdpa`` (default in diffusers), ``xformers`` (if installed) or ``sliced``."""
    if attention == "xformers":
        module.enable_xformers_memory_efficient_attention()
    elif attention == "sliced":
        module.set_attention_slice("auto")
    elif attention != "sdpa":
        raise ValueError(f"unknown attention {attention!r}; use sdpa, xformers or sliced")


# --------------------------------------------------------------------------- images / loss


def to_model_images(images: np.ndarray, size: int, device, *, flip: bool = False) -> torch.Tensor:
    """(N, H, W, 3) float [0, 1] -> (N, 3, size, size) float32 on ``device`` (antialiased resize)."""
    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
    if tensor.shape[-1] != size or tensor.shape[-2] != size:
        tensor = F.interpolate(tensor, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    if flip:
        tensor = torch.flip(tensor, dims=[-1])
    return tensor.to(device)


def encode_distribution(parts, images: torch.Tensor, batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled latent mean and std of images in [0, 1] (the VAE is frozen: encode once)."""
    means, stds = [], []
    scale = parts.vae.config.scaling_factor
    vae_param = next(parts.vae.parameters())
    with torch.no_grad():
        for chunk in images.split(batch_size):
            dist = parts.vae.encode((chunk * 2 - 1).to(vae_param.device, vae_param.dtype)).latent_dist
            means.append(dist.mean.float() * scale)
            stds.append(dist.std.float() * scale)
    return torch.cat(means), torch.cat(stds)


def diffusion_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet must predict: the noise (epsilon models) or the velocity (v models)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported prediction type {kind!r}")


def noised(scheduler, latents: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(noisy latents, noise, timesteps) for a training step, drawn from ``generator``."""
    noise = torch.randn(latents.shape, generator=generator).to(latents.device)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator)
    timesteps = timesteps.to(latents.device)
    return scheduler.add_noise(latents, noise, timesteps), noise, timesteps


def lr_at(step: int, base_lr: float, warmup: int) -> float:
    """Constant learning rate after a linear warm-up."""
    return base_lr * min(1.0, (step + 1) / max(1, warmup))


@dataclass(frozen=True)
class LoopSettings:
    """What :func:`run_adapter_steps` needs from a stage's config."""

    stage: str  # "stage1" / "stage2": names progress reports and log lines
    steps: int
    lr: float
    warmup: int
    seed: int
    max_grad_norm: float
    checkpoint_every: int


def resume_adapter(work_dir: Path | None, run_id: str, optimizer, load_state: Callable[[dict], None],
                   loop: LoopSettings) -> tuple[int, list[float]]:
    """Load the stage's checkpoint when one of this run exists: ``(first step, losses so far)``."""
    resumed = load_checkpoint(work_dir, run_id)
    if resumed is None:
        return 0, []
    model_state, optim_state, meta = resumed
    load_state(model_state)
    restore_optimizer(optimizer, optim_state)
    log.info("%s: resuming at step %d of %d", loop.stage.replace("stage", "stage "), meta["step"], loop.steps)
    return meta["step"], list(meta["losses"])


def run_adapter_steps(
    loop: LoopSettings,
    *,
    compute_loss: Callable[[int, torch.Generator], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scaler,
    params: list[torch.nn.Parameter],
    adapter_tensors: Callable[[], dict[str, torch.Tensor]],
    work_dir: Path | None,
    run_id: str,
    start: int,
    losses: list[float],
    progress: Callable[[TrainProgress], None] | None,
) -> list[float]:
    """The optimisation loop both Dual-Pivot stages share.

    Per step: the warm-up learning rate, ``compute_loss(step, generator)`` (the
    stage's forward pass, seeded by step so a resumed run draws the same
    batches), a scaled backward pass, gradient clipping, the optimiser step;
    a checkpoint every ``checkpoint_every`` steps and at the end; a progress
    report. Returns ``losses`` with this run's appended.
    """
    for step in range(start, loop.steps):
        gen = step_generator(loop.seed, step)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, loop.lr, loop.warmup)
        loss = compute_loss(step, gen)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, loop.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        done = step + 1
        if work_dir is not None and (done % loop.checkpoint_every == 0 or done == loop.steps):
            save_checkpoint(work_dir, adapter_tensors(), optimizer, {"fingerprint": run_id, "step": done, "losses": losses})
        if progress is not None:
            progress(TrainProgress(loop.stage, done, loop.steps, losses[-1], start))
    return losses


def loop_settings(stage: str, config) -> LoopSettings:
    """The loop's part of a Stage1Config / Stage2Config."""
    return LoopSettings(stage, config.steps, config.lr, config.warmup, config.seed, config.max_grad_norm,
                        config.checkpoint_every)
