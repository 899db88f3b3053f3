"""Train the learned reference fusion at enroll, from the person's own references.

As GFRNet and ASFFNet do, but from one person's handful of photos on a CPU:

1. **Pairs.** Each reference *j* in turn is the target. It is degraded with the
   project's degradation model (:mod:`facefix.quality.degrade`) the way eval and real
   photos do -- shrunk to the face's size in the photo, blurred, downscaled,
   noised, JPEG'd, enlarged back into the template -- at eval's two levels and at
   random settings between and around them, then pre-cleaned by the restorer the
   person's faces will have at restore time. The person's *other* references
   (never another crop of *j*'s own photo) are ranked by pose and expression and
   warped onto it exactly as at restore time
   (:func:`facefix.restorers.reference.prepare_guides`: landmark TPS + DIS flow).
   The pairs are kept at 256 px (what the network sees, and where it learns
   fastest) and can be cached on disk.
2. **Training.** :class:`facefix.restorers.fusion_net.FusionNet` learns, from
   zero weights (the pre-cleaned face), how much of each guide's detail to take
   where, with the fast restorer's loss and schedule (warm-up + cosine over the
   budget). Each step makes the weights from whole faces and the result in a
   128-px window of each. Random mirror images double the pairs.

The photos of one reference are never both target and guide, so the network
sees guides with the pose, light and expression differences it will meet.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from facefix.errors import ModelError, UsageError
from facefix.quality.degrade import (
    LEVELS,
    Degradation,
    apply_degradation,
    resize_like_alignment,
)
from facefix.quality.same_photo import photo_groups
from facefix.restorers.fusion_net import FusionConfig, FusionNet, detail_bands, fusion_state, fusion_to_bytes, luma
from facefix.restorers.guides import GuideSet
from facefix.restorers.reference import FusionSettings, prepare_guides
from facefix.training.loop import TrainConfig, restoration_loss

logger = logging.getLogger(__name__)

#: Changes whenever the pairs change, so cached pairs are rebuilt.
PAIRS_VERSION = 1


@dataclass(frozen=True)
class FusionTrainConfig:
    """How the fusion trains.

    Args:
        size: side of the training faces (the network runs at any size; 256 px is
            what eval scores and a quarter of the work of 512).
        face_sizes: range of a face's side in the photo for the random degradations (px).
        random_per_reference: random degradations per reference, besides eval's two levels
            at ``level_size`` px.
        level_size: face size of the eval-level pairs.
        pairs_share: at most this share of the budget goes to making pairs.
        batch: faces per step.
        window: side of the square (at ``size``) where each step makes and scores the result;
            the weights always see the whole face.
        lr: peak learning rate (warm-up over ``warmup_steps``, then a cosine over the budget).
        loss: the fast restorer's loss weights and gradient clip.
    """

    size: int = 256
    face_sizes: tuple[int, int] = (128, 400)
    random_per_reference: int = 4
    level_size: int = 256
    pairs_share: float = 0.45
    batch: int = 6
    window: int = 128
    lr: float = 2e-3
    warmup_steps: int = 30
    # gradients weigh more than in the fast restorer's loss: with L1 alone the fusion learned
    # to take little of the guides (soft faces); with 0.5 it takes their edges where they agree
    loss: TrainConfig = field(default_factory=lambda: TrainConfig(precision="fp32", grad_weight=0.5, fft_weight=0.1))
    #: weight of :func:`detail_energy_loss` (0: off), and its scale in px at ``size``
    energy_weight: float = 0.0
    energy_sigma: float = 2.0


@dataclass
class Pairs:
    """Training pairs at ``size`` px: float16 faces (P, 3, S, S), guides (P, k, 3, S, S),
    targets (P, 3, S, S); blur (P,) and distance (P, k); photo (P,) the target's photo group."""

    face: np.ndarray
    guides: np.ndarray
    target: np.ndarray
    blur: np.ndarray
    distance: np.ndarray
    photo: np.ndarray
    levels: list[str]

    def __len__(self) -> int:
        return len(self.face)

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, face=self.face, guides=self.guides, target=self.target, blur=self.blur,
                 distance=self.distance, photo=self.photo, levels=np.array(self.levels))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "Pairs":
        with np.load(path) as z:
            return cls(z["face"], z["guides"], z["target"], z["blur"], z["distance"], z["photo"],
                       [str(v) for v in z["levels"]])


