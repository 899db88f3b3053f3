"""The diffusion engine's provider: one loaded model set, each person's Dual-Pivot adapters switched in."""

from __future__ import annotations

import logging
from dataclasses import replace

from facefix.common.devices import inference_dtype, resolve_device
from facefix.profiles import GenericStore, ProfileStore
from facefix.profiles.kinds import guide_kind, unet_lora_kind
from facefix.providers.fast import FastRestorers
from facefix.restorers.base import Restorer

log = logging.getLogger(__name__)


def as_model_set(model_set):
    """A :class:`~facefix.modelsets.registry.ModelSet` from a ModelSet, a registered name, a local directory or None."""
    from facefix.modelsets.registry import ModelSet, resolve_model_set

    return model_set if isinstance(model_set, ModelSet) else resolve_model_set(model_set)



class DiffusionRestorers:
    """A :class:`facefix.restore.pipeline.RestorerProvider` over the personalized diffusion restorer.

    The model set is loaded once, on first use (fp16 on CUDA, fp32 elsewhere).
    Every person's adapters are added to it under their own adapter name and
    switched with ``set_adapter``: no base weight is reloaded or modified, so
    the order in which people are restored never changes a result. (Adapters
    are therefore not fused into the weights; fusing would make switching
    inexact in fp16.) Each face is pre-cleaned by the same person's fast
    restorer.

    Faces without diffusion adapters -- of people nobody enrolled, or of
    people not tuned for this model set -- get the fast restorer (the generic
    one for strangers), not the base model with an empty prompt: that use of
    an untuned tile ControlNet is one neither model was made for and nothing
    here has measured it to beat the fast restorer (docs/diffusion.md).

    Args:
        store, generic: the enrolled people and the generic fast model.
        model_set: registered name, local directory, ModelSet or None (the default).
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ...
        tta: mirror test-time augmentation of the pre-cleaner.
        settings: sampling settings (steps, seed, low_vram, ...).
        fast: the fast restorers to take pre-cleaners from (built when None).

    Raises:
        ModelError: the model set's weights are not on disk.
    """

    engine = "diffusion"

    def __init__(self, store: ProfileStore, generic: GenericStore, *, model_set=None, device: str = "auto",
                 tta: bool = False, settings=None, fast: FastRestorers | None = None):
        from facefix.modelsets.hub import locate
        from facefix.restorers.diffusion import SamplerSettings

        self.store = store
        self.generic = generic
        self.model_set = as_model_set(model_set)
        self.paths = locate(self.model_set)  # fail now, before any photo, when weights are missing
        self.device = resolve_device(device)
        if not self.device.startswith("cuda"):
            log.warning("the diffusion engine on %s is very slow (minutes per face); a CUDA GPU makes it seconds",
                        self.device)
        self.settings = replace(settings or SamplerSettings(), fuse_lora=False)
        self.fast = fast or FastRestorers(store, generic, device=device, tta=tta)
        self._parts = None
        self._bank: _AdapterBank | None = None
        self._cache: dict[str | None, Restorer] = {}

    @property
    def parts(self):
        """The loaded model set (loaded on first access)."""
        if self._parts is None:

            from facefix.modelsets.parts import load_parts

            dtype = inference_dtype(self.device)
            log.info("loading diffusion model set %s (%s)", self.model_set.name, dtype)
            self._parts = load_parts(self.paths, device="cpu" if self.settings.low_vram else self.device, dtype=dtype)
            self._bank = _AdapterBank(self._parts)
        return self._parts

    def _make(self, person: str, adapters, prompt: str, name: str) -> Restorer:
        from facefix.restorers.diffusion import DiffusionRestorer

        parts = self.parts
        key = self._bank.add(person, *adapters)
        inner = DiffusionRestorer(parts, precleaner=self.fast.get(person), prompt=prompt, settings=self.settings,
                                  name=name, device=self.device)
        return _Switched(inner, self._bank, key)

    def get(self, person: str | None) -> Restorer:
        if person in self._cache:
            return self._cache[person]
        adapters = None if person is None else self._adapters_of(person)
        if adapters is None:
            # No adapters: the fast restorer (see the class docstring for why).
            restorer = self.fast.get(person)
        else:
            restorer = self._make(person, adapters, adapters[0][1].get("pivot_prompt", ""), f"diffusion/{person}")
        self._cache[person] = restorer
        return restorer

    def _adapters_of(self, person: str):
        """``(unet_lora, guide_adapter or None)`` of ``person`` for this model set, or None."""

        key = self.model_set.key
        kinds = self.store.load(person).artifacts
        if unet_lora_kind(key) not in kinds:
            others = sorted({k.split("/")[1] for k in kinds if k.startswith("diffusion/") and k.count("/") >= 2})
            if others:
                log.warning("%s's diffusion adapters were made for model set %s, not %r: using the fast "
                            "restorer for %s; re-run 'facefix enroll %s --resume --engine diffusion "
                            "--model-set %s' to personalize this one", person, ", ".join(map(repr, others)),
                            self.model_set.name, person, person, self.model_set.name)
            else:
                log.warning("%s has no diffusion adapters for model set %r (run 'facefix enroll %s --resume "
                            "--engine diffusion'); using their fast restorer", person,
                            self.model_set.name, person)
            return None
        unet_lora = self.store.load_artifact(person, unet_lora_kind(key))
        guide = None
        if guide_kind(key) in kinds:
            guide = self.store.load_artifact(person, guide_kind(key))
        else:
            log.warning("%s has a personalized generator but no tuned guide for model set %r; using the generic "
                        "guide (re-run 'facefix enroll %s --resume --engine diffusion')", person,
                        self.model_set.name, person)
        return unet_lora, guide


