"""Hand out loaded restorers: the generic one and each person's, loaded once.

``--engine fast`` serves the compact CNN everywhere; the diffusion engine
plugs in here when its weights and a person's adapters are present.
"""

from __future__ import annotations

import logging

from ..errors import ModelError, ProfileError
from ..profiles import GenericStore, ProfileStore
from .base import Restorer

log = logging.getLogger(__name__)

FAST_KIND = "fast"


def resolve_device(device: str = "auto") -> str:
    """``auto`` → cuda when available, else cpu; anything else as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class FastRestorers:
    """A :class:`facefix.pipeline.RestorerProvider` over the fast CNN restorers.

    Args:
        store: the enrolled people.
        generic: where the generic model lives.
        device: torch device for inference ("auto" picks CUDA when present).
        tta: average each face with its mirror image (slower, a little truer).
    """

    def __init__(self, store: ProfileStore, generic: GenericStore, *, device: str = "auto", tta: bool = False):
        self.store = store
        self.generic = generic
        self.device = resolve_device(device)
        self.tta = tta
        self._cache: dict[str | None, Restorer] = {}

    def _load(self, tensors, settings, name: str) -> Restorer:
        from .fast import FastRestorer

        return FastRestorer.load(tensors, settings, name=name, device=self.device, tta=self.tta)

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
        try:
            tensors, settings = self.generic.load_artifact(FAST_KIND)
        except ProfileError as exc:
            raise ModelError(
                "there is no generic restorer yet: it is trained from enrolled people's photos; "
                "enroll someone first with 'facefix enroll NAME DIR'"
            ) from exc
        restorer = self._load(tensors, settings, "fast/generic")
        self._cache[None] = restorer
        return restorer