@dataclass(frozen=True)
class FusionTrainResult:
    """Outcome of :func:`train_fusion`.

    Args:
        weights: the weight file's bytes (:func:`facefix.restorers.fusion_net.fusion_from_bytes`).
        net: the trained network.
        tensors, settings: the same as a profile artifact (``ProfileStore.commit_artifact``;
            :func:`facefix.restorers.fusion_net.load_fusion` reads them back).
        steps: optimisation steps.
        pairs: training pairs made (or read from the cache).
        seconds: wall time in all, pairs included.
        loss_history: the loss of every step.
    """

    weights: bytes
    net: FusionNet
    tensors: dict[str, torch.Tensor]
    settings: dict[str, Any]
    steps: int
    pairs: int
    seconds: float
    loss_history: list[float]


def degradation_plan(count: int, config: FusionTrainConfig, seed: int) -> list[list[tuple[str, int, Degradation]]]:
    """For each of ``count`` references: (label, face size, degradation) of its pairs."""
    rng = np.random.default_rng(seed)
    plan = []
    for _ in range(count):
        rows = [(name, config.level_size, Degradation(lv.sigma, lv.sigma, 0.0, lv.scale, lv.noise, lv.jpeg))
                for name, lv in LEVELS.items()]
        for _ in range(config.random_per_reference):
            size = int(rng.integers(config.face_sizes[0], config.face_sizes[1] + 1))
            sigma = float(rng.uniform(1.0, 7.0))
            scale = float(min(np.exp(rng.uniform(np.log(1.5), np.log(8.0))), size / 16))
            rows.append(("random", size, Degradation(sigma, sigma * float(rng.uniform(0.8, 1.25)),
                                                     float(rng.uniform(0, np.pi)), scale,
                                                     float(rng.uniform(0, 15)), int(rng.integers(35, 91)))))
        plan.append(rows)
    return plan


def _photo_groups(references: np.ndarray) -> np.ndarray:

    group = np.zeros(len(references), np.int64)
    for g, members in enumerate(photo_groups(references)):
        group[list(members)] = g
    return group


