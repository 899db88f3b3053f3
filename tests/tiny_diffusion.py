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


# --------------------------------------------------------------------------- original single-file layout
#
# A1111/ComfyUI keep SD 1.5 as one file in the original (CompVis/LDM) key
# layout, and ControlNets in ControlNet's own. diffusers ships only the
# reading direction (``from_single_file``); these write it, for any UNet/VAE/
# ControlNet config, so that tiny weights can be saved as a user's file is.


def _resnet_to_ldm(rest: str) -> str:
    return (rest.replace("norm1", "in_layers.0").replace("conv1", "in_layers.2")
            .replace("time_emb_proj", "emb_layers.1").replace("norm2", "out_layers.0")
            .replace("conv2", "out_layers.3").replace("conv_shortcut", "skip_connection"))


def _unet_encoder_name(key: str, n: int) -> str | None:
    """The LDM name of a diffusers UNet/ControlNet encoder or middle key (None: not one)."""
    parts = key.split(".")
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0"}
    head = ".".join(parts[:2]) if parts[0] == "time_embedding" else parts[0]
    if head in fixed:
        return fixed[head] + key[len(head):]
    if parts[0] == "down_blocks":
        i, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
        if kind == "downsamplers":
            return f"input_blocks.{(i + 1) * (n + 1)}.0.op.{rest.removeprefix('conv.')}"
        index = i * (n + 1) + j + 1
        return f"input_blocks.{index}.0.{_resnet_to_ldm(rest)}" if kind == "resnets" else f"input_blocks.{index}.1.{rest}"
    if parts[0] == "mid_block":
        kind, j, rest = parts[1], int(parts[2]), ".".join(parts[3:])
        return f"middle_block.{2 * j}.{_resnet_to_ldm(rest)}" if kind == "resnets" else f"middle_block.1.{rest}"
    return None


def unet_to_ldm(state: dict, config) -> dict:
    """A diffusers UNet's state dict in the original layout (``model.diffusion_model.*``)."""
    n = config["layers_per_block"]
    with_attention = ["CrossAttn" in t for t in config["up_block_types"]]
    out = {}
    for key, value in state.items():
        name = _unet_encoder_name(key, n)
        parts = key.split(".")
        if name is None and parts[0] == "up_blocks":
            i, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "upsamplers":
                name = f"output_blocks.{i * (n + 1) + n}.{2 if with_attention[i] else 1}.{rest}"
            elif kind == "resnets":
                name = f"output_blocks.{i * (n + 1) + j}.0.{_resnet_to_ldm(rest)}"
            else:
                name = f"output_blocks.{i * (n + 1) + j}.1.{rest}"
        elif name is None:
            name = {"conv_norm_out": "out.0", "conv_out": "out.2"}[parts[0]] + key[len(parts[0]):]
        out["model.diffusion_model." + name] = value
    return out


def vae_to_ldm(state: dict, config) -> dict:
    """A diffusers AutoencoderKL's state dict in the original layout (``first_stage_model.*``)."""
    blocks = len(config["up_block_types"])
    attention = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for key, value in state.items():
        side, rest = key.split(".", 1) if key.startswith(("encoder.", "decoder.")) else ("", key)
        parts = rest.split(".")
        if parts[0] in ("down_blocks", "up_blocks"):
            i = int(parts[1]) if parts[0] == "down_blocks" else blocks - 1 - int(parts[1])
            kind, tail = parts[2], ".".join(parts[4:])
            group = "down" if parts[0] == "down_blocks" else "up"
            if kind == "resnets":
                rest = f"{group}.{i}.block.{parts[3]}.{tail.replace('conv_shortcut', 'nin_shortcut')}"
            else:
                rest = f"{group}.{i}.{'downsample' if group == 'down' else 'upsample'}.{tail}"
        elif parts[0] == "mid_block" and parts[1] == "resnets":
            rest = f"mid.block_{int(parts[2]) + 1}.{'.'.join(parts[3:]).replace('conv_shortcut', 'nin_shortcut')}"
        elif parts[0] == "mid_block":
            tail = ".".join(parts[3:])
            layer = next(k for k in attention if tail.startswith(k + "."))
            rest = f"mid.attn_1.{attention[layer]}{tail[len(layer):]}"
            if layer != "group_norm" and value.ndim == 2:  # LDM's attention is 1x1 convolutions
                value = value[:, :, None, None]
        elif parts[0] == "conv_norm_out":
            rest = "norm_out" + rest[len("conv_norm_out"):]
        out["first_stage_model." + (f"{side}.{rest}" if side else rest)] = value
    return out


