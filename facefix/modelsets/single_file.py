"""Single-file checkpoints, as A1111 and ComfyUI users keep them, loaded offline.

A base such as ``v1-5-pruned-emaonly.safetensors`` (or ``.ckpt``) holds the
UNet, VAE and CLIP text encoder in the original (CompVis/LDM) key layout; a
guide such as ``control_v11f1e_sd15_tile.pth`` holds a ControlNet in
ControlNet's own layout. diffusers converts both (``from_single_file``), but
fetches the configs and the tokenizer from the hub unless it is handed a
local folder of them. facefix ships SD 1.5's in ``facefix/data/sd15``
(architecture configs, the scheduler, the tile ControlNet's config and CLIP's
tokenizer files) and always passes that folder with ``local_files_only=True``:
nothing here touches the network.

Only Stable Diffusion 1.x single files (and their fine-tunes) fit these
configs; any other (SD 2.x, SDXL) is refused with a line saying so and what
to do instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from facefix.errors import ModelError
from facefix.modelsets.registry import SINGLE_FILE_SUFFIXES

if TYPE_CHECKING:
    import torch

#: SD 1.5's diffusers configs and CLIP tokenizer, shipped in the package.
SD15_CONFIG_DIR = Path(__file__).resolve().parents[1] / "data" / "sd15"
#: The tile ControlNet's config inside :data:`SD15_CONFIG_DIR`.
GUIDE_CONFIG_SUBFOLDER = "controlnet-tile"

#: Key prefixes of each part in an original-layout base checkpoint.
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."
#: The UNet's EMA copy in a training checkpoint (``model_ema.diffusion_modelinput_blocks00weight``).
EMA_PREFIX = "model_ema."
GUIDE_PREFIX = "control_model."

CONVERT_HELP = (
    "convert it once with diffusers (StableDiffusionPipeline.from_single_file(FILE).save_pretrained(DIR), "
    "where the hub is reachable) and name DIR with --base"
)


def is_single_file(ref: str | Path) -> bool:
    """True when ``ref`` is a local checkpoint file rather than a folder or a hub id."""
    path = Path(ref).expanduser()
    return path.suffix.lower() in SINGLE_FILE_SUFFIXES and path.is_file()


#: How much of a weights file its fingerprint reads: this many evenly spaced chunks of this size.
FINGERPRINT_SAMPLES = 16
FINGERPRINT_CHUNK = 1 << 16


def sample_into(digest, path: Path, samples: int = FINGERPRINT_SAMPLES, chunk: int = FINGERPRINT_CHUNK) -> None:
    """Feed ``digest`` (a hashlib object) a file's size and ``samples`` evenly spaced ``chunk``-byte pieces.

    Read in well under a second for a multi-GB checkpoint (1 MB of it), yet
    fine-tunes of one architecture, which have the same size and layout, differ
    in every sampled piece of their weights. The one sampler of local weights:
    :func:`file_revision` (a single file) and the folder fingerprint of
    :mod:`facefix.modelsets.hub` both use it.
    """
    size = Path(path).stat().st_size
    digest.update(str(size).encode())
    with open(path, "rb") as handle:
        for i in range(samples):
            handle.seek(max(0, (size - chunk) * i // max(1, samples - 1)))
            digest.update(handle.read(chunk))


def file_revision(path: Path) -> str:
    """A fingerprint of a (multi-GB) checkpoint read in a second: its size and sampled chunks (:func:`sample_into`).

    Fine-tunes of one architecture have the same size and layout, so the size
    alone would let adapters tuned on one be used on another; sampled weights
    tell them apart. The name is left out: a renamed file is the same model.
    """
    digest = hashlib.sha256()
    sample_into(digest, path)
    return "local-" + digest.hexdigest()[:16]


def read_checkpoint(path: Path, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The tensors of ``path`` whose keys start with one of ``prefixes`` (``()``: all).

    safetensors files are read key by key (only the part asked for is in
    memory); pickles (``.ckpt``/``.pth``) with ``torch.load(weights_only=True)``,
    which refuses anything but tensors and plain containers.

    Raises:
        ModelError: the file is unreadable or not a checkpoint.
    """
    import torch
    from diffusers.models.model_loading_utils import load_state_dict
    from safetensors import SafetensorError, safe_open

    def wanted(key: str) -> bool:
        return not prefixes or key.startswith(prefixes)

    try:
        if path.suffix.lower() == ".safetensors":
            with safe_open(str(path), framework="pt") as handle:
                return {k: handle.get_tensor(k) for k in handle.keys() if wanted(k)}  # noqa: SIM118 (not a dict)
        state = load_state_dict(str(path))
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise ModelError(f"{path}: not a readable checkpoint ({exc}); check the file (it may be cut short)") from exc
    while "state_dict" in state:  # Lightning-style .ckpt files wrap the weights
        state = state["state_dict"]
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and wanted(k)}


def _check_loaded(module: torch.nn.Module, path: Path, what: str) -> None:
    """diffusers leaves a weight the file lacks on the meta device; refuse that instead of using it."""
    empty = [n for n, p in [*module.named_parameters(), *module.named_buffers()] if p.is_meta]
    if empty:
        raise ModelError(
            f"{path}: has no weights for the {what}'s {', '.join(empty[:3])}"
            f"{f' and {len(empty) - 3} more' if len(empty) > 3 else ''}: it is not a Stable Diffusion 1.x "
            f"single-file checkpoint; {CONVERT_HELP}"
        )


