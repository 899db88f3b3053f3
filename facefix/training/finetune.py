"""Album adaptation (Kuai et al., WACV 2025), step 2: fine-tune the fast restorer on its album.

The pairs are (degraded album face, pseudo-target) from
:mod:`facefix.training.pseudo_targets`. The fast restorer is fine-tuned on
them with the enroll loss (L1 + FFT + image gradients,
:func:`facefix.training.loop.restoration_loss`) plus an input-fidelity
term, within a time budget, resumable (the loop is
:func:`facefix.training.loop.fit`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facefix.errors import ModelError, UsageError
from facefix.restorers.fast import FastConfig, FastNet, export_weights, weights_settings
from facefix.training.loop import (
    Batch,
    StepInfo,
    TrainConfig,
    TrainResult,
    fit,
    jsonable,
    restoration_loss,
    resume_point,
)
from facefix.training.pseudo_targets import downsample

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "adapt_train.ckpt"


# --------------------------------------------------------------------------- fine-tuning


@dataclass(frozen=True)
class FinetuneConfig:
    """How the fast restorer is fine-tuned on (degraded input, pseudo-target) pairs.

    Args:
        train: The enroll training settings reused here: window ``patch``, ``batch``,
            peak learning rate ``lr_finetune``, warm-up, cosine floor, the loss weights
            ``fft_weight`` and ``grad_weight``, precision, checkpoint interval, gradient clip.
        fidelity_weight: Weight of L1 between the output's and the *input's* ``fidelity_scale``×
            block means: 8×8 means survive JPEG (its DC terms), noise and mild blur, so this keeps
            the student from learning structure the prior invented at that scale.
        fidelity_scale: Block size of the fidelity term (512-face pixels).
        flip: Random horizontal flips of the pairs.
    """

    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr_finetune=1e-4, warmup_steps=20))
    fidelity_weight: float = 0.5
    fidelity_scale: int = 8
    flip: bool = True


def pair_loss(pred: torch.Tensor, target: torch.Tensor, degraded: torch.Tensor, config: FinetuneConfig) -> torch.Tensor:
    """The fine-tuning loss: :func:`restoration_loss` to the pseudo-target + input fidelity."""
    loss = restoration_loss(pred, target, config.train)
    if config.fidelity_weight > 0 and config.fidelity_scale > 1:
        s = config.fidelity_scale
        loss = loss + config.fidelity_weight * F.l1_loss(downsample(pred.float(), s), downsample(degraded.float(), s))
    return loss


class PairWindows:
    """Aligned random windows of (degraded, pseudo-target) pairs, deterministic given ``rng``."""

    def __init__(self, inputs: np.ndarray, targets: np.ndarray, config: FinetuneConfig, rng: np.random.Generator,
                 grid: int = 16) -> None:
        self.inputs, self.targets, self.config, self.rng = inputs, targets, config, rng
        self.grid = max(1, grid)  # windows start on the restorer's colour-lock grid

    def batch(self) -> Batch:
        """(pseudo-target, input, box) windows, as :func:`facefix.training.loop.fit` takes them."""
        cfg, rng, p = self.config, self.rng, self.config.train.patch
        h, w = self.inputs.shape[1:3]
        bad, good, boxes = [], [], []
        for _ in range(cfg.train.batch):
            i = int(rng.integers(len(self.inputs)))
            y0 = int(rng.integers(0, (h - p) // self.grid + 1)) * self.grid
            x0 = int(rng.integers(0, (w - p) // self.grid + 1)) * self.grid
            a, b = self.inputs[i, y0 : y0 + p, x0 : x0 + p], self.targets[i, y0 : y0 + p, x0 : x0 + p]
            if cfg.flip and rng.random() < 0.5:
                # A mirrored window is the same window of the mirrored face.
                a, b, x0 = a[:, ::-1], b[:, ::-1], w - x0 - p
            bad.append(a)
            good.append(b)
            boxes.append((x0 / w, y0 / h, (x0 + p) / w, (y0 + p) / h))
        to_t = lambda arr: torch.from_numpy(np.stack(arr).astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()  # noqa: E731
        return to_t(good), to_t(bad), torch.tensor(boxes, dtype=torch.float32)


def _check_pairs(inputs: np.ndarray, targets: np.ndarray, config: FinetuneConfig, net: FastNet) -> None:
    for what, arr in (("inputs", inputs), ("pseudo-targets", targets)):
        if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
            raise UsageError(f"{what} must be uint8 (N, H, W, 3), got {getattr(arr, 'dtype', type(arr))} {getattr(arr, 'shape', '')}")
    if inputs.shape != targets.shape:
        raise UsageError(f"inputs {inputs.shape} and pseudo-targets {targets.shape} must have the same shape")
    if len(inputs) == 0:
        raise UsageError("no (input, pseudo-target) pairs to fine-tune on; the album gave no usable faces")
    p = config.train.patch
    if p > min(inputs.shape[1:3]) or p % net.multiple:
        raise UsageError(f"fine-tune window {p} must be a multiple of {net.multiple} and fit the faces")


@torch.no_grad()
def evaluate_pairs(tensors: dict[str, torch.Tensor], model_config: FastConfig, inputs: np.ndarray, targets: np.ndarray,
                   config: FinetuneConfig = FinetuneConfig(), *, limit: int = 8, device: str = "cpu") -> float:
    """Mean :func:`pair_loss` of a restorer over (up to ``limit``) whole pairs, fp32."""
    net = FastNet(model_config)
    net.load_state_dict(tensors)
    net.to(device).eval()
    losses = []
    for i in range(min(limit, len(inputs))):
        x = torch.from_numpy(inputs[i : i + 1].astype(np.float32) / 255.0).permute(0, 3, 1, 2).to(device)
        t = torch.from_numpy(targets[i : i + 1].astype(np.float32) / 255.0).permute(0, 3, 1, 2).to(device)
        losses.append(float(pair_loss(net(x), t, x, config)))
    return float(np.mean(losses)) if losses else float("nan")


def finetune_on_pairs(
    inputs: np.ndarray,
    targets: np.ndarray,
    *,
    init: dict[str, torch.Tensor],
    model_config: FastConfig,
    budget_s: float = 600.0,
    max_steps: int | None = None,
    seed: int = 0,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    on_step: Callable[[StepInfo], None] | None = None,
    config: FinetuneConfig | None = None,
    device: str = "cpu",
) -> TrainResult:
    """Fine-tune a fast restorer on (degraded input, pseudo-target) pairs within a time budget.

    The loop is :func:`facefix.training.loop.fit` (warm-up + cosine over the
    budget, checkpoints every ``checkpoint_every_s``, Ctrl-C keeps the last good
    weights), with the pairs given instead of synthesised.

    Args:
        inputs: uint8 (N, 512, 512, 3) degraded aligned faces from the album.
        targets: uint8, same shape: their pseudo-targets.
        init: Start weights (the person's or generic fast restorer).
        model_config: Their network shape.
        budget_s: Seconds, counting time already spent in a resumed run.
        max_steps: Also stop after this many steps in total.
        seed: Seeds the windows.
        checkpoint_dir: Where ``adapt_train.ckpt`` is kept (None: no checkpoint).
        resume: Continue from that checkpoint when there is one.
        on_step: Called with a :class:`StepInfo` after every step.
        config: :class:`FinetuneConfig`.
        device: Torch device.

    Returns:
        A :class:`TrainResult` (``settings`` are ready for :meth:`FastRestorer.load`).
    """
    config = config or FinetuneConfig()
    tc = config.train
    dev = torch.device(device)
    net = FastNet(model_config)
    try:
        net.load_state_dict(init, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"start weights do not fit the model shape {model_config} ({exc})") from exc
    _check_pairs(inputs, targets, config, net)
    net.to(dev).train()
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr_finetune, betas=(0.9, 0.99), weight_decay=tc.weight_decay)
    rng = np.random.default_rng(seed)
    ckpt, step, elapsed_before, history = resume_point(checkpoint_dir, resume, net, opt, rng, model_config,
                                                       "adaptation", name=CHECKPOINT_NAME)
    windows = PairWindows(inputs, targets, config, rng, grid=max(1, model_config.color_lock))

    step, history, interrupted, seconds = fit(
        net, opt, next_batch=windows.batch, loss_fn=lambda pred, good, bad: pair_loss(pred, good, bad, config),
        config=tc, peak_lr=tc.lr_finetune, budget_s=budget_s, max_steps=max_steps, rng=rng, ckpt_path=ckpt,
        step=step, elapsed_before=elapsed_before, history=history, on_step=on_step, device=dev,
        what="adaptation",
    )
    net.eval()
    tensors = export_weights(net)
    settings = weights_settings(
        model_config,
        training={
            "kind": "album-adaptation",
            "steps": step,
            "seconds": round(seconds, 1),
            "faces": int(len(inputs)),
            "seed": seed,
            "interrupted": interrupted,
            "finetune_config": jsonable(asdict(config)),
        },
    )
    log.info("adapted restorer: %d steps in %.0f s, loss %.4f", step, seconds, history[-1] if history else float("nan"))
    return TrainResult(tensors, settings, step, interrupted, history)


__all__ = ["FinetuneConfig", "finetune_on_pairs", "pair_loss", "evaluate_pairs", "PairWindows"]