class _Switched:
    """A person's diffusion restorer over shared parts: activates their adapters, then restores."""

    def __init__(self, inner, bank: "_AdapterBank", key: str | None):
        self.inner = inner
        self.bank = bank
        self.key = key
        self.name = inner.name

    def restore(self, crops, *, callback=None):
        self.bank.activate(self.key)
        return self.inner.restore(crops, callback=callback)


class _AdapterBank:
    """Every person's adapters resident on one loaded model set, switched exactly.

    The UNet LoRA and the guide LoRA live under one adapter name per person
    and are selected with ``set_adapter`` (or disabled for generic faces). The
    guide's fully tuned modules (its condition encoder) cannot be layered, so
    their base values are kept aside and copied in and out on each switch.
    """

    def __init__(self, parts):
        self.parts = parts
        self.names: dict[str, str] = {}  # person -> adapter name
        self.has_guide_lora: dict[str, bool] = {}
        self.full: dict[str, dict] = {}  # adapter name -> {guide param: tensor}
        self.base_full: dict = {}  # guide param -> base tensor
        self.active: str | None | object = object()
        self._added = 0

    def add(self, person: str, unet_lora, guide_adapter) -> str:
        import torch

        from facefix.restorers.diffusion import personalize

        if person in self.names:
            return self.names[person]
        # A fresh name on every attempt: a load that failed halfway must not block the next one.
        self._added += 1
        adapter = f"person{self._added}"
        guide = self.parts.guide
        params = dict(guide.named_parameters())
        full_names = [k[len("full."):] for k in (guide_adapter[0] if guide_adapter else {}) if k.startswith("full.")]
        for name in full_names:
            if name in params and name not in self.base_full:
                self.base_full[name] = params[name].detach().clone()
        personalize(self.parts, unet_lora, guide_adapter, adapter_name=adapter)
        with torch.no_grad():
            self.full[adapter] = {n: params[n].detach().clone() for n in full_names if n in params}
        self.has_guide_lora[adapter] = bool(guide_adapter) and any(k.startswith("lora.") for k in guide_adapter[0])
        self.names[person] = adapter
        self.active = adapter
        self.activate(None)  # nothing is active until a restorer asks
        return adapter

    def activate(self, adapter: str | None) -> None:
        import torch

        if adapter == self.active:
            return
        unet, guide = self.parts.unet, self.parts.guide
        if adapter is None:
            for module in (unet, guide):
                # diffusers' PeftAdapterMixin: False until an adapter is added.
                if module._hf_peft_config_loaded:
                    module.disable_adapters()
        else:
            unet.enable_adapters()
            unet.set_adapter(adapter)
            if self.has_guide_lora[adapter]:
                guide.enable_adapters()
                guide.set_adapter(adapter)
            elif guide._hf_peft_config_loaded:
                guide.disable_adapters()
        params = dict(guide.named_parameters())
        wanted = self.full.get(adapter, {}) if adapter is not None else {}
        with torch.no_grad():
            for name, base in self.base_full.items():
                params[name].copy_(wanted.get(name, base))
        self.active = adapter
