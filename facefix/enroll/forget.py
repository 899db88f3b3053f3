"""Remove a person and what was learned from their references (``facefix profiles rm``).

A profile holds the person's references and their own restorers, but their
references also trained models outside it:

* the **generic** fast model learns from every enrolled person's references
  (:func:`facefix.enroll.fast.train_person` records the names in its settings'
  ``people``); when it learned from the person, its artifacts and its training
  scratch (the resume checkpoints hold the same weights) are deleted, and
  restore falls back to :class:`facefix.restorers.classical.ClassicalRestorer`
  until the next ``facefix enroll`` trains it again from the people left;
* **adapted** restorers (``facefix adapt --person NAME``) start from the
  person's own fast model: those made for the person, or started from their
  model, are deleted too. Album-wide ones start from the generic model; they
  are named in the result (their settings do not say which generic model they
  started from), not deleted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import dataclass, field

from facefix.errors import FacefixError
from facefix.profiles import GenericStore, ProfileStore, validate_name
from facefix.profiles.adapted import AdaptedStore
from facefix.profiles.kinds import FAST_KIND

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Removal:
    """What :func:`remove_person` deleted.

    Args:
        name: the person removed.
        generic_removed: the generic model had learned from them and was deleted.
        generic_reason: why the generic model counted as having learned from them (None when kept).
        adapted_removed: adapted restorers deleted because they came from the person's model.
        adapted_from_generic: album-wide adapted restorers that started from a generic model
            (kept; they may hold what that model learned).
    """

    name: str
    generic_removed: bool = False
    generic_reason: str | None = None
    adapted_removed: tuple[str, ...] = ()
    adapted_from_generic: tuple[str, ...] = field(default=())


def generic_learned_from(name: str, *, store: ProfileStore, generic: GenericStore) -> str | None:
    """Why the generic fast model may have learned from ``name``'s references, or None if it did not.

    The model records the enrolled people it was trained on (settings ``people``).
    It counts as having learned from ``name`` when ``name`` is among them, when
    that record is missing (a model from before it was kept), or when it names
    someone no longer enrolled: a renamed profile (perhaps ``name`` under its
    old name; the record keeps names, not references) or one removed by an
    older facefix.

    Args:
        name: the person (enrolled now, before removal).
        store: the enrolled people.
        generic: the generic model's store.

    Returns:
        A short reason, or None when the model did not learn from ``name`` or there is none.
    """
    if not generic.exists():
        return None
    artifact = generic.load().artifacts.get(FAST_KIND)
    if artifact is None:
        return None
    people = artifact.settings.get("people")
    if not isinstance(people, list):
        return "it does not record whose references it learned from"
    if name in people:
        return f"it learned from {name}'s references"
    enrolled = set(store.names())
    gone = sorted(p for p in people if p not in enrolled)
    if gone:
        return f"it learned from {', '.join(map(repr, gone))}, no longer enrolled under that name (renamed?)"
    return None


def _remove_generic(generic: GenericStore) -> None:
    """Delete the generic model's directory (artifacts, manifest, resume checkpoints) atomically."""
    root = generic.path()
    if not root.exists():
        return
    # Moved aside first, as ProfileStore.remove does: a crash mid-delete never leaves half a model.
    trash = root.with_name(f".trash-{os.getpid()}-{root.name}")
    os.replace(root, trash)
    shutil.rmtree(trash, ignore_errors=True)


def remove_person(
    name: str,
    *,
    store: ProfileStore | None = None,
    generic: GenericStore | None = None,
    adapted: AdaptedStore | None = None,
) -> Removal:
    """Delete ``name``'s profile and every model trained on their references that facefix can tell.

    Args:
        name: an enrolled person.
        store: the enrolled people (default: the user's).
        generic: the generic fast model (default: the user's).
        adapted: the adapted restorers (default: the user's).

    Returns:
        A :class:`Removal` saying what went besides the profile.

    Raises:
        ProfileError: no such person (nothing is deleted).
    """
    store = store or ProfileStore()
    generic = generic or GenericStore()
    adapted = adapted or AdaptedStore()
    name = store.load(validate_name(name)).name  # raises, naming the enrolled, before anything is deleted
    # 1. decide while the profile is still there (renames are judged against the enrolled names)
    reason = generic_learned_from(name, store=store, generic=generic)
    own = f"fast/{name}"
    from_person, from_generic = [], []
    for other in adapted.names():
        with contextlib.suppress(FacefixError):  # an unreadable adapted restorer is not this person's
            info = adapted.info(other)
            if info["person"] == name or info["started_from"] == own:
                from_person.append(other)
            elif info["started_from"] == "fast/generic":
                from_generic.append(other)
    # 2. the profile, then what learned from it
    store.remove(name)
    if reason is not None:
        _remove_generic(generic)
        log.info("removed the generic model: %s", reason)
    for other in from_person:
        adapted.remove(other)
        log.info("removed adapted restorer %r: it started from %s's model", other, name)
    return Removal(name, reason is not None, reason, tuple(from_person),
                   tuple(from_generic) if reason is not None else ())
