"""LoRA adapters of the UNet (stage 1) and of the guide (stage 2), as plain tensors.

An adapter leaves this module as ``(tensors, settings)``: a flat dict of CPU
fp32 tensors and a JSON-able dict, which the profile store writes as
safetensors + manifest. Key layouts:

* UNet LoRA: ``unet.<module>.lora.down.weight`` / ``.lora.up.weight`` -- the
  diffusers layout that ``StableDiffusionPipeline.save_lora_weights`` writes
  and ``pipe.load_lora_weights`` reads (:func:`save_unet_lora_file` writes
  such a file, with the LoRA config in its metadata).
* Guide adapter: ``lora.<peft key>`` for its LoRA layers and ``full.<param>``
  for the small modules tuned in full (the conditioning encoder).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from facefix.errors import ModelError

#: Attention projections of every transformer block (self- and cross-attention).
UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
ADAPTER = "facefix"


def lora_config(rank: int, alpha: float, targets, *, init: str | bool = "gaussian"):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=init, target_modules=list(targets))


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """A short content hash of a tensor dict (ties a guide to the UNet LoRA it was tuned around)."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode())
        digest.update(tensors[key].detach().cpu().flatten().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def apply_unet_lora(unet: torch.nn.Module, tensors: dict[str, torch.Tensor], settings: dict, adapter_name: str = ADAPTER) -> None:
    """Load a stage-1 LoRA (diffusers layout) into ``unet`` as a frozen adapter."""
    from diffusers.utils import convert_unet_state_dict_to_peft

    stripped = {k[len("unet.") :]: v for k, v in tensors.items() if k.startswith("unet.")}
    if not stripped:
        raise ModelError("the UNet LoRA artifact holds no 'unet.' tensors; re-run `facefix enroll` for this person")
    unet.add_adapter(lora_config(settings["rank"], settings["alpha"], settings["targets"], init=False), adapter_name=adapter_name)
    set_adapter_state(unet, convert_unet_state_dict_to_peft(stripped), adapter_name, "UNet LoRA")
    unet.requires_grad_(False)


def set_adapter_state(model, peft_state: dict, adapter_name: str, label: str) -> None:
    from peft.utils import set_peft_model_state_dict

    param = next(model.parameters())
    peft_state = {k: v.to(param.device) for k, v in peft_state.items()}
    result = set_peft_model_state_dict(model, peft_state, adapter_name=adapter_name)
    missing = [k for k in result.missing_keys if "lora_" in k and adapter_name in k]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        raise ModelError(
            f"the {label} does not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]}); "
            "it was made for another model set: re-run `facefix enroll` with this one"
        )


def save_unet_lora_file(directory: Path, tensors: dict[str, torch.Tensor], settings: dict, weight_name: str = "pytorch_lora_weights.safetensors") -> Path:
    """Write a UNet LoRA file that ``StableDiffusionPipeline.load_lora_weights(directory)`` loads."""
    from diffusers import StableDiffusionPipeline

    stripped = {k[len("unet.") :]: v for k, v in tensors.items() if k.startswith("unet.")}
    metadata = lora_config(settings["rank"], settings["alpha"], settings["targets"]).to_dict()
    metadata = json.loads(json.dumps(metadata, default=lambda o: sorted(o) if isinstance(o, set) else str(o)))
    StableDiffusionPipeline.save_lora_weights(
        directory, unet_lora_layers=stripped, weight_name=weight_name, unet_lora_adapter_metadata=metadata
    )
    return Path(directory) / weight_name


# --------------------------------------------------------------------------- guide


def adapter_param_name(name: str) -> str:
    """A parameter name as stored in a guide adapter (without peft's base_layer wrapper)."""
    # peft wraps nothing in the fully tuned modules, but be safe about 'base_layer.'
    return name.replace(".base_layer.", ".")


def apply_guide_adapter(guide, tensors: dict[str, torch.Tensor], settings: dict, adapter_name: str = ADAPTER) -> None:
    """Load a stage-2 guide adapter (LoRA + fully tuned modules) into ``guide``, frozen."""
    lora = {k[len("lora.") :]: v for k, v in tensors.items() if k.startswith("lora.")}
    full = {k[len("full.") :]: v for k, v in tensors.items() if k.startswith("full.")}
    if lora:
        guide.add_adapter(
            lora_config(settings["rank"], settings["alpha"], settings["lora_modules"], init=False), adapter_name=adapter_name
        )
        set_adapter_state(guide, lora, adapter_name, "guide adapter")
    params = dict(guide.named_parameters())
    for name, value in full.items():
        if name not in params or params[name].shape != value.shape:
            raise ModelError(f"the guide adapter's tensor {name!r} does not fit this guide; re-run `facefix enroll`")
        with torch.no_grad():
            params[name].copy_(value.to(params[name].dtype))
    guide.requires_grad_(False)


def merge_adapters(model: torch.nn.Module) -> None:
    """Fold LoRA layers into their base weights (faster sampling; same result up to rounding)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer) and not module.merged:
            module.merge()