def build_pairs(references: np.ndarray, base, *, fusion: FusionConfig, settings: FusionSettings,
                config: FusionTrainConfig, seed: int = 0, deadline: float | None = None,
                on_progress: Callable[[float, str], None] | None = None) -> Pairs:
    """Degrade each reference, pre-clean it with ``base`` and warp the others onto it.

    Args:
        references: uint8 (N, 512, 512, 3) the person's aligned references.
        base: the restorer that pre-cleans (what restore will use before the fusion).
        fusion, settings: how many guides; how they are chosen and warped.
        deadline: ``time.monotonic()`` after which no more references are started
            (each reference's pairs are made whole).
    """
    guides = GuideSet.from_crops(references)
    group = _photo_groups(references)
    size, k = config.size, fusion.guides
    rng = np.random.default_rng(seed + 7)
    plan = degradation_plan(len(references), config, seed)
    faces, guide_sets, targets, blurs, dists, photos, levels = [], [], [], [], [], [], []
    down = lambda x: resize_like_alignment(x, size, size)  # noqa: E731
    chw = lambda x: np.ascontiguousarray(np.transpose(x, (2, 0, 1))).astype(np.float16)  # noqa: E731
    order = np.random.default_rng(seed).permutation(len(references))
    for n, j in enumerate(order):
        if deadline is not None and time.monotonic() > deadline and faces:
            logger.info("fusion pairs: the budget's share ran out after %d of %d references", n, len(references))
            break
        exclude = [int(i) for i in np.flatnonzero(group == group[j])]
        if len(exclude) == len(references):
            continue  # no other photo to guide it
        clean = references[j].astype(np.float32) / 255.0
        bads = []
        for _, face_size, deg in plan[j]:
            small = resize_like_alignment(clean, face_size, face_size)
            bads.append(resize_like_alignment(apply_degradation(small, deg, rng), clean.shape[1], clean.shape[0]))
        cleaned = base.restore(np.stack(bads))
        for (label, _, _), pre in zip(plan[j], cleaned):
            prepared = prepare_guides(pre, guides, settings, count=k, exclude=exclude, blur_none=float("inf"))
            if prepared["warped"] is None:
                continue  # sharp enough that restore adds nothing: nothing to learn
            warped = prepared["warped"] + [pre] * (k - len(prepared["warped"]))
            dist = np.zeros(k, np.float32)
            dist[: len(prepared["distance"])] = prepared["distance"]
            faces.append(chw(down(pre)))
            guide_sets.append(np.stack([chw(down(w)) for w in warped]))
            targets.append(chw(down(clean)))
            blurs.append(prepared["blur"])
            dists.append(dist)
            photos.append(int(group[j]))
            levels.append(label)
        if on_progress is not None:
            on_progress((n + 1) / len(references), f"training pairs: {n + 1} of {len(references)} references")
    if not faces:
        raise UsageError("no training pairs for the reference fusion: it needs references from at least two "
                         "different photos")
    return Pairs(np.stack(faces), np.stack(guide_sets), np.stack(targets), np.asarray(blurs, np.float32),
                 np.stack(dists), np.asarray(photos), levels)


def pair_bands(pairs: Pairs, edges: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The detail bands of every pair's face (P, B, 3, S, S) and guides (P, k, B, 3, S, S), float16."""
    hwc = lambda a: np.transpose(a.astype(np.float32), (1, 2, 0))  # noqa: E731
    own = np.stack([detail_bands(hwc(f), edges) for f in pairs.face]).astype(np.float16)
    theirs = np.stack([np.stack([detail_bands(hwc(g), edges) for g in gs]) for gs in pairs.guides]).astype(np.float16)
    return own, theirs


def make_batch(pairs: Pairs, bands: tuple[np.ndarray, np.ndarray], idx: np.ndarray, flip: np.ndarray,
               window: tuple[int, int, int]) -> dict[str, Any]:
    """Network inputs and target for pairs ``idx``, mirrored where ``flip``: whole faces and
    guides (for the weights), the bands and the target inside ``window`` (top, left, side)."""
    top, left, side = window
    size = pairs.face.shape[-1]
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a).astype(np.float32))  # noqa: E731
    own, theirs, target = [], [], []
    for i, f in zip(idx, flip):
        # a mirrored face's window is the mirror of the window at the other side
        cols = slice(size - left - side, size - left) if f else slice(left, left + side)
        rows = slice(top, top + side)
        cut = lambda a: a[..., rows, cols][..., ::-1] if f else a[..., rows, cols]  # noqa: E731,B023
        own.append(cut(bands[0][i]))
        theirs.append(cut(bands[1][i]))
        target.append(cut(pairs.target[i]))
    face, guides = t(pairs.face[idx]), t(pairs.guides[idx])
    ft = torch.from_numpy(np.asarray(flip, bool))
    face[ft] = face[ft].flip(-1)
    guides[ft] = guides[ft].flip(-1)
    return {"face": face, "guides": guides, "blur": t(pairs.blur[idx]), "distance": t(pairs.distance[idx]),
            "own": t(np.stack(own)), "theirs": t(np.stack(theirs)), "target": t(np.stack(target)), "window": window}


