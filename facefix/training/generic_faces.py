"""Images made once by the base model: class images (stage 1) and generic faces (stage 2).

Two sets, for two jobs, cached apart:

* **class images** (:func:`cached_class_images`), stage 1's prior
  preservation: as in DreamBooth, painted from exactly the class prompt stage 1
  trains them under (``Stage1Config.class_prompt``, "a photo of a person"),
  with the guidance DreamBooth's reference script paints them with
  (``StableDiffusionPipeline``'s default: CFG 7.5, no negative prompt). Any
  other prompt would teach the class prompt something the base model does not
  mean by it, i.e. shift the prior instead of preserving it. Cached under
  ``cache_dir()/generated/class-images/<model set>-<key>/``, the key covering
  the class prompt, the model set and the painting settings, so a change of
  any of them repaints.
* **generic faces** (:func:`cached_generic_faces`), stage 2's training faces:
  a user has no folder of generic high-quality faces, so the base model paints
  close-up portraits varied in age, sex, ethnicity and lighting (CFG 7, a
  negative prompt). Cached under ``cache_dir()/generated/<model set>-<key>/``.

Both are reused by every later enrollment. The painted portraits are not
aligned to the five-point template; pass ``postprocess`` (detect + align,
returning None to drop a failed one) to make them aligned 512 crops, as the
restorer sees them. Class images are left as painted (DreamBooth does not crop
them either).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from facefix.common.atomic import atomic_output, atomic_write_bytes
from facefix.common.files import json_key
from facefix.common.paths import cache_dir

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

# DreamBooth's reference script (diffusers examples/dreambooth/train_dreambooth.py)
# paints class images with ``pipeline(class_prompt)``: StableDiffusionPipeline's
# defaults, guidance 7.5 and no negative prompt (the empty prompt as the
# unconditional branch). Its 50 steps of the model's own scheduler become 25
# DPM-Solver++ steps here, as everywhere in facefix (docs/diffusion.md).
CLASS_GUIDANCE_SCALE = 7.5
CLASS_NEGATIVE = ""


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
    indices: list[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Text-to-image with the *base* UNet (any adapter disabled), no guide.

    Image ``k``'s noise comes from ``(seed, indices[k])`` (default: ``k``), so
    a cache can paint its missing images and get the ones a full run would.

    Returns:
        float32 (len(prompts), R, R, 3) in [0, 1], R = the model's resolution.
    """
    indices = list(range(len(prompts))) if indices is None else list(indices)
    if len(indices) != len(prompts):
        raise ValueError(f"{len(indices)} indices for {len(prompts)} prompts")
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
                torch.randn((unet.config.in_channels, latent, latent), generator=torch.Generator().manual_seed(seed * 7919 + indices[start + i]))
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
    """``n`` generic faces for stage 2, generated on first use and then read from the cache.

    Not for prior preservation: these are close-up portraits of varied people
    (:func:`generic_prompts`); class images come from :func:`cached_class_images`.

    Args:
        parts: the *base* model set.
        n: how many faces.
        seed: which faces (same seed, same faces).
        directory: cache folder; default ``cache_dir()/generated/<set>-<key>/seed<seed>``.
        postprocess: e.g. align to the 512 template; returns None to drop an image.
        progress: ``progress(done, total)`` while generating.
        **generate_kwargs: passed to :func:`generate_images`.

    Returns:
        float32 (M, H, W, 3) in [0, 1], M <= n when ``postprocess`` dropped some.
    """
    key = hashlib.sha256(repr(sorted(parts.provenance.items())).encode()).hexdigest()[:10]
    directory = Path(directory) if directory else cache_dir() / "generated" / f"{_set_name(parts)}-{key}" / f"seed{seed}"
    return _cached_paintings(
        parts, generic_prompts(n, seed), directory, what="generic faces", seed=seed, postprocess=postprocess,
        progress=progress, **generate_kwargs,
    )  # fmt: skip


def class_images_key(
    parts,
    class_prompt: str,
    *,
    steps: int = 25,
    guidance_scale: float = CLASS_GUIDANCE_SCALE,
    negative_prompt: str = CLASS_NEGATIVE,
) -> str:
    """Cache key of a set of class images: the class prompt, the model set and how they are painted."""
    return _digest(
        {
            "class_prompt": class_prompt,
            "model_set": sorted(parts.provenance.items()),
            "sampler": "dpmsolver++",
            "steps": steps,
            "guidance_scale": guidance_scale,
            "negative_prompt": negative_prompt,
        }
    )


