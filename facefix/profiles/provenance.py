"""Whose photos a learned artifact learned from: the record every trained model keeps, and how it is read.

Faces are biometric data: ``facefix profiles rm NAME`` must leave nothing
behind that learned from NAME. Every artifact facefix trains records, in its
settings under :data:`KEY`, the people it learned from, directly or through
the model it was fine-tuned from (a person's fast model inherits its generic
model's record, a diffusion guide its pre-cleaner's, an adapted restorer the
one it started from), and the photos outside any profile it learned from
(``facefix learn``'s library, an album), with the people those photos' faces
were matched against. :func:`learned_from` reads a record and says why an
artifact counts as having learned from a person, or None.

A record::

    {"people": [...],      enrolled people whose photos it learned from (directly or through its start)
     "direct": [...],      those it saw itself
     "start": "...",       what it was fine-tuned from, in words (None: from scratch)
     "photos": [...],      sha256 of photos outside the profiles it learned from
     "folders": [...],     where those came from
     "matched": [...]}     the people enrolled when those photos' faces were matched (None: never matched)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: The settings key of the record.
KEY = "learned_from"


@dataclass(frozen=True)
class Provenance:
    """Whose photos an artifact learned from (see the module's docstring for the fields)."""

    people: tuple[str, ...] = ()
    direct: tuple[str, ...] = ()
    start: str | None = None
    photos: tuple[str, ...] = ()
    folders: tuple[str, ...] = ()
    matched: tuple[str, ...] | None = ()

    @classmethod
    def of(cls, people: Iterable[str] = (), *, photos: Iterable[str] = (), folders: Iterable[str] = (),
           matched: Iterable[str] | None = ()) -> Provenance:
        """What one training saw itself: enrolled ``people``'s references, and ``photos`` of ``folders``
        whose faces were matched against ``matched`` (None: never matched)."""
        direct = tuple(sorted(set(people)))
        return cls(direct, direct, None, tuple(sorted(set(photos))), tuple(sorted(set(folders))),
                   None if matched is None else tuple(sorted(set(matched))))

    def fine_tuned_from(self, start: Provenance, what: str) -> Provenance:
        """This training's record on top of ``start``'s, the record of the model it started from (``what``)."""
        if start.folders and self.folders:
            matched = (None if start.matched is None or self.matched is None
                       else tuple(sorted(set(start.matched) & set(self.matched))))
        else:
            matched = start.matched if start.folders else self.matched
        return Provenance(tuple(sorted({*self.people, *start.people})), self.direct, what,
                          tuple(sorted({*self.photos, *start.photos})), tuple(sorted({*self.folders, *start.folders})),
                          matched)

    def to_settings(self) -> dict[str, Any]:
        return {"people": list(self.people), "direct": list(self.direct), "start": self.start,
                "photos": list(self.photos), "folders": list(self.folders),
                "matched": None if self.matched is None else list(self.matched)}

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Provenance | None:
        """The record in an artifact's settings; None when it keeps none (it cannot tell).

        A generic model from before records were kept lists its people under
        ``people``: that list is its record. A record of None means "cannot tell".
        """
        if KEY in settings:
            record = settings[KEY]
            if not isinstance(record, Mapping):
                return None  # recorded as unknown: it went on from weights that kept no record
            try:
                matched = record["matched"]
                return cls(tuple(record["people"]), tuple(record["direct"]), record["start"], tuple(record["photos"]),
                           tuple(record["folders"]), None if matched is None else tuple(matched))
            except (KeyError, TypeError):
                return None  # a damaged record tells nothing: the artifact cannot tell
        people = settings.get("people")
        if settings.get("name") == "generic" and isinstance(people, list):
            return cls.of(people)
        return None


def learned_from(record: Provenance | None, name: str, *, enrolled: Iterable[str],
                 reference_hashes: Iterable[str] = ()) -> str | None:
    """Why an artifact with this record counts as having learned from ``name``, or None.

    It does when ``name`` is among its people (directly or through its start),
    when one of the photos it learned from is one of ``name``'s references, or
    when it cannot tell: it keeps no record, it learned from photos whose faces
    were never matched against ``name`` (``name`` was enrolled later, or they
    were never matched), or it names someone no longer enrolled (a renamed
    profile, perhaps ``name`` under an old name).

    Args:
        record: the artifact's :class:`Provenance` (None: it keeps none).
        name: the person (still enrolled).
        enrolled: everyone enrolled now, ``name`` included.
        reference_hashes: sha256 of ``name``'s reference photos.
    """
    if record is None:
        return "it does not record whose photos it learned from, so it cannot tell"
    if name in record.direct:
        return f"it learned from {name}'s photos"
    if name in record.people:
        return f"it was fine-tuned from {record.start or 'a model'} that learned from {name}'s photos"
    shared = set(record.photos) & set(reference_hashes)
    if shared:
        return f"it learned from {len(shared)} photo(s) that are also {name}'s references"
    if record.folders and (record.matched is None or name not in record.matched):
        where = ", ".join(record.folders)
        why = "were never matched against anyone" if record.matched is None else f"were matched before {name} was enrolled"
        return f"it learned from the faces of {where}, which {why}, so it cannot tell"
    gone = sorted(set(record.people) - set(enrolled))
    if gone:
        return f"it learned from {', '.join(map(repr, gone))}, no longer enrolled under that name (renamed?)"
    return None
