"""Adding trainable LoRA adapters to the UNet (stage 1) and the guide (stage 2), and reading their tensors out.

The format the adapters are stored and loaded in is :mod:`facefix.restorers.adapters`.
"""

from __future__ import annotations

import torch
from diffusers.training_utils import cast_training_params

from facefix.restorers.adapters import ADAPTER, adapter_param_name, lora_config


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
    model.add_adapter(lora_config(rank, alpha, targets), adapter_name=adapter_name)
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    cast_training_params(model)  # the trainable (LoRA) weights in fp32 under an fp16 model
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
            params.append(param)
    cast_training_params(guide)  # the fully tuned modules too
    return params, concrete


def guide_adapter_tensors(guide, full_modules, adapter_name: str = ADAPTER) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    out = {f"lora.{k}": v for k, v in get_peft_model_state_dict(guide, adapter_name=adapter_name).items()}
    for name, param in guide.named_parameters():
        if any(name.startswith(m + ".") for m in full_modules) and "lora_" not in name:
            out[f"full.{adapter_param_name(name)}"] = param
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in out.items()}
