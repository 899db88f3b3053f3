"""Train the fast restorer on a person's (or everyone's) aligned reference faces.

A generic model is trained from scratch (``init=None``) on every enrolled
reference; a person's model starts from the generic weights (``init=``) with a
lower learning rate. The loop itself (pairs, loss, budget, checkpoints) is
:func:`facefix.training.loop.fit`, shared with album adaptation.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from facefix.errors import ModelError
from facefix.restorers.fast import FastConfig, FastNet, export_weights, weights_settings
from facefix.training.loop import (
    BatchPrefetcher,
    PairSampler,
    StepInfo,
    TrainConfig,
    TrainResult,
    check_targets,
    data_workers,
    fit,
    jsonable,
    restoration_loss,
    resume_point,
)

logger = logging.getLogger(__name__)


def train_fast(
    targets: np.ndarray,
    *,
    init: dict[str, torch.Tensor] | None = None,
    budget_s: float = 600.0,
    max_steps: int | None = None,
    seed: int = 0,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    on_step: Callable[[StepInfo], None] | None = None,
    config: TrainConfig | None = None,
    model_config: FastConfig | None = None,
    device: str = "cpu",
    lr: float | None = None,
) -> TrainResult:
    """Train (or fine-tune) a fast restorer within a time budget.

    Args:
        targets: uint8 (N, 512, 512, 3) aligned clean faces.
        init: Start weights (e.g. the generic model's tensors); ``None`` trains from scratch.
        budget_s: Seconds of training, counting time already spent in a resumed run.
        max_steps: Stop after this many steps in total (``None`` = only the budget limits).
        seed: Seeds the network init and every random draw of the data.
        checkpoint_dir: Where to keep ``fast_train.ckpt`` (every ``checkpoint_every_s``);
            ``None`` keeps no checkpoint.
        resume: Continue from the checkpoint in ``checkpoint_dir`` when there is one.
        on_step: Called after every step with a :class:`StepInfo` (drive a progress bar here).
        config: Training settings; ``TrainConfig()`` by default.
        model_config: Network shape for a fresh model (and to read ``init``); ``FastConfig()`` by default.
        device: Torch device to train on.
        lr: Peak learning rate; default ``config.lr_scratch`` from scratch and
            ``config.lr_finetune`` from ``init``. An update of the generic model
            from its previous weights passes ``lr_scratch``: it learns many faces,
            not one person.

    Returns:
        A :class:`TrainResult`; ``interrupted`` is True when Ctrl-C stopped it.
    """
    config = config or TrainConfig()
    model_config = model_config or FastConfig()
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(seed)
        net = FastNet(model_config)
    if init is not None:
        try:
            net.load_state_dict(init, strict=True)
        except RuntimeError as exc:
            raise ModelError(f"start weights do not fit the model shape {model_config} ({exc}); "
                             "pass the FastConfig the start weights were made with") from exc
    check_targets(targets, config, net)
    net.to(dev).train()
    peak_lr = lr if lr is not None else (config.lr_scratch if init is None else config.lr_finetune)
    opt = torch.optim.AdamW(net.parameters(), lr=peak_lr, betas=(0.9, 0.99), weight_decay=config.weight_decay)
    rng = np.random.default_rng(seed)
    step, elapsed_before, history = 0, 0.0, []

    ckpt_path, step, elapsed_before, history = resume_point(checkpoint_dir, resume, net, opt, rng, model_config,
                                                            "fast-restorer training")
    batches = BatchPrefetcher(PairSampler(targets, config, rng).batch_from, rng, data_workers(config.data_workers, dev))
    try:
        step, history, interrupted, seconds = fit(
            net, opt, next_batch=batches,
            loss_fn=lambda pred, clean, bad: restoration_loss(pred, clean, config),
            config=config, peak_lr=peak_lr, budget_s=budget_s, max_steps=max_steps, rng=rng, ckpt_path=ckpt_path,
            step=step, elapsed_before=elapsed_before, history=history, on_step=on_step, device=dev, what="training",
        )  # fmt: skip
    finally:
        batches.close()

    net.eval()
    tensors = export_weights(net)
    settings = weights_settings(
        model_config,
        training={
            "steps": step,
            "seconds": round(seconds, 1),
            "faces": int(len(targets)),
            "seed": seed,
            "from": "init" if init is not None else "scratch",
            "interrupted": interrupted,
            "train_config": jsonable(asdict(config)),
        },
    )
    logger.info("fast restorer trained: %d steps in %.0f s, final loss %.4f", step, seconds,
                history[-1] if history else float("nan"))
    return TrainResult(tensors, settings, step, interrupted, history)
