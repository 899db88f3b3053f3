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


def _lora_config(rank: int, alpha: float, targets, *, init: str | bool = "gaussian"):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=init, target_modules=list(targets))


def add_lora(
    model: torch.nn.Module, rank: int, alpha: float, targets, adapter_name: str = ADAPTER, *, seed: int | None = None
) -> list[torch.nn.Parameter]:
    """Inject a trainable LoRA adapter; return its parameters (fp32, requires_grad).

    The base weights stay frozen and keep their dtype (fp16 on GPU); the LoRA
    parameters are fp32 so that small updates are not rounded away.

    Args:
        seed: draw the ``lora_A`` matrices (peft's "gaussian" init, std 1/rank)
            from a CPU generator with this seed, so that the same run gives the
            same adapter on any device and in any process. peft itself draws
            them from the global torch RNG.
    """
    model.requires_grad_(False)
    model.add_adapter(_lora_config(rank, alpha, targets), adapter_name=adapter_name)
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
        p.data = p.data.float()
    if seed is not None:
        generator = torch.Generator("cpu").manual_seed(seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if f"lora_A.{adapter_name}." in name:
                    p.copy_(torch.randn(p.shape, generator=generator) / rank)
    return params


def matching_targets(model: torch.nn.Module, targets) -> list[str]:
    """Module names of ``model`` that LoRA ``targets`` hit (peft's suffix rule)."""
    names = []
    for name, module in model.named_modules():
        if any(name == t or name.endswith("." + t) for t in targets) and isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            names.append(name)
    return names


def unet_lora_tensors(unet: torch.nn.Module, adapter_name: str = ADAPTER) -> dict[str, torch.Tensor]:
    """The UNet's LoRA in the diffusers layout (``unet.`` prefix), CPU fp32."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet, adapter_name=adapter_name))
    return {f"unet.{k}": v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}


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
    unet.add_adapter(_lora_config(settings["rank"], settings["alpha"], settings["targets"], init=False), adapter_name=adapter_name)
    _set_state(unet, convert_unet_state_dict_to_peft(stripped), adapter_name, "UNet LoRA")
    unet.requires_grad_(False)


def _set_state(model, peft_state: dict, adapter_name: str, label: str) -> None:
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
    metadata = _lora_config(settings["rank"], settings["alpha"], settings["targets"]).to_dict()
    metadata = json.loads(json.dumps(metadata, default=lambda o: sorted(o) if isinstance(o, set) else str(o)))
    StableDiffusionPipeline.save_lora_weights(
        directory, unet_lora_layers=stripped, weight_name=weight_name, unet_lora_adapter_metadata=metadata
    )
    return Path(directory) / weight_name


# --------------------------------------------------------------------------- guide


def guide_zero_convs(guide: torch.nn.Module) -> list[str]:
    """Names of a ControlNet's output ("zero") convolutions."""
    return [n for n, _ in guide.named_modules() if n.startswith("controlnet_down_blocks.") or n == "controlnet_mid_block"]


def add_guide_adapter(
    guide, rank: int, alpha: float, targets, full_modules, *, seed: int | None = None
) -> tuple[list[torch.nn.Parameter], list[str]]:
    """LoRA on ``targets`` (+ the zero convs when ``"zero_convs"`` is listed) and full tuning of ``full_modules``.

    Args:
        seed: seeds the LoRA init (see :func:`add_lora`).

    Returns:
        (trainable parameters, the concrete LoRA target names used).
    """
    concrete = [t for t in targets if t != "zero_convs"]
    if "zero_convs" in targets:
        concrete += guide_zero_convs(guide)
    params = add_lora(guide, rank, alpha, concrete, seed=seed)
    for name, param in guide.named_parameters():
        if any(name.startswith(m + ".") for m in full_modules) and "lora_" not in name:
            param.requires_grad_(True)
            param.data = param.data.float()
            params.append(param)
    return params, concrete


def guide_adapter_tensors(guide, full_modules, adapter_name: str = ADAPTER) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    out = {f"lora.{k}": v for k, v in get_peft_model_state_dict(guide, adapter_name=adapter_name).items()}
    for name, param in guide.named_parameters():
        if any(name.startswith(m + ".") for m in full_modules) and "lora_" not in name:
            out[f"full.{_base_name(name)}"] = param
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in out.items()}


def _base_name(name: str) -> str:
    # peft wraps nothing in the fully tuned modules, but be safe about 'base_layer.'
    return name.replace(".base_layer.", ".")


def apply_guide_adapter(guide, tensors: dict[str, torch.Tensor], settings: dict, adapter_name: str = ADAPTER) -> None:
    """Load a stage-2 guide adapter (LoRA + fully tuned modules) into ``guide``, frozen."""
    lora = {k[len("lora.") :]: v for k, v in tensors.items() if k.startswith("lora.")}
    full = {k[len("full.") :]: v for k, v in tensors.items() if k.startswith("full.")}
    if lora:
        guide.add_adapter(
            _lora_config(settings["rank"], settings["alpha"], settings["lora_modules"], init=False), adapter_name=adapter_name
        )
        _set_state(guide, lora, adapter_name, "guide adapter")
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
