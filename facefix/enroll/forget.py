"""Remove a person and everything learned from their photos (``facefix profiles rm``).

A profile holds the person's references and their own restorers, but their
photos also trained models outside it. Every artifact records whose photos it
learned from, directly or through the model it was fine-tuned from
(:mod:`facefix.profiles.provenance`):

* the **generic** fast model (enroll trains it on every enrolled person's
  references; ``facefix learn`` on a library's faces, matched against the
  enrolled people);
* **other people's** artifacts: their fast model was fine-tuned from the
  generic model, their diffusion guide saw other people's references as
  "generic faces" and was trained on the generic model's pre-cleaned faces;
* **adapted** restorers started from a person's or the generic model and
  learned from an album's faces;
* album adaptation's **pseudo-target cache**: restored copies of album faces,
  which records nothing of whose faces they are, so it goes whole.

Each artifact that learned from the person, or cannot tell (it keeps no
record, learned from faces never matched against the person, or names someone
no longer enrolled), is deleted with its training scratch (its resume
checkpoints hold the same weights), and the result says how to rebuild it.
Restore goes on without it: a person whose model went gets the generic
restorer, and without a generic model faces get the classical one.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass

from facefix.common import paths
from facefix.errors import FacefixError
from facefix.profiles import GenericStore, ProfileStore, validate_name
from facefix.profiles.adapted import AdaptedStore
from facefix.profiles.kinds import FAST_KIND, FUSION_KIND, kind_label, scratch_of
from facefix.profiles.provenance import Provenance, learned_from

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Forgotten:
    """One artifact deleted because it learned from the person (or cannot tell).

    Args:
        where: ``generic``, ``profile`` (another person's), ``adapted`` or ``cache`` (the
            pseudo-target cache).
        owner: the other person or the adapted restorer's name (None for the generic model).
        kind: the artifact kind.
        what: how messages name it ("bob's fast model").
        reason: why it counted as having learned from the person.
        rebuild: how to make it again.
    """

    where: str
    owner: str | None
    kind: str
    what: str
    reason: str
    rebuild: str


@dataclass(frozen=True)
class Removal:
    """What :func:`remove_person` deleted besides the profile.

    Args:
        name: the person removed.
        forgotten: every artifact deleted because it learned from them (or cannot tell).
        unchecked: ``(what, error)`` for artifacts that could not be read, so could not be judged (kept).
    """

    name: str
    forgotten: tuple[Forgotten, ...] = ()
    unchecked: tuple[tuple[str, str], ...] = ()

    @property
    def generic_removed(self) -> bool:
        return any(f.where == "generic" for f in self.forgotten)

    @property
    def generic_reason(self) -> str | None:
        return next((f.reason for f in self.forgotten if f.where == "generic"), None)

    @property
    def adapted_removed(self) -> tuple[str, ...]:
        return tuple(f.owner for f in self.forgotten if f.where == "adapted" and f.owner is not None)


def generic_learned_from(name: str, *, store: ProfileStore, generic: GenericStore) -> str | None:
    """Why the generic fast model counts as having learned from ``name``'s photos, or None (or no model).

    Args:
        name: the person (enrolled now, before removal).
        store: the enrolled people.
        generic: the generic model's store.
    """
    if not generic.exists():
        return None
    artifact = generic.load().artifacts.get(FAST_KIND)
    if artifact is None:
        return None
    hashes = [r.sha256 for r in store.load(name).references]
    return learned_from(Provenance.from_settings(artifact.settings), name, enrolled=store.names(), reference_hashes=hashes)


def _generic_rebuild(record: Provenance | None) -> str:
    learn = f"'facefix learn {record.folders[0]}' or " if record is not None and record.folders else ""
    return (f"faces that match nobody get the classical restorer until {learn}the next 'facefix enroll' "
            "(e.g. 'facefix enroll NAME --resume') trains it again")


def _profile_rebuild(person: str, kind: str) -> str:
    if kind in (FAST_KIND, FUSION_KIND):  # enroll trains the fast model, then the fusion on top of it
        return f"run 'facefix enroll {person} --resume' to rebuild it"
    if kind.startswith("diffusion/"):
        return f"run 'facefix enroll {person} --resume --engine diffusion' to rebuild it"
    return f"train it again for {person}"


def _adapted_rebuild(adapted: AdaptedStore, name: str) -> str:
    info = adapted.info(name)
    person = f" --person {info['person']}" if info["person"] else ""
    return f"run 'facefix adapt {info['album']} --name {name}{person}' to rebuild it"


def _remove_dir(root) -> None:
    """Delete a store's directory (artifacts, manifest, resume checkpoints) atomically."""
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
    """Delete ``name``'s profile and every artifact that learned from their photos (or cannot tell).

    Args:
        name: an enrolled person.
        store: the enrolled people (default: the user's).
        generic: the generic fast model (default: the user's).
        adapted: the adapted restorers (default: the user's).

    Returns:
        A :class:`Removal` listing what went besides the profile, each with how to rebuild it.

    Raises:
        ProfileError: no such person (nothing is deleted).
    """
    store = store or ProfileStore()
    generic = generic or GenericStore()
    adapted = adapted or AdaptedStore()
    profile = store.load(validate_name(name))  # raises, naming the enrolled, before anything is deleted
    name = profile.name
    enrolled = store.names()
    hashes = [r.sha256 for r in profile.references]

    def judge(settings) -> str | None:
        return learned_from(Provenance.from_settings(settings), name, enrolled=enrolled, reference_hashes=hashes)

    # 1. decide while the profile is still there (renames are judged against the enrolled names)
    forgotten: list[Forgotten] = []
    unchecked: list[tuple[str, str]] = []
    if generic.exists():
        for kind, art in generic.load().artifacts.items():
            reason = judge(art.settings)
            if reason is not None:
                forgotten.append(Forgotten("generic", None, kind, "the generic model", reason,
                                           _generic_rebuild(Provenance.from_settings(art.settings))))
    for other in enrolled:
        if other == name:
            continue
        try:
            artifacts = store.load(other).artifacts
        except FacefixError as exc:
            unchecked.append((f"{other}'s profile", str(exc)))
            continue
        for kind, art in sorted(artifacts.items()):
            reason = judge(art.settings)
            if reason is not None:
                forgotten.append(Forgotten("profile", other, kind, f"{other}'s {kind_label(kind)}", reason,
                                           _profile_rebuild(other, kind)))
    for other in adapted.names():
        try:
            artifacts = adapted.slot(other).load().artifacts
        except FacefixError as exc:
            unchecked.append((f"adapted restorer {other!r}", str(exc)))
            continue
        if FAST_KIND not in artifacts:
            continue  # no weights: nothing learned
        reason = judge(artifacts[FAST_KIND].settings)
        if reason is not None:
            rebuild = _adapted_rebuild(adapted, other)
            forgotten.append(Forgotten("adapted", other, FAST_KIND, f"adapted restorer {other!r}", reason, rebuild))
    cache = paths.pseudo_target_cache()
    cached = sum(1 for _ in cache.rglob("*.png")) if cache.is_dir() else 0
    if cached:
        forgotten.append(Forgotten("cache", None, "pseudo-targets",
                                   f"album adaptation's pseudo-target cache ({cached} face{'s' * (cached != 1)})",
                                   "it holds restored copies of album faces and does not record whose they are",
                                   "the next 'facefix adapt' makes them again"))
    # 2. the profile, then what learned from it
    store.remove(name)
    if any(f.where == "generic" for f in forgotten):
        _remove_dir(generic.path())
    if cached:
        _remove_dir(cache)
    for other in dict.fromkeys(f.owner for f in forgotten if f.where == "profile"):
        with store.edit(other, create=False) as editor:
            for f in forgotten:
                if f.where == "profile" and f.owner == other:
                    editor.remove_artifact(f.kind, scratch=scratch_of(f.kind))
    for f in forgotten:
        if f.where == "adapted":
            adapted.remove(f.owner)
    for f in forgotten:
        log.info("removed %s: %s", f.what, f.reason)
    return Removal(name, tuple(forgotten), tuple(unchecked))
