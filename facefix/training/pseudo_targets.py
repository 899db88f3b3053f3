"""Pseudo-targets for album adaptation (Kuai et al., WACV 2025), from the diffusion prior.

There are no clean photos of an album's faces, so the targets are made:

1. the current fast restorer restores each degraded face ``y`` → ``r``;
2. the diffusion prior turns ``r`` into a pseudo-target: ``r`` is encoded,
   noised part-way (``strength`` 0.6 = the paper's t = 150 of 250) and
   denoised with ancestral DDPM steps; while the sample is still noisy
   (``t ≥ constrain_until · T``, the paper's t ≥ 90 of 250) the low
   frequencies of the clean estimate are pinned to the input's:
   ``x̂0 ← x̂0 − U(D(x̂0)) + U(D(y))`` with D/U a 16× down/up-sampling of a
   512 face. facefix's prior is a *latent* model, so this is applied in pixel
   space through the VAE (decode x̂0, pin, re-encode the change); see
   docs/adaptation.md for why not directly on the latents;
3. a final exact pin of the 16× low frequencies (what the fast restorer
   keeps from its input anyway), then the target is cached on disk as a
   lossless PNG named by a hash of (input, fast restorer, settings, model set),
   so an interrupted run resumes where it stopped and gets the same result.

The fine-tune on the pairs is :mod:`facefix.training.finetune`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from facefix.common.atomic import atomic_output
from facefix.common.files import stable_json
from facefix.errors import ModelError, UsageError
from facefix.faces.align import CROP_SIZE

log = logging.getLogger(__name__)

PSEUDO_TARGET_VERSION = 1


# --------------------------------------------------------------------------- low frequencies


def downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    return F.avg_pool2d(x, factor)


def _up(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def pin_low_frequencies(out: torch.Tensor, ref: torch.Tensor, factor: int, *, iters: int = 1) -> torch.Tensor:
    """``out − U(D(out)) + U(D(ref))``: take ``ref``'s low frequencies, keep ``out``'s detail.

    D = area down-sampling by ``factor``, U = bilinear up-sampling. One
    iteration is the paper's operator. Because D∘U is not the identity, one
    iteration leaves ``D(result)`` a few percent off ``D(ref)``; more iterations
    (cheap: they run on the low-resolution grid) solve ``D(U(c)) = D(ref) − D(out)``
    for the smooth correction ``c`` and make ``D(result) = D(ref)`` to float precision.

    Args:
        out, ref: (N, C, H, W), H and W divisible by ``factor``.
        factor: 1 or less returns ``ref`` (every frequency is "low").
        iters: Richardson iterations on the low-resolution grid.
    """
    if factor <= 1:
        return ref.clone()
    size = out.shape[-2:]
    residual = downsample(ref, factor) - downsample(out, factor)
    coef = torch.zeros_like(residual)
    for _ in range(max(1, iters)):
        coef = coef + residual - downsample(_up(coef, size), factor)
    return out + _up(coef, size)


def pin_within_range(out: torch.Tensor, ref: torch.Tensor, factor: int, *, iters: int = 8, rounds: int = 10) -> torch.Tensor:
    """:func:`pin_low_frequencies`, then clip to [0, 1], alternately (projections onto convex sets).

    Clipping after a pin moves block means again where the detail overshoots
    [0, 1]; alternating the two converges to an image in [0, 1] whose
    low frequencies are ``ref``'s (``ref`` itself is one, so such images exist).
    """
    for _ in range(max(1, rounds)):
        out = pin_low_frequencies(out, ref, factor, iters=iters).clamp(0, 1)
    return out


def scaled_factor(factor: int, resolution: int) -> int:
    """A factor given for a 512 face, at ``resolution`` px (at least 1)."""
    return max(1, int(round(factor * resolution / CROP_SIZE)))


# --------------------------------------------------------------------------- pseudo-targets


@dataclass(frozen=True)
class PseudoTargetConfig:
    """How the diffusion prior turns a fast restoration into a pseudo-target.

    Args:
        strength: Fraction of the diffusion trajectory to re-run (0.6 = the paper's
            t = 150 of 250): higher invents more detail, lower stays closer to the fast output.
        steps: Ancestral DDPM steps over the *whole* schedule (the paper respaces 1,000 to
            250); ``strength · steps`` of them run.
        constrain_until: Pin low frequencies while ``t ≥ constrain_until · T``
            (the paper: t ≥ 90 of 250 = 0.36).
        lowpass: D/U factor of the constraint, for a 512 face (the paper: 16 for SwinIR, 8 for CodeFormer).
        final_lock: Factor of the final exact pin to the input (0 = off); the fast
            restorer keeps its input's 1/16 content by construction, so the target should too.
        pin_iters: Richardson iterations of each pin (see :func:`pin_low_frequencies`).
        pin_rounds: Pin / clip-to-[0, 1] alternations of each pin (see :func:`pin_within_range`).
        prompt: Text for the base model; a face prompt makes a general text-to-image
            model act as a face prior (the paper's prior is an unconditional face model).
        guide_scale: Strength of the model set's guide (ControlNet) fed the fast
            restoration; 0 = prior only, as in the paper.
        resolution: Generation size; ``None`` = the base model's own (512 for SD 1.5).
        batch_size: Faces per UNet call.
        seed: Base seed; each face's noise comes from it and the face's cache key.
    """

    strength: float = 0.6
    steps: int = 50
    constrain_until: float = 0.36
    lowpass: int = 16
    final_lock: int = 16
    pin_iters: int = 8
    pin_rounds: int = 10
    prompt: str = "a high quality photo of a face"
    guide_scale: float = 0.0
    resolution: int | None = None
    batch_size: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.strength <= 1:
            raise UsageError(f"--strength must be in (0, 1], got {self.strength}")
        if not 1 <= self.steps <= 1000:
            raise UsageError(f"pseudo-target steps must be 1-1000, got {self.steps}")
        if not 0 <= self.constrain_until <= 1:
            raise UsageError(f"constrain_until must be in [0, 1], got {self.constrain_until}")
        for name in ("lowpass", "final_lock"):
            value = getattr(self, name)
            if value < 0 or (value > 1 and CROP_SIZE % value):
                raise UsageError(f"{name} must divide {CROP_SIZE} (e.g. 8 or 16), got {value}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def restorer_digest(restorer) -> str:
    """A content hash of a restorer's weights and settings (names the cache entries it made)."""
    from facefix.restorers.fast import FastRestorer

    # Only a trained CNN has weights to hash; a weight-free restorer (the
    # classical one) is fully named by its name. Asked by type, not by
    # probing for a ``state`` attribute, so a renamed method fails loudly
    # instead of silently keying caches by name.
    if not isinstance(restorer, FastRestorer):
        return f"name:{restorer.name}"
    tensors, settings = restorer.state()
    digest = hashlib.sha256(stable_json(settings))
    for key in sorted(tensors):
        digest.update(key.encode())
        digest.update(tensors[key].detach().cpu().flatten().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def cache_key(face: np.ndarray, precleaner_digest: str, config: PseudoTargetConfig, provenance: dict) -> str:
    """The name of a face's pseudo-target: hash of its pixels, the fast restorer, the settings, the prior."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(face).tobytes())
    digest.update(str(face.shape).encode())
    settings = {k: v for k, v in config.to_dict().items() if k != "batch_size"}  # batching changes no result
    meta = {"v": PSEUDO_TARGET_VERSION, "pre": precleaner_digest, "config": settings,
            "prior": {k: provenance.get(k) for k in sorted(provenance)}}
    digest.update(stable_json(meta))
    return digest.hexdigest()[:32]


class PseudoTargetSampler:
    """SDEdit-style sampling with the low-frequency constraint, on a latent diffusion model.

    Args:
        parts: a :class:`facefix.modelsets.parts.DiffusionParts` (real or tiny).
        config: see :class:`PseudoTargetConfig`.
    """

    def __init__(self, parts, config: PseudoTargetConfig = PseudoTargetConfig()) -> None:
        self.parts = parts
        self.config = config
        self.device = parts.device
        self.dtype = parts.dtype
        self.resolution = config.resolution or parts.resolution
        multiple = parts.vae_scale_factor * 2 ** (len(parts.unet.config.block_out_channels) - 1)
        if self.resolution % multiple:
            raise UsageError(f"pseudo-target resolution {self.resolution} must be a multiple of {multiple}")
        sched = parts.noise_scheduler()
        self.alphas = sched.alphas_cumprod.double()
        self.num_train = int(sched.config.num_train_timesteps)
        self.prediction = sched.config.prediction_type
        embeds = parts.encode_prompt([config.prompt, ""]).to(self.device, self.dtype)
        self._unet_embeds, self._guide_embeds = embeds[0:1], embeds[1:2]

    def timesteps(self) -> list[int]:
        """The respaced timesteps this config runs, noisiest first."""
        grid = np.unique(np.linspace(0, self.num_train - 1, self.config.steps).round().astype(int))[::-1]
        start = self.config.strength * (self.num_train - 1)
        return [int(t) for t in grid if t <= start + 1e-6] or [int(grid[-1])]

    def steps_per_batch(self) -> int:
        return len(self.timesteps())

    def _x0(self, z: torch.Tensor, model_out: torch.Tensor, a: float) -> torch.Tensor:
        if self.prediction == "epsilon":
            return (z - (1 - a) ** 0.5 * model_out) / a**0.5
        if self.prediction == "v_prediction":
            return a**0.5 * z - (1 - a) ** 0.5 * model_out
        if self.prediction == "sample":
            return model_out
        raise ModelError(f"the base model's prediction type {self.prediction!r} is not supported for pseudo-targets")

    def _predict(self, z: torch.Tensor, t: int, condition: torch.Tensor | None) -> torch.Tensor:
        parts, n = self.parts, z.shape[0]
        tt = torch.full((n,), t, device=self.device, dtype=torch.long)
        unet_embeds = self._unet_embeds.expand(n, -1, -1)
        if condition is None:
            return parts.unet(z.to(self.dtype), tt, encoder_hidden_states=unet_embeds, return_dict=False)[0].float()
        return parts.predict_noise(z.to(self.dtype), tt, unet_embeds, self._guide_embeds.expand(n, -1, -1), condition,
                                   guide_scale=self.config.guide_scale).float()

    def _constrain(self, x0: torch.Tensor, inputs: torch.Tensor, factor: int) -> torch.Tensor:
        """Pin the clean estimate's low frequencies in pixel space; inject only the change into the latent."""
        parts = self.parts
        image = parts.vae_decode(x0).float()
        pinned = pin_within_range(image, inputs, factor, iters=self.config.pin_iters, rounds=self.config.pin_rounds)
        # Encode both and add the difference: the VAE round trip's own error cancels.
        both = parts.vae_encode(torch.cat([pinned, image]).to(self.dtype)).float()
        after, before = both.chunk(2)
        return x0 + (after - before)

    @torch.no_grad()
    def sample(self, inputs: np.ndarray, restored: np.ndarray, seeds: Sequence[int],
               step_done: Callable[[], None] | None = None) -> np.ndarray:
        """Pseudo-targets for one batch.

        Args:
            inputs: degraded aligned crops, float32 (N, H, W, 3) in [0, 1].
            restored: the fast restorer's output for them, same shape.
            seeds: one seed per face (its noise does not depend on the batch).
            step_done: called after each denoising step.

        Returns:
            float32 (N, H, W, 3) in [0, 1].
        """
        cfg, parts, res = self.config, self.parts, self.resolution
        n, height, width = inputs.shape[:3]
        to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).to(self.device).float()  # noqa: E731
        y_full, r_full = to_t(inputs), to_t(restored)
        y = F.interpolate(y_full, size=(res, res), mode="area") if res != height else y_full
        r = F.interpolate(r_full, size=(res, res), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        factor = scaled_factor(cfg.lowpass, res)
        gens = [torch.Generator("cpu").manual_seed(int(s) % (2**63)) for s in seeds]

        def noise_like(z: torch.Tensor) -> torch.Tensor:
            return torch.stack([torch.randn(z.shape[1:], generator=g) for g in gens]).to(self.device)

        condition = None
        if cfg.guide_scale > 0:
            condition = parts.guide_condition(r.to(self.dtype)).to(self.dtype)
        ts = self.timesteps()
        z0 = parts.vae_encode(r.to(self.dtype)).float()
        a0 = float(self.alphas[ts[0]])
        z = a0**0.5 * z0 + (1 - a0) ** 0.5 * noise_like(z0)
        limit = cfg.constrain_until * (self.num_train - 1)
        for i, t in enumerate(ts):
            a_t = float(self.alphas[t])
            x0 = self._x0(z, self._predict(z, t, condition), a_t)
            if t >= limit:
                x0 = self._constrain(x0, y, factor)
            if i + 1 == len(ts):
                z = x0
            else:
                # Ancestral DDPM step on the respaced schedule: sample q(z_prev | z_t, x̂0).
                a_p = float(self.alphas[ts[i + 1]])
                beta = 1 - a_t / a_p
                mean = (a_p**0.5 * beta / (1 - a_t)) * x0 + ((1 - beta) ** 0.5 * (1 - a_p) / (1 - a_t)) * z
                z = mean + (beta * (1 - a_p) / (1 - a_t)) ** 0.5 * noise_like(z)
            if step_done is not None:
                step_done()
        if not torch.isfinite(z).all():
            raise ModelError(f"pseudo-target sampling produced NaN/inf (dtype {self.dtype}); retry in fp32 "
                             "(--device cpu) or check the weights with `facefix models verify`")
        images = parts.vae_decode(z).float()
        if res != height:
            images = F.interpolate(images, size=(height, width), mode="bicubic", align_corners=False)
        if cfg.final_lock > 1:
            images = pin_within_range(images, y_full, cfg.final_lock, iters=cfg.pin_iters, rounds=cfg.pin_rounds)
        images = images.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        gray = np.all(np.abs(inputs - inputs[..., :1]) < 2 / 255, axis=(1, 2, 3))
        if gray.any():  # a gray scan's target is gray
            luma = images[gray] @ np.array([0.299, 0.587, 0.114], np.float32)
            images[gray] = luma[..., None]
        return images.astype(np.float32)


@dataclass(frozen=True)
class PseudoTargets:
    """Outcome of :func:`generate_pseudo_targets`.

    Args:
        targets: per face, uint8 (H, W, 3), or None where none was made (limit or Ctrl-C).
        keys: per face, its cache key (file ``<cache_dir>/<key[:2]>/<key>.png``).
        made: pseudo-targets sampled in this call.
        reused: pseudo-targets found in the cache.
        interrupted: Ctrl-C stopped generation (everything made so far is cached).
    """

    targets: list[np.ndarray | None]
    keys: list[str]
    made: int
    reused: int
    interrupted: bool

    @property
    def missing(self) -> int:
        return sum(t is None for t in self.targets)


def _cache_file(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / key[:2] / f"{key}.png"


def _read_cached(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    from PIL import Image

    if not path.is_file():
        return None
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except OSError:
        log.warning("pseudo-target %s is unreadable; making it again", path)
        return None
    return arr if arr.shape == shape else None


def _write_cached(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    with atomic_output(path) as tmp:  # a Ctrl-C never leaves half a target
        Image.fromarray(image).save(tmp, format="PNG")


def generate_pseudo_targets(
    faces: np.ndarray,
    precleaners: Sequence,
    sampler: PseudoTargetSampler,
    *,
    cache_dir: Path,
    provenance: dict | None = None,
    max_new: int | None = None,
    on_face: Callable[[int, bool], None] | None = None,
    on_step: Callable[[], None] | None = None,
) -> PseudoTargets:
    """Make (or find in the cache) a pseudo-target for every face.

    Args:
        faces: uint8 (N, 512, 512, 3) degraded aligned crops.
        precleaners: per face, the fast restorer for it (the person's or the generic one).
        sampler: the diffusion sampler.
        cache_dir: where pseudo-targets are kept (content-addressed PNGs).
        provenance: the model set's ids and revisions (part of each key);
            default: the sampler's ``parts.provenance``.
        max_new: sample at most this many new targets (the rest stay None).
        on_face: called ``(index, reused)`` as each face's target is ready.
        on_step: called after every denoising step (progress).

    Returns:
        :class:`PseudoTargets`; Ctrl-C stops it between batches with ``interrupted`` set.
    """
    if faces.dtype != np.uint8 or faces.ndim != 4:
        raise UsageError(f"faces must be uint8 (N, H, W, 3), got {faces.dtype} {faces.shape}")
    if len(precleaners) != len(faces):
        raise UsageError(f"one precleaner per face is needed ({len(precleaners)} for {len(faces)} faces)")
    provenance = provenance if provenance is not None else dict(sampler.parts.provenance)
    digests: dict[int, str] = {}
    keys = []
    for face, pre in zip(faces, precleaners):
        if id(pre) not in digests:
            digests[id(pre)] = restorer_digest(pre)
        keys.append(cache_key(face, digests[id(pre)], sampler.config, provenance))
    targets: list[np.ndarray | None] = [None] * len(faces)
    todo = []
    for i, key in enumerate(keys):
        targets[i] = _read_cached(_cache_file(cache_dir, key), faces[i].shape)
        if targets[i] is not None:
            if on_face:
                on_face(i, True)
        else:
            todo.append(i)
    reused = len(faces) - len(todo)
    if max_new is not None:
        todo = todo[: max(0, max_new)]
    made, interrupted = 0, False
    try:
        for start in range(0, len(todo), sampler.config.batch_size):
            idx = todo[start : start + sampler.config.batch_size]
            inputs = faces[idx].astype(np.float32) / 255.0
            # Restore with each face's own fast restorer (several people can share a batch).
            restored = np.empty_like(inputs)
            for pre in {id(precleaners[i]): precleaners[i] for i in idx}.values():
                sel = [j for j, i in enumerate(idx) if precleaners[i] is pre]
                restored[sel] = pre.restore(inputs[sel])
            seeds = [(sampler.config.seed * 1_000_003 + int(keys[i][:15], 16)) for i in idx]
            out = sampler.sample(inputs, np.clip(restored, 0, 1), seeds, step_done=on_step)
            for j, i in enumerate(idx):
                image = np.clip(out[j] * 255.0 + 0.5, 0, 255).astype(np.uint8)
                _write_cached(_cache_file(cache_dir, keys[i]), image)
                targets[i] = image
                made += 1
                if on_face:
                    on_face(i, False)
    except KeyboardInterrupt:
        interrupted = True
        log.warning("pseudo-target generation interrupted: %d made, %d cached before; rerun to continue", made, reused)
    return PseudoTargets(targets, keys, made, reused, interrupted)


__all__ = [
    "PseudoTargetConfig", "PseudoTargetSampler", "PseudoTargets", "generate_pseudo_targets", "pin_low_frequencies",
    "pin_within_range", "cache_key", "restorer_digest",
]
