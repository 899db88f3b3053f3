"""Hand out loaded restorers: the generic one and each person's, loaded once.

Two engines, one interface (:class:`facefix.restore.pipeline.RestorerProvider`):

* ``fast`` -- :class:`FastRestorers`, the compact CNN, CPU-capable;
* ``diffusion`` -- :class:`DiffusionRestorers`, Dual-Pivot Tuning's
  personalized diffusion restorer, pre-cleaned by the fast one.

:func:`make_provider` builds either from what the user asked for
(``--engine auto|fast|diffusion``); :func:`choose_engine` is the ``auto`` rule:
diffusion when a CUDA GPU is present and the model set's weights are on disk.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from facefix.errors import ProfileError, UsageError
from facefix.profiles import GenericStore, ProfileStore
from facefix.restorers.base import Restorer

log = logging.getLogger(__name__)

FAST_KIND = "fast"
ENGINES = ("auto", "fast", "diffusion")


def resolve_device(device: str = "auto") -> str:
    """``auto`` → cuda when available, else cpu; anything else as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class FastRestorers:
    """A :class:`facefix.restore.pipeline.RestorerProvider` over the fast CNN restorers.

    Args:
        store: the enrolled people.
        generic: where the generic model lives.
        device: torch device for inference ("auto" picks CUDA when present).
        tta: average each face with its mirror image (slower, a little truer).
    """

    engine = "fast"

    def __init__(self, store: ProfileStore, generic: GenericStore, *, device: str = "auto", tta: bool = False):
        self.store = store
        self.generic = generic
        self.device = resolve_device(device)
        self.tta = tta
        self._cache: dict[str | None, Restorer] = {}

    def _load(self, tensors, settings, name: str) -> Restorer:
        from facefix.restorers.fast import FastRestorer

        return FastRestorer.load(tensors, settings, name=name, device=self.device, tta=self.tta)

    def _has_generic_model(self) -> bool:
        """Whether a trained generic fast model is on disk (a corrupt one still raises when loaded)."""
        return self.generic.exists() and FAST_KIND in self.generic.load().artifacts

    def get(self, person: str | None) -> Restorer:
        if person in self._cache:
            return self._cache[person]
        if person is not None:
            profile = self.store.load(person)
            if FAST_KIND in profile.artifacts:
                tensors, settings = self.store.load_artifact(person, FAST_KIND)
                restorer = self._load(tensors, settings, f"fast/{person}")
                self._cache[person] = restorer
                return restorer
            log.warning("%s has no trained restorer yet (run 'facefix enroll %s DIR --resume'); "
                        "using the generic one", person, person)
            restorer = self.get(None)
            self._cache[person] = restorer
            return restorer
        if not self._has_generic_model():
            # A fresh install, or the generic model was removed with the person it
            # learned from: the weight-free restorer keeps restore working.
            from facefix.restorers.classical import ClassicalRestorer

            log.info("no trained generic restorer yet (it is trained when someone is enrolled with "
                     "'facefix enroll NAME DIR'); using the classical one (denoise, deblock, deblur)")
            restorer = ClassicalRestorer()
            self._cache[None] = restorer
            return restorer
        tensors, settings = self.generic.load_artifact(FAST_KIND)
        restorer = self._load(tensors, settings, "fast/generic")
        self._cache[None] = restorer
        return restorer


# --------------------------------------------------------------------------- engine choice


def _model_set(model_set):
    from facefix.modelsets.registry import ModelSet, resolve_model_set

    return model_set if isinstance(model_set, ModelSet) else resolve_model_set(model_set)


