"""Hand out loaded restorers: the generic one and each person's, loaded once.

Two engines, one interface (:class:`facefix.restore.pipeline.RestorerProvider`):

* ``fast`` -- :class:`FastRestorers`, the compact CNN, CPU-capable;
* ``diffusion`` -- :class:`DiffusionRestorers`, Dual-Pivot Tuning's
  personalized diffusion restorer, pre-cleaned by the fast one.

:func:`make_provider` builds either from what the user asked for
(``--engine auto|fast|diffusion``); :func:`choose_engine` is the ``auto`` rule:
diffusion when a CUDA GPU is present and the model set's weights are on disk.
"""


import logging
from dataclasses import replace

from facefix.errors import ProfileError, UsageError
from facefix.profiles import GenericStore, ProfileStore
from facefix.providers.diffusion import DiffusionRestorers, as_model_set
from facefix.providers.fast import FastRestorers

log = logging.getLogger(__name__)

ENGINES = ("auto", "fast", "diffusion")



def choose_engine(engine: str, model_set=None, *, device: str = "auto") -> tuple[str, str | None]:
    """Turn ``auto`` into a concrete engine.

    Args:
        engine: ``auto``, ``fast`` or ``diffusion``.
        model_set: a :class:`~facefix.modelsets.registry.ModelSet`, a registered name, a
            local model-set directory, or None (``FACEFIX_MODEL_SET`` or the default).
        device: the ``--device`` asked for; ``auto`` picks diffusion only on CUDA.

    Returns:
        ``(engine, why)``: ``why`` says why ``auto`` fell back to ``fast`` when
        it is worth saying (a CUDA GPU without the weights: how to fetch them;
        the weights without a CUDA GPU), else None (no GPU and no weights: the
        fast engine is what this machine runs). ``fast`` and
        ``diffusion`` are returned as given: a missing model set is reported
        when the diffusion engine is built (:class:`DiffusionRestorers`).
    """
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    if engine != "auto":
        return engine, None
    import torch

    from facefix.modelsets.hub import is_available

    if device != "auto" and not str(device).startswith("cuda"):
        no_gpu = f"--device {device} is not a CUDA GPU"
    elif not torch.cuda.is_available():
        no_gpu = "no CUDA GPU found"
    else:
        no_gpu = None
    chosen = as_model_set(model_set)
    on_disk = is_available(chosen)
    if no_gpu is None and on_disk:
        return "diffusion", None
    if no_gpu is not None:
        if not on_disk:
            # The fast engine is simply what this machine runs: suggesting a
            # multi-GB download that cannot help without a GPU would be noise.
            return "fast", None
        return "fast", (f"using the fast engine: {no_gpu}; model set {chosen.name!r} is on disk, "
                        "but the diffusion engine needs a CUDA GPU")
    return "fast", (f"using the fast engine: model set {chosen.name!r} is not on disk "
                    f"(fetch it with `{chosen.pull_command}`); the diffusion engine needs it")


def choose_engine_for(engine: str, model_set, store: ProfileStore, *,
                      device: str = "auto") -> tuple[str, str | None, list[str]]:
    """:func:`choose_engine`, and when ``auto`` falls back to fast, whose diffusion adapters go unused.

    Returns:
        ``(engine, why, unused)``: ``unused`` names the people with diffusion adapters
        the fast engine leaves aside; ``why`` then says so, also where
        :func:`choose_engine` had nothing to say (no GPU and no weights here).
    """
    concrete, why = choose_engine(engine, model_set, device=device)
    unused = has_diffusion_artifacts(store) if concrete == "fast" and engine == "auto" else []
    if unused:
        why = (f"{why or 'using the fast engine: no CUDA GPU and no diffusion weights here'}, "
               f"so {', '.join(unused)}'s diffusion adapters are not used")
    return concrete, why, unused


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
    keep_expression: bool = True,
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
        keep_expression: with ``references``, keep the photo's own eye and mouth shapes
            (:mod:`facefix.restorers.fidelity`); False lets the restorer draw them.

    Returns:
        A :class:`FastRestorers` (wrapped in ``GuidedRestorers`` with ``references``) or
        :class:`DiffusionRestorers`; its ``engine`` attribute says which.

    Raises:
        ModelError: ``diffusion`` asked for and the weights are not on disk
            (names the id, where it looked and the ``facefix models pull`` command).
    """
    concrete, why, unused = choose_engine_for(engine, model_set, store, device=device)
    if why:
        log.log(logging.WARNING if unused else logging.DEBUG, "%s", why)
    fast = FastRestorers(store, generic, device=device, tta=tta)
    if concrete == "fast":
        if references:
            from facefix.profiles.kinds import FUSION_KIND
            from facefix.restorers.fidelity import FidelitySettings
            from facefix.restorers.reference import LEARNED_FROM, GuidedRestorers

            fidelity = FidelitySettings() if keep_expression else FidelitySettings(sigma=0)
            return GuidedRestorers(fast, store, fusion_kind=FUSION_KIND, learned_from=LEARNED_FROM,
                                   fidelity=fidelity)
        return fast
    from facefix.restorers.diffusion import SamplerSettings

    settings = SamplerSettings()
    settings = replace(settings, steps=settings.steps if steps is None else steps,
                       seed=settings.seed if seed is None else seed, low_vram=low_vram)
    return DiffusionRestorers(store, generic, model_set=model_set, device=device, settings=settings, fast=fast)


