"""Generic faces made once by the base model: class images (stage 1) and training faces (stage 2).

A user has no folder of generic high-quality faces, so the base model paints
them: portraits varied in age, sex, ethnicity and lighting, text-to-image
with classifier-free guidance. They are cached as PNGs under
``cache_dir()/generated/<model set>/`` and reused by every later enrollment.

The painted portraits are not aligned to the five-point template; pass
``postprocess`` (detect + align, returning None to drop a failed one) to make
them aligned 512 crops, as the restorer sees them.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..paths import cache_dir

log = logging.getLogger(__name__)

AGES = ("young", "middle-aged", "elderly", "teenage")
SEXES = ("man", "woman")
ETHNICITIES = ("African", "East Asian", "South Asian", "European", "Latino", "Middle Eastern")
LIGHTING = ("soft daylight", "studio lighting", "indoor warm light", "overcast light")


def generic_prompts(n: int, seed: int = 0) -> list[str]:
    """``n`` portrait prompts covering age x sex x ethnicity x lighting, shuffled reproducibly."""
    combos = list(itertools.product(AGES, SEXES, ETHNICITIES, LIGHTING))
    rng = np.random.default_rng(seed)
    rng.shuffle(combos)
    return [
        f"a close-up portrait photo of a {age} {eth} {sex}, {light}, looking at the camera, sharp focus, high detail"
        for age, sex, eth, light in (combos[i % len(combos)] for i in range(n))
    ]


NEGATIVE = "blurry, lowres, cartoon, painting, drawing, deformed, watermark, text"


@torch.no_grad()
def generate_images(
    parts,
    prompts: list[str],
    *,
    steps: int = 25,
    guidance_scale: float = 7.0,
    seed: int = 0,
    batch_size: int = 4,
    negative_prompt: str = NEGATIVE,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Text-to-image with the *base* UNet (any adapter disabled), no guide.

    Returns:
        float32 (len(prompts), R, R, 3) in [0, 1], R = the model's resolution.
    """
    unet = parts.unet
    # diffusers' PeftAdapterMixin sets this class attribute (False until an adapter is added).
    has_adapters = bool(unet._hf_peft_config_loaded)
    if has_adapters:
        unet.disable_adapters()
    try:
        device, dtype = parts.device, parts.dtype
        latent = parts.resolution // parts.vae_scale_factor
        negative = parts.encode_prompt([negative_prompt]).to(device, dtype)
        out = []
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            n = len(chunk)
            embeds = torch.cat([negative.expand(n, -1, -1), parts.encode_prompt(chunk).to(device, dtype)])
            scheduler = parts.sampler("dpmsolver++")
            scheduler.set_timesteps(steps, device=device)
            noise = [
                torch.randn((unet.config.in_channels, latent, latent), generator=torch.Generator().manual_seed(seed * 7919 + start + i))
                for i in range(n)
            ]
            latents = torch.stack(noise).to(device) * scheduler.init_noise_sigma
            for t in scheduler.timesteps:
                model_in = scheduler.scale_model_input(torch.cat([latents, latents]), t).to(dtype)
                uncond, cond = unet(model_in, t, encoder_hidden_states=embeds, return_dict=False)[0].float().chunk(2)
                latents = scheduler.step(uncond + guidance_scale * (cond - uncond), t, latents, return_dict=False)[0]
            out.append(parts.vae_decode(latents).permute(0, 2, 3, 1).cpu().numpy())
            if progress is not None:
                progress(start + n, len(prompts))
        return np.concatenate(out).astype(np.float32)
    finally:
        if has_adapters:
            unet.enable_adapters()


def cached_generic_faces(
    parts,
    n: int,
    *,
    seed: int = 0,
    directory: Path | None = None,
    postprocess: Callable[[np.ndarray], np.ndarray | None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    **generate_kwargs,
) -> np.ndarray:
    """``n`` generic faces, generated on first use and then read from the cache.

    Args:
        parts: the *base* model set.
        n: how many faces.
        seed: which faces (same seed, same faces).
        directory: cache folder; default ``cache_dir()/generated/<set>/<seed>``.
        postprocess: e.g. align to the 512 template; returns None to drop an image.
        progress: ``progress(done, n)`` while generating.
        **generate_kwargs: passed to :func:`generate_images`.

    Returns:
        float32 (M, H, W, 3) in [0, 1], M <= n when ``postprocess`` dropped some.
    """
    from PIL import Image

    key = hashlib.sha256(repr(sorted(parts.provenance.items())).encode()).hexdigest()[:10]
    directory = Path(directory) if directory else cache_dir() / "generated" / f"{parts.provenance.get('model_set', 'model')}-{key}" / f"seed{seed}"
    directory.mkdir(parents=True, exist_ok=True)
    prompts = generic_prompts(n, seed)
    missing = [i for i in range(n) if not (directory / f"{i:04d}.png").is_file() and not (directory / f"{i:04d}.skip").is_file()]
    if missing:
        log.info("painting %d generic faces with the base model (once; cached in %s)", len(missing), directory)
        images = generate_images(parts, [prompts[i] for i in missing], seed=seed, progress=progress, **generate_kwargs)
        for i, image in zip(missing, images):
            if postprocess is not None:
                image = postprocess(image)
            if image is None:
                (directory / f"{i:04d}.skip").touch()
                continue
            tmp = directory / f"{i:04d}.tmp.png"
            Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8)).save(tmp)
            tmp.replace(directory / f"{i:04d}.png")
    faces = [
        np.asarray(Image.open(directory / f"{i:04d}.png").convert("RGB"), np.float32) / 255
        for i in range(n)
        if (directory / f"{i:04d}.png").is_file()
    ]
    return np.stack(faces) if faces else np.zeros((0, parts.resolution, parts.resolution, 3), np.float32)


def load_face_folder(folder: Path, size: int = 512, limit: int | None = None) -> np.ndarray:
    """Read a folder of already aligned face crops (PNG/JPEG) as float32 (N, size, size, 3)."""
    from PIL import Image

    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"})
    images = []
    for path in paths[:limit]:
        image = Image.open(path).convert("RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BICUBIC)
        images.append(np.asarray(image, np.float32) / 255)
    return np.stack(images) if images else np.zeros((0, size, size, 3), np.float32)