def text_encoder_to_ldm(state: dict) -> dict:
    """A CLIPTextModel's state dict as SD 1.5 files hold it (``cond_stage_model.transformer.text_model.*``)."""
    out = {}
    for key, value in state.items():
        key = key if key.startswith("text_model.") else "text_model." + key  # transformers >= 5.6 flattened it
        out["cond_stage_model.transformer." + key] = value
    positions = out["cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"].shape[0]
    out["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(positions)[None]
    return out


def controlnet_to_original(state: dict, config) -> dict:
    """A diffusers ControlNet's state dict as ControlNet 1.1's ``.pth`` files hold it (``control_model.*``).

    The hint encoder's last convolution is ``input_hint_block.14`` at any size:
    its place in SD's hint encoder, and where diffusers reads it from.
    """
    n = config["layers_per_block"]
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        name = _unet_encoder_name(key, n)
        if name is None and parts[0] == "controlnet_down_blocks":
            name = f"zero_convs.{parts[1]}.0.{parts[2]}"
        elif name is None and parts[0] == "controlnet_mid_block":
            name = f"middle_block_out.0.{parts[1]}"
        elif name is None and parts[1] == "conv_in":
            name = f"input_hint_block.0.{parts[2]}"
        elif name is None and parts[1] == "conv_out":
            name = f"input_hint_block.14.{parts[2]}"
        elif name is None:
            name = f"input_hint_block.{2 * (int(parts[2]) + 1)}.{parts[3]}"
        out["control_model." + name] = value
    return out


def save_tiny_single_files(directory: Path, tiny_set: Path) -> dict[str, Path]:
    """The tiny model set (:func:`save_tiny_model_set`) as a user keeps single files, and its configs.

    Returns ``base`` (one fp32 ``.safetensors`` in SD 1.5's original layout,
    like ``v1-5-pruned-emaonly.safetensors``), ``guide`` (a ``.pth`` pickle as
    ``control_v11f1e_sd15_tile.pth``), ``guide_safetensors`` (the same as
    ``.safetensors``) and ``configs``: a weights-free folder laid out as
    ``facefix/data/sd15`` (the tiny architecture's configs, tokenizer, scheduler
    and ``controlnet-tile/config.json``).
    """
    import shutil

    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    base, guide_dir = Path(tiny_set) / "base", Path(tiny_set) / "guide"
    unet = UNet2DConditionModel.from_pretrained(base / "unet")
    vae = AutoencoderKL.from_pretrained(base / "vae")
    text = CLIPTextModel.from_pretrained(base / "text_encoder")
    guide = ControlNetModel.from_pretrained(guide_dir)
    state = {**unet_to_ldm(unet.state_dict(), unet.config), **vae_to_ldm(vae.state_dict(), vae.config),
             **text_encoder_to_ldm(text.state_dict())}
    files = {"base": directory / "tiny-pruned-emaonly.safetensors", "guide": directory / "control_tiny_tile.pth",
             "guide_safetensors": directory / "control_tiny_tile.safetensors", "configs": directory / "configs"}
    save_file({k: v.contiguous() for k, v in state.items()}, str(files["base"]))
    control = {k: v.contiguous() for k, v in controlnet_to_original(guide.state_dict(), guide.config).items()}
    torch.save(control, files["guide"])
    save_file(control, str(files["guide_safetensors"]))
    configs = files["configs"]
    for sub in ("unet", "vae", "text_encoder"):
        (configs / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(base / sub / "config.json", configs / sub / "config.json")
    shutil.copytree(base / "tokenizer", configs / "tokenizer")
    shutil.copytree(base / "scheduler", configs / "scheduler")
    (configs / "controlnet-tile").mkdir()
    shutil.copy(guide_dir / "config.json", configs / "controlnet-tile" / "config.json")
    return files
