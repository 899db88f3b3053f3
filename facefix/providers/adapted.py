"""The provider for ``facefix restore --restorer NAME``: an adapted restorer, and a fallback for the faces it was not made for."""

from __future__ import annotations

from facefix.common.devices import resolve_device
from facefix.errors import UsageError
from facefix.profiles.adapted import AdaptedStore, load_adapted
from facefix.restorers.fast import FastRestorer


class AdaptedRestorers:
    """A :class:`facefix.restore.pipeline.RestorerProvider` for ``--restorer NAME``.

    An album-wide adapted restorer serves every face; one made for a person
    (``facefix adapt --person NAME``) serves that person's faces, and
    ``fallback`` (usually :class:`facefix.providers.fast.FastRestorers`) the others.
    """

    def __init__(self, name: str, fallback=None, *, store: AdaptedStore | None = None, device: str = "auto",
                 tta: bool = False):
        tensors, settings = load_adapted(name, store=store)
        self.person = settings.get("adaptation", {}).get("person")
        self.restorer = FastRestorer.load(tensors, settings, name=f"adapted/{name}", device=resolve_device(device),
                                          tta=tta)
        self.fallback = fallback

    def get(self, person: str | None):
        if self.person is None or person == self.person:
            return self.restorer
        if self.fallback is None:
            raise UsageError(f"{self.restorer.name} was adapted for {self.person!r} only; pass a fallback provider")
        return self.fallback.get(person)
