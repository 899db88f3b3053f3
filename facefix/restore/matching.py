"""Decide whose restorer each face gets: an enrolled person, or the generic prior.

This is DMDNet's dual memory in facefix's form: a face that matches an
enrolled person is restored with that person's model; any other face gets the
generic one. Matching is conservative on purpose, because a person's model
applied to a stranger pulls the face towards the wrong identity: a face is
given to a person only when it clears the backend's same-person line *and*
is clearly closer to that person than to anyone else enrolled.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from facefix.faces import FaceAnalyzer
from facefix.faces.types import Face
from facefix.profiles import ProfileStore

log = logging.getLogger(__name__)

#: Required lead of the best person over the second best (cosine).
MARGIN = 0.02
#: A person's score for a face: the mean of its best few reference similarities,
#: which is steadier than the single best and not diluted by odd references.
TOP_K = 3


@dataclass(frozen=True)
class Match:
    """Who a face was given to, and why.

    Attributes:
        person: the enrolled person's name, or None for the generic prior.
        similarity: that person's score for the face (cosine), or the best
            score of anyone when the face went to the generic prior.
        reason: "matched", "requested", "requested-unmatched" (the largest face
            was used because no face matched), or "no-match".
    """

    person: str | None
    similarity: float | None
    reason: str


@dataclass(frozen=True, eq=False)
class Gallery:
    """Reference embeddings of enrolled people, for one analyzer backend."""

    backend: str
    people: dict[str, np.ndarray]

    @classmethod
    def from_store(
        cls, store: ProfileStore, analyzer: FaceAnalyzer, names: Sequence[str] | None = None
    ) -> Gallery:
        """Collect embeddings from the profiles; compute them from the stored
        aligned crops when a profile was enrolled with another backend."""
        people = {}
        for name in names if names is not None else store.names():
            profile = store.load(name)
            if analyzer.name in profile.backends:
                people[name] = profile.embeddings(analyzer.name)
            elif profile.references:
                log.info("computing %s embeddings for %s from the stored references",
                         analyzer.name, name)
                people[name] = analyzer.embed_aligned(store.load_crops(profile))
        return cls(backend=analyzer.name, people=people)

    def scores(self, embedding: np.ndarray) -> dict[str, float]:
        """Person -> score (mean of the top-k reference cosine similarities)."""
        out = {}
        for name, refs in self.people.items():
            sims = np.sort(refs @ embedding)[::-1][:TOP_K]
            out[name] = float(sims.mean())
        return out


def _auto(scores: dict[str, float], threshold: float) -> Match:
    if not scores:
        return Match(None, None, "no-match")
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    best, score = ranked[0]
    runner_up = ranked[1][1] if len(ranked) > 1 else -1.0
    if score >= threshold and score - runner_up >= MARGIN:
        return Match(best, score, "matched")
    return Match(None, score, "no-match")


def assign(
    faces: Sequence[Face], gallery: Gallery, *, person: str = "auto", threshold: float
) -> list[Match]:
    """Give each face to a person or to the generic prior.

    Args:
        faces: detected faces with embeddings of ``gallery.backend``.
        gallery: the enrolled people.
        person: "auto" to match every face; or a name: the face that matches
            that person best gets their model (the largest face when none
            matches, with a warning); the other faces are matched among the
            remaining people.
        threshold: the backend's same-person cosine similarity.
    """
    scores = [gallery.scores(f.embedding) if f.embedding is not None else {} for f in faces]
    if person == "auto":
        return [_auto(s, threshold) for s in scores]
    matches = [_auto({k: v for k, v in s.items() if k != person}, threshold) for s in scores]
    if not faces:
        return matches
    own = [s.get(person, -1.0) for s in scores]
    chosen = int(np.argmax(own))
    if own[chosen] >= threshold:
        matches[chosen] = Match(person, own[chosen], "requested")
    else:
        chosen = int(np.argmax([f.eye_mouth for f in faces]))
        log.warning("no face matches %s (best similarity %.2f, needed %.2f); using the "
                    "largest face", person, max(own), threshold)
        matches[chosen] = Match(person, own[chosen], "requested-unmatched")
    return matches