def _convert(cls, checkpoint: dict, config_dir: Path, subfolder: str, dtype, path: Path, what: str, **extra):
    """``cls.from_single_file`` with the local config folder, offline, checked for weights the file lacked."""
    try:
        with _without_empty_fp32_warning():
            module = cls.from_single_file(checkpoint, config=str(config_dir), subfolder=subfolder,
                                          local_files_only=True, torch_dtype=dtype, **extra)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise _not_sd15(path, what, exc) from exc
    _check_loaded(module, path, what)
    return module


@contextlib.contextmanager
def _without_empty_fp32_warning():
    """diffusers (0.42) ends ``from_single_file`` with ``model.to(dtype)``, whose check warns "There are modules in
    X that should be kept in float32: []" for every model, the list empty. Only that line is dropped: casting
    afterwards instead (torch's own ``to``) would convert every weight twice, 11 of the 14 s of a real-size load."""

    def keep(record: logging.LogRecord) -> bool:
        return "should be kept in float32: []" not in record.getMessage()

    target = logging.getLogger("diffusers.models.modeling_utils")
    target.addFilter(keep)
    try:
        yield
    finally:
        target.removeFilter(keep)


def _not_sd15(path: Path, what: str, exc: BaseException) -> ModelError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return ModelError(
        f"{path}: its {what} does not fit Stable Diffusion 1.5's architecture ({first[:300]}); only SD 1.x "
        f"single files are read offline (SD 2.x and SDXL need their own configs): {CONVERT_HELP}"
    )


def load_single_file_base(path: Path, dtype: torch.dtype, config_dir: Path | None = None):
    """UNet, VAE, text encoder, tokenizer and scheduler config of an original-layout base checkpoint.

    Args:
        path: the ``.safetensors``/``.ckpt`` file.
        dtype: parameter dtype.
        config_dir: a diffusers pipeline folder without weights (``unet/``,
            ``vae/``, ``text_encoder/`` configs, ``tokenizer/``, ``scheduler/``);
            default :data:`SD15_CONFIG_DIR`.

    Returns:
        ``(unet, vae, text_encoder, tokenizer, scheduler_config)``.

    Raises:
        ModelError: unreadable, or not an SD 1.x checkpoint (one line with the fix).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from transformers import CLIPTextModel, CLIPTokenizer

    config_dir = Path(config_dir or SD15_CONFIG_DIR)
    path = Path(path)
    modules = {}
    for what, cls, prefixes, subfolder in (
        ("UNet", UNet2DConditionModel, (UNET_PREFIX, EMA_PREFIX), "unet"),
        ("VAE", AutoencoderKL, (VAE_PREFIX,), "vae"),
    ):
        checkpoint = read_checkpoint(path, prefixes)
        if not any(k.startswith(prefixes[0]) for k in checkpoint):
            raise ModelError(f"{path}: no {what} weights (no keys under {prefixes[0]!r}): it is not a Stable "
                             f"Diffusion 1.x single-file checkpoint; {CONVERT_HELP}")
        # A training checkpoint (v1-5-pruned.ckpt) holds both: the EMA weights are the ones made for sampling,
        # and the ones the diffusers release and v1-5-pruned-emaonly hold.
        ema = sum(k.startswith(EMA_PREFIX) for k in checkpoint) > 100
        modules[subfolder] = _convert(cls, checkpoint, config_dir, subfolder, dtype, path, what, extract_ema=ema)
        del checkpoint
    checkpoint = read_checkpoint(path, (TEXT_PREFIX,))
    if not checkpoint:
        raise ModelError(f"{path}: no text encoder weights (no keys under {TEXT_PREFIX!r}): it is not a Stable "
                         f"Diffusion 1.x single-file checkpoint; {CONVERT_HELP}")
    try:
        text_encoder = create_diffusers_clip_model_from_ldm(
            CLIPTextModel, checkpoint, subfolder="text_encoder", config=str(config_dir), torch_dtype=dtype,
            local_files_only=True,
        )
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise _not_sd15(path, "text encoder", exc) from exc
    _check_loaded(text_encoder, path, "text encoder")
    tokenizer = CLIPTokenizer.from_pretrained(config_dir / "tokenizer", local_files_only=True)
    scheduler_config = json.loads((config_dir / "scheduler" / "scheduler_config.json").read_text())
    return modules["unet"], modules["vae"], text_encoder, tokenizer, scheduler_config


def load_single_file_guide(path: Path, dtype: torch.dtype, config_dir: Path | None = None):
    """A ControlNet from its original single file (``control_v11f1e_sd15_tile.pth`` / ``.safetensors``).

    Args:
        path: the file; keys with or without the ``control_model.`` prefix.
        dtype: parameter dtype.
        config_dir: folder holding the guide's ``config.json`` in ``controlnet-tile/``;
            default :data:`SD15_CONFIG_DIR` (the SD 1.5 tile ControlNet's, which every
            SD 1.5 ControlNet 1.1 shares but for the task it was trained on).

    Raises:
        ModelError: unreadable, or not an SD 1.x ControlNet (one line with the fix).
    """
    from diffusers import ControlNetModel

    config_dir = Path(config_dir or SD15_CONFIG_DIR)
    path = Path(path)
    checkpoint = read_checkpoint(path, ())
    if not any(k.startswith((GUIDE_PREFIX, "input_hint_block.", "controlnet_cond_embedding.")) for k in checkpoint):
        raise ModelError(f"{path}: not a ControlNet single file (no {GUIDE_PREFIX!r} or 'input_hint_block.' "
                         "keys); name a ControlNet checkpoint or a diffusers ControlNet folder with --guide")
    return _convert(ControlNetModel, checkpoint, config_dir, GUIDE_CONFIG_SUBFOLDER, dtype, path, "ControlNet")
