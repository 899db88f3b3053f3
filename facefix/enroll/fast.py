"""Train the fast restorers for a person: the shared generic model, then theirs.

The generic model learns from every enrolled person's references and serves
faces that match nobody; a person's model starts from it and is fine-tuned on
their references alone (DMDNet's generic + specific memories, as weights).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from facefix.common.devices import resolve_device
from facefix.profiles import GenericStore, ProfileStore
from facefix.profiles.kinds import FAST_KIND
from facefix.profiles.provenance import KEY as PROVENANCE
from facefix.profiles.provenance import Provenance

log = logging.getLogger(__name__)

#: Share of the budget the generic model gets when it is trained from scratch (the
#: first enrolment). The person's model is what restores (and keeps the identity
#: of) the person being enrolled: with 20 % (was 50 %) it gained more at both
#: levels and both face sizes measured (docs/fast_restorer.md).
GENERIC_SHARE_NEW = 0.2
#: Share when the generic model continues from its previous weights (new references).
GENERIC_SHARE_UPDATE = 0.3


@dataclass(frozen=True)
class StageResult:
    stage: str
    steps: int
    seconds: float
    first_loss: float | None
    last_loss: float | None
    interrupted: bool


def _reference_key(store: ProfileStore) -> tuple[str, list[str]]:
    ids = sorted(f"{name}/{ref.id}" for name in store.names() for ref in store.load(name).references)
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16], ids


def _all_crops(store: ProfileStore) -> np.ndarray:
    crops = [store.load_crops(store.load(name)) for name in store.names()]
    crops = [c for c in crops if len(c)]
    return np.concatenate(crops) if crops else np.zeros((0, 512, 512, 3), np.uint8)


def stage_result(stage: str, steps: int, seconds: float, history: list[float], interrupted: bool) -> StageResult:
    """A training stage's summary: its loss at the start and at the end (means over a fifth of
    the steps, at most 20), as enroll reports every stage."""
    window = max(1, min(20, len(history) // 5))
    first = float(np.mean(history[:window])) if history else None
    last = float(np.mean(history[-window:])) if history else None
    return StageResult(stage, steps, float(seconds), first, last, interrupted)


def _summary(stage: str, result) -> StageResult:
    return stage_result(stage, result.steps, result.settings["training"]["seconds"], result.loss_history,
                        result.interrupted)


def _shape_of(settings: dict):
    """The network shape recorded with trained weights (a person's model keeps the generic's)."""
    from facefix.restorers.fast import FastConfig

    return FastConfig.from_dict(settings["config"])


def train_person(
    name: str,
    *,
    store: ProfileStore,
    generic: GenericStore,
    budget_s: float,
    resume: bool = False,
    device: str = "auto",
    on_stage: Callable[[str, float], None] | None = None,
    on_step: Callable[[object], None] | None = None,
    max_steps: int | None = None,
    model_config=None,
    train_config=None,
) -> list[StageResult]:
    """Bring the generic model up to date with everyone enrolled, then fine-tune ``name``'s.

    Args:
        name: an enrolled person with references.
        store, generic: where profiles and the generic model live.
        budget_s: total seconds for both stages.
        resume: continue from the last checkpoints of an interrupted run.
        device: torch device ("auto": CUDA when present).
        on_stage: called with (stage label, stage budget in s) as each stage starts.
        on_step: forwarded to :func:`facefix.training.fast.train_fast`.
        max_steps: stop each stage after this many steps (the budget still applies).
        model_config, train_config: override the network shape / training settings.

    Returns:
        One :class:`StageResult` per stage that ran. Each stage's weights are
        committed when it ends, also when Ctrl-C stopped it (the last good
        weights), so the profile is usable; rerun with ``resume`` to go on.
    """
    from facefix.training.fast import train_fast
    from facefix.training.loop import TrainConfig

    device = resolve_device(device)
    results: list[StageResult] = []
    key, ids = _reference_key(store)
    current = generic.load().artifacts.get(FAST_KIND) if generic.exists() else None
    generic_tensors = None
    person_budget = budget_s
    # 1. the generic model, retrained when the set of enrolled references changed
    if current is None or current.settings.get("references_key") != key:
        share = GENERIC_SHARE_NEW if current is None else GENERIC_SHARE_UPDATE
        stage_budget = budget_s * share
        person_budget = budget_s - stage_budget
        init = generic.load_artifact(FAST_KIND)[0] if current is not None else None
        if current is not None and model_config is None:
            model_config = _shape_of(current.settings)
        if on_stage:
            on_stage("generic model", stage_budget)
        result = train_fast(_all_crops(store), init=init, budget_s=stage_budget, seed=0,
                            checkpoint_dir=generic.work_dir(FAST_KIND), resume=resume, on_step=on_step, max_steps=max_steps,
                            config=train_config, model_config=model_config, device=device,
                            lr=(train_config or TrainConfig()).lr_scratch)
        # An interrupted generic model is kept (usable) but not marked up to
        # date, so the next run resumes it.
        # Whose photos it learned from: everyone enrolled now, and what the weights it went on from had learned
        # (earlier people, a library's photos: facefix learn).
        record = Provenance.of(store.names())
        if current is not None:
            start = Provenance.from_settings(current.settings)
            record = record.fine_tuned_from(start, "the previous generic model") if start is not None else None
        settings = {**result.settings, "references_key": None if result.interrupted else key,
                    "references": len(ids),
                    "people": store.names(), "name": "generic",
                    PROVENANCE: None if record is None else record.to_settings()}
        generic.commit_artifact(FAST_KIND, result.tensors, settings)
        results.append(_summary("generic", result))
        generic_tensors = result.tensors
        if result.interrupted:
            return results
    if generic_tensors is None:
        generic_tensors, generic_settings = generic.load_artifact(FAST_KIND)
        if model_config is None:
            model_config = _shape_of(generic_settings)
    else:
        generic_settings = settings
    # 2. the person's model, fine-tuned from the generic one
    profile = store.load(name)
    if on_stage:
        on_stage(f"{name}'s model", person_budget)
    result = train_fast(store.load_crops(profile), init=generic_tensors, budget_s=person_budget, seed=1,
                        checkpoint_dir=store.work_dir(name, FAST_KIND), resume=resume, on_step=on_step, max_steps=max_steps,
                        config=train_config, model_config=model_config, device=device)
    # A person's model inherits its generic model's record: it holds what that model learned.
    start = Provenance.from_settings(generic_settings)
    record = None if start is None else Provenance.of([name]).fine_tuned_from(start, "a generic model")
    settings = {**result.settings, "references": [r.id for r in profile.references], "generic_key": key,
                "name": name, PROVENANCE: None if record is None else record.to_settings()}
    store.commit_artifact(name, FAST_KIND, result.tensors, settings)
    results.append(_summary(name, result))
    return results
