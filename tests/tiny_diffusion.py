"""Tiny real diffusion components for tests: built in seconds, no download.

The shapes follow diffusers' own pipeline tests (``block_out_channels=(4, 8)``,
``cross_attention_dim=32``, a seed before each part). Images are 32 px, so
latents are 16 px (the tiny VAE halves once). Everything here is a real
diffusers / transformers class; the only stand-in is :class:`BlurRestorer`,
a pre-cleaner that keeps the :class:`facefix.restorers.base.Restorer`
interface while the fast CNN restorer is built elsewhere.

Reused by the tuning, restorer and adaptation tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from facefix.modelsets.parts import DiffusionParts
from facefix.modelsets.registry import ModelSet, write_local_model_set

TINY_RESOLUTION = 32
TINY_SCHEDULER_CONFIG = {
    "_class_name": "DDIMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "steps_offset": 1,
}


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's byte-to-printable-character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_tiny_tokenizer_files(directory: Path, max_length: int = 32) -> Path:
    """A character-level CLIP vocabulary (no merges) that the real ``CLIPTokenizer`` reads."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab = {}
    for token in chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]:
        vocab[token] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    (directory / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"})
    )
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": max_length, "tokenizer_class": "CLIPTokenizer", "pad_token": "<|endoftext|>"})
    )
    return directory


def tiny_tokenizer(directory: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(write_tiny_tokenizer_files(directory))


def tiny_text_encoder(vocab_size: int, max_length: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    config = CLIPTextConfig(
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=max_length,
        vocab_size=vocab_size,
    )
    return CLIPTextModel(config)


def tiny_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=TINY_RESOLUTION // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=2,
        attention_head_dim=2,
    )


def tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(4, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=2,
        sample_size=TINY_RESOLUTION,
    )


def tiny_guide(unet, condition: str = "image"):
    """A ControlNet copied from the UNet's encoder, like a real guide.

    ``image``: pixel input, one stride-2 stage to the latent size (a tiny
    tile ControlNet). ``latent``: 4-channel latent input, no downsampling.
    """
    from diffusers import ControlNetModel

    torch.manual_seed(0)
    if condition == "image":
        guide = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    else:
        guide = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16,), conditioning_channels=4)
    # A fresh ControlNet's output convolutions are zero; give them small
    # weights so that the guide actually changes the tiny model's output.
    with torch.no_grad():
        for module in [*guide.controlnet_down_blocks, guide.controlnet_mid_block, guide.controlnet_cond_embedding.conv_out]:
            module.weight.normal_(0, 0.05)
    return guide


def tiny_parts(directory: Path, condition: str = "image") -> DiffusionParts:
    """Every part at tiny size, fp32 on CPU, frozen."""
    tokenizer = tiny_tokenizer(Path(directory) / "tokenizer")
    unet = tiny_unet()
    parts = DiffusionParts(
        unet=unet,
        vae=tiny_vae(),
        text_encoder=tiny_text_encoder(len(tokenizer), tokenizer.model_max_length),
        tokenizer=tokenizer,
        guide=tiny_guide(unet, condition),
        scheduler_config=dict(TINY_SCHEDULER_CONFIG),
        condition=condition,
        provenance={"model_set": "tiny"},
    )
    for module in (parts.unet, parts.vae, parts.text_encoder, parts.guide):
        module.requires_grad_(False)
        module.eval()
    return parts


def save_tiny_model_set(directory: Path, condition: str = "image", name: str = "tiny") -> Path:
    """Write a local model-set directory (``base/`` pipeline + ``guide/``) in diffusers format.

    Loadable by ``facefix.modelsets.registry.resolve_model_set(str(directory))`` and the
    same loader a hub snapshot goes through.
    """
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    directory = Path(directory)
    parts = tiny_parts(directory / "_build", condition)
    pipe = StableDiffusionPipeline(
        vae=parts.vae,
        text_encoder=parts.text_encoder,
        tokenizer=parts.tokenizer,
        unet=parts.unet,
        scheduler=DDIMScheduler.from_config(TINY_SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(directory / "base")
    parts.guide.save_pretrained(directory / "guide")
    write_local_model_set(
        directory,
        ModelSet(name=name, base="base", guide="guide", condition=condition, variant=None, description="tiny test set"),
    )
    return directory


class BlurRestorer:
    """A pre-cleaner with the ``Restorer`` interface: a light box blur."""

    name = "blur"

    def __init__(self):
        self.calls = 0

    def restore(self, crops: np.ndarray) -> np.ndarray:
        self.calls += 1
        x = torch.from_numpy(np.ascontiguousarray(crops, dtype=np.float32)).permute(0, 3, 1, 2)
        x = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        return x.permute(0, 2, 3, 1).numpy()


def smooth_faces(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """``n`` smooth, face-like float32 images (N, size, size, 3) in [0, 1]: an oval on a background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size, 3), np.float32)
    for i in range(n):
        background = rng.uniform(0.1, 0.9, 3)
        skin = rng.uniform(0.4, 0.9, 3)
        cy, cx = 0.5 + rng.normal(0, 0.03, 2)
        mask = (((yy - cy) / 0.38) ** 2 + ((xx - cx) / 0.28) ** 2) < 1
        image = np.where(mask[..., None], skin, background)
        for ey, ex in ((cy - 0.08, cx - 0.1), (cy - 0.08, cx + 0.1)):
            eye = ((yy - ey) ** 2 + (xx - ex) ** 2) < 0.0015
            image = np.where(eye[..., None], 0.1, image)
        out[i] = image
    return out
