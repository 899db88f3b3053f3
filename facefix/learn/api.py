"""``facefix learn DIR``, as a Python API: the generic restorer trained on a library's own sharpest faces.

    result = learn(Path("~/Pictures"), LearnOptions(budget_minutes=20))

Steps: read the library's photos as restore does and collect their faces (as
``facefix adapt`` does); keep the sharpest, at their true resolution, as clean
targets (:mod:`facefix.learn.library`), holding a few whole photos' faces out
for validation; measure how the other faces are degraded and draw training
degradations to match (:mod:`facefix.learn.degradation`); train the generic
fast restorer for the budget (going on from the current one when there is one;
resumable); store it as the generic restorer with whose photos it learned
from: the folder, the photos' content hashes, and the enrolled people whose
faces were among them (:mod:`facefix.profiles.provenance`). Nothing here prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facefix.errors import UsageError
from facefix.learn.degradation import MatchedDegradation
from facefix.learn.library import MAX_BLUR, MIN_FACE
from facefix.learn.validation import Score
from facefix.profiles import GenericStore, ProfileStore

#: The training scratch (resume checkpoint) of ``facefix learn``, in the generic model's store.
WORK_KIND = "learn"


@dataclass(frozen=True)
class LearnOptions:
    """How to learn (see ``facefix learn --help``).

    Attributes:
        budget_minutes: training time.
        resume: go on from the checkpoint of an interrupted run.
        min_face: smallest eye-to-mouth distance of a target face (source px).
        max_blur: largest blur width of a target face (template px).
        min_targets: fewer sharp faces than this: no model.
        max_faces: read at most this many faces (memory: 0.75 MB each).
        holdout: share of the target faces (whole photos) held out for validation.
        max_validation: at most this many validation faces.
        backend, device: face backend and torch device.
        model_config, train_config: network shape of a new model / training settings (None: the defaults);
            the degradation recipe and small-face share of ``train_config`` are replaced by the matched ones.
        max_steps: also stop after this many steps.
    """

    budget_minutes: float = 10.0
    resume: bool = False
    min_face: float = MIN_FACE
    max_blur: float = MAX_BLUR
    min_targets: int = 20
    max_faces: int = 1000
    holdout: float = 0.1
    max_validation: int = 16
    backend: str = "auto"
    device: str = "auto"
    model_config: Any = None
    train_config: Any = None
    max_steps: int | None = None


@dataclass
class LearnCallbacks:
    """Progress hooks: photos read ``(done, total)``, a stage starting ``(label, seconds or None)``, training steps."""

    on_scan: Callable[[int, int], None] | None = None
    on_stage: Callable[[str, float | None], None] | None = None
    on_step: Callable[[Any], None] | None = None


@dataclass(frozen=True)
class LearnResult:
    """What :func:`learn` did.

    Attributes:
        photos, faces: photos read and faces found.
        targets, validation: faces trained on and held out (whole photos).
        rejected: reason -> faces that were not clean targets.
        unread: ``(photo, reason)`` for photos that gave no face.
        degradation: the training degradations and what they were matched to.
        people: enrolled people whose faces may be among the targets.
        started_from: the restorer it went on from ("classical/generic": from scratch).
        degraded, before, after: validation scores of the degraded input, the restorer before, the learned one
            (None without validation faces).
        steps, seconds, interrupted: the training.
    """

    folder: Path
    photos: int
    faces: int
    targets: int
    validation: int
    rejected: dict[str, int]
    unread: list[tuple[Path, str]]
    degradation: MatchedDegradation
    people: tuple[str, ...]
    started_from: str
    degraded: Score | None
    before: Score | None
    after: Score | None
    steps: int
    seconds: float
    interrupted: bool
    settings: dict = field(repr=False, default_factory=dict)


def learn(folder: Path, options: LearnOptions | None = None, callbacks: LearnCallbacks | None = None, *,
          store: ProfileStore | None = None, generic: GenericStore | None = None) -> LearnResult:
    """Train the generic restorer on ``folder``'s sharpest faces and store it, with whose photos it learned from.

    Raises:
        UsageError: no photos, or fewer than ``options.min_targets`` sharp faces (then nothing is stored).
    """
    from dataclasses import replace

    from facefix.adapt.album import collect_album_faces, people_among
    from facefix.common.devices import resolve_device
    from facefix.common.files import file_sha256
    from facefix.enroll.select import scan_photos
    from facefix.faces import get_analyzer
    from facefix.learn.degradation import match_degradation
    from facefix.learn.library import judge_faces, split_by_photo
    from facefix.learn.validation import degraded_pairs, score
    from facefix.profiles.kinds import FAST_KIND
    from facefix.profiles.provenance import KEY as PROVENANCE
    from facefix.profiles.provenance import Provenance
    from facefix.providers.fast import FastRestorers
    from facefix.quality.degrade import get_recipe
    from facefix.restore.matching import Gallery
    from facefix.restorers.fast import FastConfig, FastRestorer
    from facefix.training.fast import train_fast
    from facefix.training.loop import TrainConfig

    options = options or LearnOptions()
    cb = callbacks or LearnCallbacks()
    store = store if store is not None else ProfileStore()
    generic = generic if generic is not None else GenericStore()
    folder = Path(folder).expanduser().resolve()
    device = resolve_device(options.device)
    photos = scan_photos(folder)
    if not photos:
        raise UsageError(f"no photos (jpg, png, tif, webp, bmp) in {folder}")
    # 1. the library's faces, matched against the enrolled people, and which are clean targets
    analyzer = get_analyzer(options.backend)
    gallery = Gallery.from_store(store, analyzer)
    done = [0]

    def on_photo(_) -> None:
        done[0] += 1
        if cb.on_scan is not None:
            cb.on_scan(done[0], len(photos))

    faces, unread = collect_album_faces(photos, analyzer, gallery, min_face=16.0, max_faces=options.max_faces,
                                        on_photo=on_photo)
    judged = judge_faces(faces, min_face=options.min_face, max_blur=options.max_blur)
    if len(judged.targets) < options.min_targets:
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(judged.reasons().items())) or "none rejected"
        raise UsageError(f"only {len(judged.targets)} of the {len(faces)} faces in {folder} are sharp enough to learn "
                         f"from ({why}); facefix learn needs {options.min_targets}: add sharper, larger photos, "
                         "or lower --min-face / raise --max-blur")
    digests = {path: file_sha256(path) for path in {t.face.source for t in judged.targets}}
    train, held = split_by_photo(judged.targets, digests, options.holdout, options.max_validation)
    # 2. the degradation of the faces that are not targets
    base = options.train_config or TrainConfig()
    degraded = [s for s, _ in judged.rejected]
    sharp_blur = float(np.median([t.wide_blur for t in judged.targets]))
    matched = match_degradation(degraded, sharp_blur, [s.face.jpeg_quality for s in degraded],
                                default=get_recipe(base.recipe) if isinstance(base.recipe, str) else base.recipe,
                                default_enlarge=(base.enlarge_prob, base.enlarge_max))
    config = replace(base, recipe=matched.recipe, enlarge_prob=matched.enlarge_prob, enlarge_max=matched.enlarge_max)
    # 3. where it starts: the current generic model (going on from it), else a new network
    start = FastRestorers(store, generic, device=device).get(None)
    init, model_config, start_record = None, options.model_config or FastConfig(), Provenance()
    if isinstance(start, FastRestorer):
        init, start_settings = start.state()
        model_config = start.config
        start_record = Provenance.from_settings(start_settings)
    crops = np.stack([t.face.crop for t in train])
    clean = bad = None
    degraded_score = before = None
    if held:
        if cb.on_stage:
            cb.on_stage("validation (before)", None)
        clean, bad = degraded_pairs(np.stack([t.face.crop for t in held]), matched)
        degraded_score, before = score(bad, clean), score(start.restore(bad), clean)
    # 4. train for the budget
    if cb.on_stage:
        cb.on_stage("learning", options.budget_minutes * 60.0)
    result = train_fast(crops, init=init, budget_s=options.budget_minutes * 60.0, max_steps=options.max_steps, seed=0,
                        checkpoint_dir=generic.work_dir(WORK_KIND), resume=options.resume, on_step=cb.on_step,
                        config=config, model_config=model_config, device=device, lr=config.lr_scratch)
    after = None
    if held:
        if cb.on_stage:
            cb.on_stage("validation (after)", None)
        after = score(result.restorer(device=device).restore(bad), clean)
    # 5. store it as the generic restorer, with whose photos it learned from
    people = people_among([t.face for t in train], gallery, analyzer.outlier_similarity)
    record = Provenance.of(people, photos=[digests[t.face.source] for t in train], folders=[str(folder)],
                           matched=gallery.people)
    record = None if start_record is None else record.fine_tuned_from(start_record, "the previous generic model")
    library = {"folder": str(folder), "photos": len(photos), "faces": len(faces), "targets": len(train),
               "validation": len(held), "degradation": matched.to_dict(), "started_from": start.name,
               **({"validation_scores": {"degraded": degraded_score.to_dict(), "before": before.to_dict(),
                                         "after": after.to_dict()}} if held else {})}
    settings = {**result.settings, "name": "generic", "references_key": None, "references": 0,
                "people": [] if record is None else list(record.people), "library": library,
                PROVENANCE: None if record is None else record.to_settings()}
    generic.commit_artifact(FAST_KIND, result.tensors, settings)
    return LearnResult(folder, len(photos), len(faces), len(train), len(held), judged.reasons(), unread, matched,
                       tuple(sorted(people)), start.name, degraded_score, before, after, result.steps,
                       float(result.settings["training"]["seconds"]), result.interrupted, settings)

