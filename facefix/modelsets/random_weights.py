"""Stable Diffusion 1.5's real-size architecture with random weights, and a byte tokenizer.

For the benchmarks and tests that need the real sizes (speed, memory, the
GPU check) where the real weights cannot be downloaded. Nothing a user runs
loads these.
"""

from __future__ import annotations

import torch

from facefix.modelsets.parts import DiffusionParts

SD15_UNET_CONFIG: dict = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

SD15_VAE_CONFIG: dict = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "scaling_factor": 0.18215,
}

#: CLIP ViT-L/14 text tower, SD 1.5's text encoder.
SD15_TEXT_CONFIG: dict = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "vocab_size": 49408,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}

#: The tile ControlNet's extra keys on top of the UNet's encoder config.
SD15_TILE_GUIDE_EXTRA: dict = {
    "conditioning_channels": 3,
    "conditioning_embedding_out_channels": [16, 32, 96, 256],
    "controlnet_conditioning_channel_order": "rgb",
}

SD15_SCHEDULER_CONFIG: dict = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
}


def sd15_guide_config() -> dict:
    """The tile ControlNet config: the UNet's encoder half plus its pixel encoder."""
    keys = (
        "act_fn", "attention_head_dim", "block_out_channels", "cross_attention_dim", "down_block_types",
        "downsample_padding", "flip_sin_to_cos", "freq_shift", "in_channels", "layers_per_block",
        "mid_block_scale_factor", "norm_eps", "norm_num_groups",
    )  # fmt: skip
    return {k: SD15_UNET_CONFIG[k] for k in keys} | SD15_TILE_GUIDE_EXTRA


def build_random_sd15(*, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, tokenizer=None) -> DiffusionParts:
    """SD 1.5 + tile ControlNet at real size with random weights (benchmarks, ``meta`` checks).

    Args:
        device: ``meta`` builds the architecture without memory.
        dtype: parameter dtype.
        tokenizer: a CLIP tokenizer; the default is a byte-level stand-in
            padding to 77 tokens (the real one needs a download).
    """
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device(device):
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
        vae = AutoencoderKL(**SD15_VAE_CONFIG)
        text_encoder = CLIPTextModel(CLIPTextConfig(**SD15_TEXT_CONFIG))
        guide = ControlNetModel(**sd15_guide_config())
    parts = DiffusionParts(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer or ByteTokenizer(77, 49408),
        guide=guide,
        scheduler_config=dict(SD15_SCHEDULER_CONFIG),
        condition="image",
        provenance={"model_set": "random-sd15"},
    )
    for module in (unet, vae, text_encoder, guide):
        module.requires_grad_(False)
    return parts if str(device) == "meta" else parts.to(dtype=dtype)


class ByteTokenizer:
    """A stand-in CLIP tokenizer for random-weight benchmarks: one token per byte."""

    def __init__(self, model_max_length: int = 77, vocab_size: int = 49408):
        self.model_max_length = model_max_length
        self.vocab_size = vocab_size

    def __call__(self, prompts, padding=None, max_length=None, truncation=True, return_tensors="pt"):
        from types import SimpleNamespace

        length = max_length or self.model_max_length
        rows = []
        for text in [prompts] if isinstance(prompts, str) else prompts:
            ids = [self.vocab_size - 2] + [b + 1 for b in text.encode()][: length - 2] + [self.vocab_size - 1]
            rows.append(ids + [self.vocab_size - 1] * (length - len(ids)))
        return SimpleNamespace(input_ids=torch.tensor(rows))
