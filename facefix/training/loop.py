"""The fast restorer's training loop (:func:`fit`), shared by enrolment and album adaptation.

Training pairs are made on the fly: a reference is augmented (flip, small
shift/zoom/rotation, colour jitter, sometimes gray), a window is cut at full
512-template pixel scale, and its degraded copy comes from
:mod:`facefix.quality.degrade`. The loss is L1 + a small FFT term + a small
image-gradient term (both push against the soft, averaged look that plain
L1/L2 gives). Training stops at a time budget (or a step cap), keeps a
checkpoint that a later call can ``resume`` from, and treats Ctrl-C as "stop
now, keep what you have".
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from facefix.common.atomic import atomic_output
from facefix.errors import ModelError, UsageError
from facefix.quality.degrade import (
    Augmentation,
    DegradationRecipe,
    augment,
    degrade_enlarged,
    get_recipe,
    sample_degradation,
)
from facefix.restorers.fast import (
    FastConfig,
    FastNet,
    FastRestorer,
    resolve_precision,
)

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "fast_train.ckpt"


@dataclass(frozen=True)
class TrainConfig:
    """How the fast restorer trains. Defaults are what enroll uses.

    Args:
        patch: Side of the training windows, cut at the 512 template's pixel scale.
        batch: Windows per step.
        lr_scratch: Peak learning rate when training from scratch (the generic model).
        lr_finetune: Peak learning rate when starting from ``init`` (a person's model).
        warmup_steps: Linear warm-up steps.
        min_lr_frac: The cosine schedule (over the budget) ends at this fraction of the peak.
        weight_decay: AdamW weight decay.
        fft_weight: Weight of the L1 loss on the 2-D FFT (real and imaginary parts).
        grad_weight: Weight of the L1 loss on horizontal/vertical image gradients.
        recipe: Degradation recipe or its name (see :data:`facefix.quality.degrade.RECIPES`).
        augmentation: Random changes to the clean faces.
        checkpoint_every_s: Seconds between checkpoints.
        precision: "auto" (bf16 autocast where the CPU/GPU has it), "fp32" or "bf16".
        clip_grad: Gradient-norm clip.
        spike_factor: A step whose loss exceeds this many times the running loss is skipped;
            three in a row roll back to the last snapshot with half the learning rate.
        snapshot_every: Steps between in-memory snapshots used for that roll-back.
        data_workers: Threads making training pairs ahead (``auto``: see :func:`data_workers`).
        enlarge_prob: Share of training faces made as small faces enlarged into the template
            (:func:`facefix.quality.degrade.degrade_enlarged`: degraded at the small size, so their
            noise and JPEG blocks are enlarged too, as in a small face of a real photo); the
            rest are degraded at the template's scale. 0.15 measured best at 10 CPU minutes
            (docs/fast_restorer.md): small severe faces much truer, large mild ones as good.
        enlarge_max: Largest enlargement drawn (log-uniformly from 1) for those faces.
    """

    patch: int = 128
    batch: int = 8
    lr_scratch: float = 3e-4
    lr_finetune: float = 6e-4
    warmup_steps: int = 100
    min_lr_frac: float = 0.05
    weight_decay: float = 0.0
    fft_weight: float = 0.05
    grad_weight: float = 0.1
    recipe: str | DegradationRecipe = "default"
    augmentation: Augmentation = field(default_factory=Augmentation)
    checkpoint_every_s: float = 45.0
    precision: str = "auto"
    clip_grad: float = 1.0
    spike_factor: float = 4.0
    snapshot_every: int = 25
    data_workers: int | str = "auto"
    enlarge_prob: float = 0.15
    enlarge_max: float = 8.0


@dataclass(frozen=True)
class StepInfo:
    """What ``on_step`` receives after every optimisation step.

    Args:
        step: Steps done so far (counting resumed ones).
        total_steps: Best estimate of the steps the budget allows.
        loss: This step's loss.
        smoothed_loss: Exponential moving average of the loss.
        elapsed_s: Training seconds so far (counting resumed time).
        eta_s: Estimated seconds left.
        lr: Learning rate used for this step.
    """

    step: int
    total_steps: int
    loss: float
    smoothed_loss: float
    elapsed_s: float
    eta_s: float
    lr: float


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train_fast`.

    Args:
        tensors: The trained weights (CPU tensors), for :meth:`FastRestorer.load`.
        settings: Settings to keep beside the weights (model config + how it was trained).
        steps: Steps done in total (counting resumed ones).
        interrupted: True when Ctrl-C stopped training early.
        loss_history: Loss of every step, in order (counting resumed ones).
    """

    tensors: dict[str, torch.Tensor]
    settings: dict[str, Any]
    steps: int
    interrupted: bool
    loss_history: list[float]

    def restorer(self, **kwargs: Any) -> FastRestorer:
        """The trained weights as a ready :class:`FastRestorer`."""
        return FastRestorer.load(self.tensors, self.settings, **kwargs)


#: A training batch: (target, input, box) — (N, 3, H, W) tensors and the (N, 4) windows'
#: places in their faces (x0, y0, x1, y1 as fractions; see :meth:`FastNet.forward`).
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class PairSampler:
    """Makes (clean, degraded) training windows from uint8 aligned faces, deterministically.

    Each batch is a pure function of one seed (:meth:`batch_from`); :meth:`batch`
    draws that seed from ``rng``, so the sequence depends only on ``rng`` and
    batches can be made ahead, in parallel (:class:`BatchPrefetcher`).
    """

    def __init__(self, targets: np.ndarray, config: TrainConfig, rng: np.random.Generator) -> None:
        self.targets = targets
        self.config = config
        self.recipe = get_recipe(config.recipe) if isinstance(config.recipe, str) else config.recipe
        self.rng = rng

    def batch(self) -> Batch:
        return self.batch_from(draw_seed(self.rng))

    def batch_from(self, seed: int) -> Batch:
        cfg, rng = self.config, np.random.default_rng(seed)
        clean, bad, boxes = [], [], []
        for _ in range(cfg.batch):
            img = self.targets[int(rng.integers(len(self.targets)))]  # uint8: warped, then scaled
            enlarge = 1.0
            if cfg.enlarge_prob > 0 and rng.random() < cfg.enlarge_prob:
                # A small face enlarged into the template: degraded at its own size.
                enlarge = float(np.exp(rng.uniform(0.0, np.log(cfg.enlarge_max))))
            # An enlarged face's window gets a margin, so its blur sees real context.
            m, side = (cfg.patch // 4 if enlarge > 1 else 0), img.shape[1]
            img, box = augment(img, rng, cfg.augmentation, crop=cfg.patch + 2 * m, with_box=True)
            deg = sample_degradation(self.recipe, rng)
            low = degrade_enlarged(img, deg, rng, enlarge, kernel_size=self.recipe.kernel_size)
            if m:
                img, low = img[m:-m, m:-m], low[m:-m, m:-m]
                box = (box[0] + m / side, box[1] + m / side, box[2] - m / side, box[3] - m / side)
            clean.append(img)
            boxes.append(box)
            bad.append(low)
        to_t = lambda a: torch.from_numpy(np.stack(a)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
        return to_t(clean), to_t(bad), torch.tensor(boxes, dtype=torch.float32)


def draw_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**63))


class BatchPrefetcher:
    """Makes the next batches in worker threads while the current one trains.

    Seeds are drawn from ``rng`` in order as batches are queued and each batch
    depends only on its seed, so the batches come out in the same order and
    with the same content as ``make(draw_seed(rng))`` called one by one. (A
    checkpoint's ``rng`` is then up to ``depth`` batches ahead: a resumed run
    draws fresh batches, as it would anyway after an interrupt.) The
    degradation (OpenCV blur, resize, JPEG) releases the GIL, so threads run
    it in parallel. ``workers`` 0 makes each batch when asked.
    """

    def __init__(self, make: Callable[[int], Batch], rng: np.random.Generator,
                 workers: int, depth: int | None = None) -> None:
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        self.make, self.rng = make, rng
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="facefix-batches") if workers > 0 else None
        self.depth = depth or 2 * workers
        self.queue: deque = deque()

    def __call__(self) -> Batch:
        if self.pool is None:
            return self.make(draw_seed(self.rng))
        while len(self.queue) < self.depth:
            self.queue.append(self.pool.submit(self.make, draw_seed(self.rng)))
        batch = self.queue.popleft().result()
        self.queue.append(self.pool.submit(self.make, draw_seed(self.rng)))
        return batch

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.queue.clear()


