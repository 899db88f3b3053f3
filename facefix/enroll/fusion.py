"""Learn, at enroll, how a person's references fuse into their restored faces.

After the person's fast model is trained, each of their references is degraded,
pre-cleaned by that model (what restore will do), given the person's other
references warped onto it, and a small network learns how much of each
reference's detail to take, band by band, to get the reference back
(:func:`facefix.training.fusion_train.train_fusion`; GFRNet/ASFFNet learn their
fusion the same way). Restore then uses it for faces blurred past
:data:`facefix.restorers.reference.LEARNED_FROM`, where the hand-made fusion has
to give up (docs/references.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from facefix.profiles import GenericStore, ProfileStore
from facefix.profiles.kinds import FAST_KIND, FUSION_KIND
from facefix.profiles.provenance import KEY as PROVENANCE
from facefix.profiles.provenance import Provenance
from facefix.quality.same_photo import photo_groups

log = logging.getLogger(__name__)

#: Share of ``enroll``'s budget the fusion gets, after the fast models (at the default
#: 10 minutes: 2.5 minutes, 150-630 steps on one busy CPU thread).
FUSION_SHARE = 0.25


def can_learn_fusion(crops: np.ndarray) -> bool:
    """Whether the references hold two distinct photos (a reference never guides its own photo)."""
    return len(crops) >= 2 and len(photo_groups(crops)) >= 2


def train_person_fusion(name: str, *, store: ProfileStore, generic: GenericStore, budget_s: float,
                        device: str = "auto", seed: int = 0,
                        on_progress: Callable[[float, str], None] | None = None):
    """Train and store ``name``'s reference fusion on top of their fast model.

    Returns:
        The :class:`facefix.enroll.fast.StageResult` of the training, or None when the
        references hold fewer than two distinct photos (nothing to learn from; the
        hand-made fusion serves them).
    """
    from facefix.enroll.fast import stage_result
    from facefix.providers.fast import FastRestorers
    from facefix.restorers.reference import FusionSettings
    from facefix.training.fusion_train import train_fusion

    profile = store.load(name)
    crops = store.load_crops(profile)
    if not can_learn_fusion(crops):
        log.info("%s: fewer than two distinct photos; no reference fusion to learn", name)
        return None
    base = FastRestorers(store, generic, device=device).get(name)
    result = train_fusion(crops, base, budget_s=budget_s, seed=seed, settings=FusionSettings(),
                          on_progress=on_progress)
    stage = stage_result("reference fusion", result.steps, result.seconds, result.loss_history, False)
    if result.steps == 0:
        # an untrained network would return the pre-cleaned face: keep whatever was there
        log.warning("%s: the reference fusion got no training step in %.0f s; not stored", name, budget_s)
        return stage
    fast = profile.artifacts.get(FAST_KIND)
    # It learned from this person's references and from what their fast model made of them.
    record = Provenance.of([name])
    if fast is not None:
        start = Provenance.from_settings(fast.settings)
        record = None if start is None else record.fine_tuned_from(start, f"{name}'s fast model")
    settings = {**result.settings, "name": name, "fast_file": None if fast is None else fast.file,
                PROVENANCE: None if record is None else record.to_settings()}
    store.commit_artifact(name, FUSION_KIND, result.tensors, settings)
    return stage