def _lr(step: int, progress: float, peak: float, warmup: int, floor: float = 0.05) -> float:
    return peak * min(1.0, (step + 1) / warmup) * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _gaussian(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W), reflect-padded."""
    radius = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype) / sigma) ** 2)
    k = (k / k.sum()).to(x.device)
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def detail_energy_loss(pred: torch.Tensor, target: torch.Tensor, sigma: float) -> torch.Tensor:
    """L1 between the local detail energy of ``pred`` and ``target``: the RMS of their brightness
    finer than ``sigma``, averaged over a neighbourhood of ``2 sigma``. It asks for as much
    detail as the truth has where it has it, and forgives detail a pixel or two off, which a
    pixel loss punishes twice (the fusion learned to take little of the guides under it)."""
    energy = lambda y: torch.sqrt(_gaussian((y - _gaussian(y, sigma)) ** 2, 2 * sigma) + 1e-6)  # noqa: E731
    return F.l1_loss(energy(luma(pred.float())), energy(luma(target.float())))


def fit_fusion(pairs: Pairs, *, fusion: FusionConfig, config: FusionTrainConfig, budget_s: float,
               max_steps: int | None = None, seed: int = 0,
               on_progress: Callable[[float, str], None] | None = None) -> tuple[FusionNet, int, list[float]]:
    """Train a fresh :class:`FusionNet` on ``pairs`` for ``budget_s`` seconds (or ``max_steps``).

    Returns:
        ``(network in eval mode, steps, loss of every step)``.
    """
    start = time.monotonic()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FusionNet(fusion)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, betas=(0.9, 0.99), weight_decay=0.0)
    rng = np.random.default_rng(seed + 11)
    batch = min(config.batch, len(pairs))
    bands = pair_bands(pairs, fusion.bands)
    size = pairs.face.shape[-1]
    side = min(config.window, size)
    train_s = max(0.0, budget_s - (time.monotonic() - start))
    t0 = time.monotonic()
    history: list[float] = []
    steps = 0
    # A loop of its own rather than training.loop.fit: each step makes the whole face's
    # weights but the result (bands, loss) only in a window, which fit's (target, input)
    # batches cannot carry; the schedule (warm-up + cosine over the budget) and the
    # gradient clipping are the same.
    while time.monotonic() - t0 < train_s and (max_steps is None or steps < max_steps):
        idx = rng.choice(len(pairs), batch, replace=False)
        top, left = (int(v) for v in rng.integers(0, size - side + 1, 2))
        b = make_batch(pairs, bands, idx, rng.random(batch) < 0.5, (top, left, side))
        progress = (time.monotonic() - t0) / train_s if train_s > 0 else 1.0
        if max_steps:
            progress = max(progress, steps / max_steps)
        for g in opt.param_groups:
            g["lr"] = _lr(steps, progress, config.lr, config.warmup_steps)
        pred = net(b["face"], b["guides"], b["blur"], b["distance"], b["own"], b["theirs"], window=b["window"])
        loss = restoration_loss(pred, b["target"], config.loss)
        if config.energy_weight > 0:
            loss = loss + config.energy_weight * detail_energy_loss(pred, b["target"], config.energy_sigma)
        value = float(loss.detach())
        opt.zero_grad(set_to_none=True)
        if not math.isfinite(value):
            raise ModelError(f"reference-fusion training diverged at step {steps} (loss {value}); "
                             "lower FusionTrainConfig.lr")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), config.loss.clip_grad)
        opt.step()
        steps += 1
        history.append(value)
        if on_progress is not None and steps % 5 == 0:
            on_progress(min(1.0, (time.monotonic() - t0) / max(train_s, 1e-6)),
                        f"learning the reference fusion: step {steps}, loss {np.mean(history[-20:]):.4f}")
    return net.eval(), steps, history


def _cache_path(cache_dir: Path, references: np.ndarray, base, fusion: FusionConfig, settings: FusionSettings,
                config: FusionTrainConfig, seed: int) -> Path:
    h = hashlib.sha256(np.ascontiguousarray(references).tobytes())
    probe = base.restore((references[:1].astype(np.float32) / 255.0) * 0.9 + 0.05)  # the base's fingerprint
    h.update(np.round(probe * 1024).astype(np.int16).tobytes())
    h.update(repr((PAIRS_VERSION, fusion.guides, settings, config.size, config.face_sizes,
                   config.random_per_reference, config.level_size, seed)).encode())
    return Path(cache_dir) / f"fusion-pairs-{h.hexdigest()[:16]}.npz"


def train_fusion(
    references: np.ndarray,
    base,
    *,
    budget_s: float = 180.0,
    max_steps: int | None = None,
    seed: int = 0,
    fusion: FusionConfig | None = None,
    settings: FusionSettings | None = None,
    config: FusionTrainConfig | None = None,
    cache_dir: Path | str | None = None,
    on_progress: Callable[[float, str], None] | None = None,
) -> FusionTrainResult:
    """Learn how one person's references fuse into their pre-cleaned faces.

    Args:
        references: uint8 (N, 512, 512, 3) the person's aligned references (at least two photos).
        base: the restorer whose output the fusion will get at restore time (the person's
            fast restorer, or the generic one); it pre-cleans the degraded references.
        budget_s: wall seconds in all, pairs and training (pairs get at most
            ``config.pairs_share`` of it; a cache hit leaves it all to training).
        max_steps: stop after this many steps (``None``: the budget decides).
        seed: seeds the degradations, the network's start and the batches.
        fusion: the network's shape (:class:`FusionConfig` by default).
        settings: how references are chosen and warped (as restore will).
        config: :class:`FusionTrainConfig`.
        cache_dir: where to keep the pairs (keyed by the references, the base's output and the
            settings); ``None`` keeps none.
        on_progress: called with (share done in [0, 1], what is happening).

    Returns:
        :class:`FusionTrainResult`; ``weights`` is the profile artifact's content.
    """
    fusion = fusion or FusionConfig()
    settings = settings or FusionSettings()
    config = config or FusionTrainConfig()
    references = np.asarray(references)
    if references.ndim != 4 or references.shape[-1] != 3 or references.dtype != np.uint8:
        raise UsageError(f"references must be uint8 (N, H, W, 3) aligned crops, got {references.dtype} "
                         f"{references.shape}")
    if len(references) < 2:
        raise UsageError(f"the reference fusion learns from one reference guiding another: it needs at least "
                         f"two references, got {len(references)}")
    start = time.monotonic()
    cache = _cache_path(Path(cache_dir), references, base, fusion, settings, config, seed) if cache_dir else None
    if cache is not None and cache.is_file():
        pairs = Pairs.load(cache)
        logger.info("fusion pairs read from %s", cache)
    else:
        progress = (lambda f, m: on_progress(f * config.pairs_share, m)) if on_progress else None
        pairs = build_pairs(references, base, fusion=fusion, settings=settings, config=config, seed=seed,
                            deadline=start + config.pairs_share * budget_s, on_progress=progress)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            pairs.save(cache)
    made = time.monotonic() - start
    logger.info("fusion: %d pairs in %.0f s", len(pairs), made)

    share = 1.0 - min(1.0, made / budget_s) if budget_s > 0 else 1.0
    progress = (lambda f, m: on_progress(1.0 - share + share * f, m)) if on_progress else None
    net, steps, history = fit_fusion(pairs, fusion=fusion, config=config, budget_s=max(0.0, budget_s - made),
                                     max_steps=max_steps, seed=seed, on_progress=progress)
    net.eval()
    total = time.monotonic() - start
    info: dict[str, Any] = {"training": {"steps": steps, "pairs": len(pairs), "seconds": round(total, 1),
                                         "pair_seconds": round(made, 1), "references": int(len(references)),
                                         "seed": seed}}
    logger.info("reference fusion trained: %d steps on %d pairs in %.0f s", steps, len(pairs), total)
    tensors, state = fusion_state(net, **info)
    return FusionTrainResult(fusion_to_bytes(net, **info), net, tensors, state, steps, len(pairs), total, history)


__all__ = ["FusionTrainConfig", "FusionTrainResult", "Pairs", "build_pairs", "fit_fusion", "train_fusion",
           "degradation_plan"]
