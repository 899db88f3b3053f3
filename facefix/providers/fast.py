"""The fast engine's provider: each person's CNN, the generic one, or the weight-free classical restorer, loaded once."""

from __future__ import annotations

import logging

from facefix.common.devices import resolve_device
from facefix.profiles import GenericStore, ProfileStore
from facefix.profiles.kinds import FAST_KIND
from facefix.restorers.base import Restorer

log = logging.getLogger(__name__)


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