def choose_engine(engine: str, model_set=None, *, device: str = "auto") -> tuple[str, str | None]:
    """Turn ``auto`` into a concrete engine.

    Args:
        engine: ``auto``, ``fast`` or ``diffusion``.
        model_set: a :class:`~facefix.modelsets.registry.ModelSet`, a registered name, a
            local model-set directory, or None (``FACEFIX_MODEL_SET`` or the default).
        device: the ``--device`` asked for; ``auto`` picks diffusion only on CUDA.

    Returns:
        ``(engine, why)``: ``why`` says why ``auto`` fell back to ``fast``
        (no CUDA GPU, weights not on disk), else None. ``fast`` and
        ``diffusion`` are returned as given: a missing model set is reported
        when the diffusion engine is built (:class:`DiffusionRestorers`).
    """
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    if engine != "auto":
        return engine, None
    import torch

    from facefix.modelsets.registry import is_available

    reasons = []
    if device != "auto" and not str(device).startswith("cuda"):
        reasons.append(f"--device {device} is not a CUDA GPU")
    elif not torch.cuda.is_available():
        reasons.append("no CUDA GPU found")
    chosen = _model_set(model_set)
    if not is_available(chosen):
        reasons.append(f"model set {chosen.name!r} is not on disk (fetch it with `{chosen.pull_command}`)")
    if not reasons:
        return "diffusion", None
    return "fast", "using the fast engine: " + " and ".join(reasons) + "; the diffusion engine needs both"


def has_diffusion_artifacts(store: ProfileStore) -> list[str]:
    """Names of enrolled people who have diffusion adapters (of any model set)."""
    people = []
    for name in store.names():
        try:
            kinds = store.load(name).artifacts
        except ProfileError:
            continue
        if any(kind.startswith("diffusion/") for kind in kinds):
            people.append(name)
    return people


def make_provider(
    engine: str,
    *,
    store: ProfileStore,
    generic: GenericStore,
    device: str = "auto",
    tta: bool = False,
    model_set=None,
    steps: int | None = None,
    seed: int | None = None,
    low_vram: bool = False,
    references: bool = True,
):
    """The restorer provider for ``--engine auto|fast|diffusion``.

    Args:
        engine: ``auto`` (diffusion when a CUDA GPU and the model set's weights
            are present, else fast), ``fast`` or ``diffusion``.
        store, generic: the enrolled people and the generic fast model.
        device: torch device (``auto``: CUDA when present).
        tta: mirror test-time augmentation of the fast restorer (also the pre-cleaner).
        model_set: registered name, local model-set directory, ModelSet or None
            (``FACEFIX_MODEL_SET``, else the default).
        steps: diffusion sampler steps (default 25).
        seed: diffusion seed (default 0): the same seed gives the same output.
        low_vram: attention slicing, VAE tiling and model CPU offload (6-8 GB cards).
        references: with the fast engine, restore an enrolled person's faces with
            their references too (:class:`facefix.restorers.reference.GuidedRestorers`):
            their detail is warped onto the face and fused where it agrees.

    Returns:
        A :class:`FastRestorers` (wrapped in ``GuidedRestorers`` with ``references``) or
        :class:`DiffusionRestorers`; its ``engine`` attribute says which.

    Raises:
        ModelError: ``diffusion`` asked for and the weights are not on disk
            (names the id, where it looked and the ``facefix models pull`` command).
    """
    concrete, why = choose_engine(engine, model_set, device=device)
    if why:
        people = has_diffusion_artifacts(store)
        if people:
            log.warning("%s, so %s's diffusion adapters are not used", why, ", ".join(people))
        else:
            log.debug("%s", why)
    fast = FastRestorers(store, generic, device=device, tta=tta)
    if concrete == "fast":
        if references:
            from facefix.restorers.reference import GuidedRestorers

            return GuidedRestorers(fast, store)
        return fast
    from facefix.restorers.diffusion import SamplerSettings

    settings = SamplerSettings()
    settings = replace(settings, steps=settings.steps if steps is None else steps,
                       seed=settings.seed if seed is None else seed, low_vram=low_vram)
    return DiffusionRestorers(store, generic, model_set=model_set, device=device, settings=settings, fast=fast)


# --------------------------------------------------------------------------- diffusion


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
        from facefix.modelsets.registry import locate
        from facefix.restorers.diffusion import SamplerSettings

        self.store = store
        self.generic = generic
        self.model_set = _model_set(model_set)
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
            import torch

            from facefix.modelsets.parts import load_parts

            dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
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
        from facefix.training.dual_pivot import guide_kind, unet_lora_kind

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