def cached_class_images(
    parts,
    class_prompt: str,
    n: int,
    *,
    seed: int = 1,
    steps: int = 25,
    guidance_scale: float = CLASS_GUIDANCE_SCALE,
    negative_prompt: str = CLASS_NEGATIVE,
    batch_size: int = 4,
    directory: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """``n`` prior-preservation images painted from exactly ``class_prompt``, cached.

    DreamBooth's class images: the base model's own answer to the prompt that
    stage 1 trains them under (pass ``Stage1Config.class_prompt``), so that the
    prior loss keeps what the base model means by it. Only the noise differs
    from one image to the next.

    Args:
        parts: the *base* model set.
        class_prompt: the prompt stage 1 trains the class images under.
        n: how many images.
        seed: which images (same seed, same images).
        steps, guidance_scale, negative_prompt: painting settings (DreamBooth's
            guidance by default; see :data:`CLASS_GUIDANCE_SCALE`).
        batch_size: images painted at once.
        directory: cache folder; default
            ``cache_dir()/generated/class-images/<set>-<key>/seed<seed>``, ``key``
            from :func:`class_images_key` (a changed prompt, model set or
            setting paints a new set).
        progress: ``progress(done, total)`` while painting.

    Returns:
        float32 (n, R, R, 3) in [0, 1], R = the model's resolution.
    """
    settings = {"steps": steps, "guidance_scale": guidance_scale, "negative_prompt": negative_prompt}
    key = class_images_key(parts, class_prompt, **settings)
    if directory is None:
        directory = cache_dir() / "generated" / "class-images" / f"{_set_name(parts)}-{key}" / f"seed{seed}"
    return _cached_paintings(
        parts, [class_prompt] * n, Path(directory), what=f"class images ({class_prompt!r})", seed=seed,
        record={"class_prompt": class_prompt, "key": key, "seed": seed, **settings}, progress=progress,
        batch_size=batch_size, **settings,
    )  # fmt: skip


RECORD = "painted.json"


def _digest(value) -> str:
    return json_key(value, 10)


def _set_name(parts) -> str:
    return str(parts.provenance.get("model_set", "model"))


def _cached_paintings(
    parts,
    prompts: list[str],
    directory: Path,
    *,
    what: str,
    seed: int,
    record: dict | None = None,
    postprocess: Callable[[np.ndarray], np.ndarray | None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = 4,
    **generate_kwargs,
) -> np.ndarray:
    """Image ``i`` of ``prompts`` as ``directory/<i>.png``: painted when missing, then read back.

    Written a batch at a time, so an interrupted painting keeps what it made.
    With ``record``, the folder remembers what it holds (``painted.json``), and
    a folder that holds something else is emptied and painted again.
    """
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    if record is not None:
        record_file = directory / RECORD
        try:
            held = json.loads(record_file.read_text()) if record_file.is_file() else None
        except (OSError, ValueError):
            held = {}
        if held != record:
            if held is not None:
                log.info("%s holds images painted with other settings; painting them again", directory)
            for stale in [*directory.glob("*.png"), *directory.glob("*.skip")]:
                stale.unlink()
            atomic_write_bytes(record_file, json.dumps(record, indent=1, sort_keys=True).encode())
    n = len(prompts)
    missing = [i for i in range(n) if not (directory / f"{i:04d}.png").is_file() and not (directory / f"{i:04d}.skip").is_file()]
    if missing:
        log.info("painting %d %s with the base model (once; cached in %s)", len(missing), what, directory)
    for start in range(0, len(missing), batch_size):
        chunk = missing[start : start + batch_size]
        images = generate_images(
            parts, [prompts[i] for i in chunk], seed=seed, indices=chunk, batch_size=batch_size, **generate_kwargs
        )
        for i, image in zip(chunk, images):
            if postprocess is not None:
                image = postprocess(image)
            if image is None:
                (directory / f"{i:04d}.skip").touch()
                continue
            with atomic_output(directory / f"{i:04d}.png") as tmp:
                Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8)).save(tmp, format="PNG")
        if progress is not None:
            progress(start + len(chunk), len(missing))
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