def data_workers(setting: int | str, device: torch.device) -> int:
    """Threads that make training batches: ``auto`` = one per spare core on a GPU machine
    (the GPU waits for data otherwise), one on a CPU with several cores, none on one core."""
    if setting != "auto":
        return max(0, int(setting))
    cores = os.cpu_count() or 1
    if device.type == "cuda":
        return max(1, min(8, cores - 1))
    return 1 if cores > 1 else 0


def restoration_loss(pred: torch.Tensor, target: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """L1 + ``fft_weight`` · L1(FFT) + ``grad_weight`` · L1(image gradients), in fp32."""
    pred, target = pred.float(), target.float()
    loss = F.l1_loss(pred, target)
    if config.fft_weight > 0:
        fp = torch.fft.rfft2(pred, norm="ortho")
        ft = torch.fft.rfft2(target, norm="ortho")
        loss = loss + config.fft_weight * F.l1_loss(torch.view_as_real(fp), torch.view_as_real(ft))
    if config.grad_weight > 0:
        dxp, dxt = pred[..., :, 1:] - pred[..., :, :-1], target[..., :, 1:] - target[..., :, :-1]
        dyp, dyt = pred[..., 1:, :] - pred[..., :-1, :], target[..., 1:, :] - target[..., :-1, :]
        loss = loss + config.grad_weight * (F.l1_loss(dxp, dxt) + F.l1_loss(dyp, dyt))
    return loss


def _lr_at(progress: float, step: int, peak: float, config: TrainConfig) -> float:
    warm = min(1.0, (step + 1) / max(1, config.warmup_steps))
    cos = config.min_lr_frac + (1 - config.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return peak * warm * cos


def check_targets(targets: np.ndarray, config: TrainConfig, net: FastNet) -> None:
    if not isinstance(targets, np.ndarray) or targets.ndim != 4 or targets.shape[-1] != 3:
        shape = getattr(targets, "shape", type(targets).__name__)
        raise UsageError(f"training faces must be a uint8 array (N, H, W, 3), got {shape}")
    if targets.dtype != np.uint8:
        raise UsageError(f"training faces must be uint8, got {targets.dtype}; pass (crops * 255).round().astype(np.uint8)")
    if len(targets) == 0:
        raise UsageError("no training faces were given; enroll at least one reference photo")
    if config.patch > min(targets.shape[1:3]) or config.patch % net.multiple:
        raise UsageError(
            f"training patch {config.patch} must be a multiple of {net.multiple} and fit the "
            f"{targets.shape[2]}x{targets.shape[1]} faces; change TrainConfig.patch"
        )


def _save_checkpoint(path: Path, net: FastNet, opt: torch.optim.Optimizer, step: int,
                     elapsed: float, rng: np.random.Generator, history: list[float]) -> None:
    state = {
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "step": step,
        "elapsed": elapsed,
        "rng": rng.bit_generator.state,
        "history": torch.tensor(history, dtype=torch.float64),
        "config": net.config.to_dict(),
    }
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises a zoo of types for a bad file
        raise ModelError(f"training checkpoint {path} is unreadable ({exc}); delete it and train without --resume") from exc


def resume_point(checkpoint_dir: Path | str | None, resume: bool, net: FastNet, opt: torch.optim.Optimizer,
                 rng: np.random.Generator, model_config: FastConfig, what: str,
                 name: str = CHECKPOINT_NAME) -> tuple[Path | None, int, float, list[float]]:
    """Where :func:`fit` keeps its checkpoint, and where it starts: ``(path, step, seconds done, losses)``.

    With ``resume`` and a checkpoint there, the network, optimiser and data
    generator are restored from it (in place) and its counters returned.
    """
    if checkpoint_dir is None:
        return None, 0, 0.0, []
    path = Path(checkpoint_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if not (resume and path.is_file()):
        if resume:
            logger.info("no checkpoint in %s; starting fresh", checkpoint_dir)
        return path, 0, 0.0, []
    state = _load_checkpoint(path)
    if state.get("config") != model_config.to_dict():
        raise ModelError(f"checkpoint {path} is for another model shape; delete it or run without --resume")
    net.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    rng.bit_generator.state = state["rng"]
    step, elapsed = int(state["step"]), float(state["elapsed"])
    logger.info("resuming %s at step %d (%.0f s done)", what, step, elapsed)
    return path, step, elapsed, state["history"].tolist()


def fit(
    net: FastNet,
    opt: torch.optim.Optimizer,
    *,
    next_batch: Callable[[], Batch],
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    config: TrainConfig,
    peak_lr: float,
    budget_s: float,
    max_steps: int | None,
    rng: np.random.Generator,
    ckpt_path: Path | None,
    step: int,
    elapsed_before: float,
    history: list[float],
    on_step: Callable[[StepInfo], None] | None,
    device: torch.device,
    what: str,
) -> tuple[int, list[float], bool, float]:
    """The optimisation loop every fast-restorer training shares.

    Warm-up + cosine over the budget, wild batches skipped and a roll-back with
    half the learning rate on divergence, atomic checkpoints every
    ``config.checkpoint_every_s``, and Ctrl-C keeping the last good weights.

    Args:
        net, opt: the network (in train mode, on ``device``) and its optimiser.
        next_batch: returns a :data:`Batch` of CPU tensors: ``(target, input, box)``.
        loss_fn: ``loss_fn(prediction, target, input)``.
        rng: the data generator (saved in checkpoints).
        ckpt_path: checkpoint file, or None.
        step, elapsed_before, history: where a resumed run starts.
        what: names the run in log messages.

    Returns:
        ``(steps, loss history, interrupted, seconds)``, counting resumed ones.
    """
    amp_dtype = resolve_precision(config.precision, device)
    consistent = True  # False only while the optimiser is changing the weights
    smoothed = history[-1] if history else None
    interrupted = False
    t0 = time.monotonic()
    last_ckpt = t0
    steps_this_run = 0
    skipped = 0  # consecutive skipped steps
    lr_scale = 1.0  # halved on every recovery from divergence
    snapshot: dict[str, Any] | None = None  # last known-good model + optimiser, for recovery

    def elapsed() -> float:
        return elapsed_before + time.monotonic() - t0

    def done() -> bool:
        return elapsed() >= budget_s or (max_steps is not None and step >= max_steps)

    try:
        while not done():
            clean, bad, box = (t.to(device) for t in next_batch())
            progress = elapsed() / budget_s if budget_s > 0 else 1.0
            if max_steps:
                progress = max(progress, step / max_steps)
            lr = _lr_at(progress, step, peak_lr, config) * lr_scale
            for g in opt.param_groups:
                g["lr"] = lr
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype != torch.float32):
                pred = net(bad, box)
            loss = loss_fn(pred, clean, bad)
            value = float(loss.detach())
            if not math.isfinite(value) or (
                smoothed is not None and step > config.warmup_steps and value > config.spike_factor * smoothed
            ):
                # One wild batch is skipped; a run of them means the weights blew up (seen
                # from lr 1.5e-3 on): go back to the last snapshot with half the learning rate.
                opt.zero_grad(set_to_none=True)
                skipped += 1
                logger.debug("loss %.4g at step %d far above the running %.4g; step skipped", value, step, smoothed)
                if skipped >= 3:
                    if snapshot is None or lr_scale < 1 / 16:
                        raise ModelError(
                            f"fast-restorer training diverged at step {step} (loss {value:.4g}); "
                            "lower TrainConfig.lr_scratch / lr_finetune"
                        )
                    net.load_state_dict(snapshot["model"])
                    opt.load_state_dict(snapshot["optimizer"])
                    step, smoothed = snapshot["step"], snapshot["smoothed"]
                    del history[step:]
                    lr_scale *= 0.5
                    skipped = 0
                    logger.warning("training diverged; back to step %d with the learning rate halved", step)
                continue
            if step % config.snapshot_every == 0:  # these weights just gave a normal loss
                snapshot = {"model": copy.deepcopy(net.state_dict()), "optimizer": copy.deepcopy(opt.state_dict()),
                            "step": step, "smoothed": smoothed}
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), config.clip_grad)
            consistent = False  # an interrupt inside opt.step() falls back to the checkpoint
            opt.step()
            consistent = True
            skipped = 0  # only a run of skipped steps means divergence
            step += 1
            steps_this_run += 1
            history.append(value)
            smoothed = value if smoothed is None else 0.98 * smoothed + 0.02 * value
            if ckpt_path is not None and time.monotonic() - last_ckpt >= config.checkpoint_every_s:
                _save_checkpoint(ckpt_path, net, opt, step, elapsed(), rng, history)
                last_ckpt = time.monotonic()
            if on_step is not None:
                spent = time.monotonic() - t0
                rate = steps_this_run / spent if spent > 0 else 0.0
                left_s = max(0.0, budget_s - elapsed())
                total = step + int(left_s * rate)
                if max_steps is not None:
                    total = min(total, max_steps)
                eta = (total - step) / rate if rate > 0 else left_s
                on_step(StepInfo(step, total, value, smoothed, elapsed(), eta, lr))
    except KeyboardInterrupt:
        interrupted = True
        logger.warning("%s interrupted at step %d; keeping the last good weights", what, step)
        if not consistent and ckpt_path is not None and ckpt_path.is_file():
            # Stopped inside the optimiser step: the checkpoint is the last good state.
            state = _load_checkpoint(ckpt_path)
            net.load_state_dict(state["model"])
            step, history = int(state["step"]), state["history"].tolist()
        elif ckpt_path is not None:
            _save_checkpoint(ckpt_path, net, opt, step, elapsed(), rng, history)
    else:
        if ckpt_path is not None:
            _save_checkpoint(ckpt_path, net, opt, step, elapsed(), rng, history)

    return step, history, interrupted, elapsed()


def jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj

