"""Album adaptation (``facefix adapt``): fast restorers fine-tuned on one album's own faces.

Collect the album's faces, make pseudo-targets with the diffusion prior,
fine-tune the fast restorer on them, save it as an adapted restorer (its store
and layout: :mod:`facefix.profiles.adapted`).

Pseudo-targets are regenerable, so they live in the cache,
``paths.cache_dir()/"adapt"/"pseudo_targets"``, named by content hash.

The store is :mod:`facefix.profiles.adapted`; ``facefix restore --restorer NAME``
uses :class:`facefix.providers.adapted.AdaptedRestorers`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facefix.common import paths
from facefix.errors import FacefixError, ModelError, UsageError
from facefix.faces.types import Face
from facefix.profiles import GenericStore, ProfileStore, validate_name
from facefix.profiles.adapted import AdaptedStore

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- the album


@dataclass(frozen=True, eq=False)
class AlbumFace:
    """One face of the album: where it is, whose it is, the detection (landmarks, size, embedding), the
    photo's JPEG quality (None: not a JPEG), its aligned crop (uint8 512x512)."""

    source: Path
    index: int
    person: str | None
    face: Face = field(repr=False)
    jpeg_quality: int | None
    crop: np.ndarray = field(repr=False)


def collect_album_faces(photos: Sequence[Path], analyzer, gallery, *, person: str = "auto", min_face: float = 16.0,
                        max_faces: int | None = None,
                        on_photo: Callable[[Path], None] | None = None) -> tuple[list[AlbumFace], list[tuple[Path, str]]]:
    """Detect, match and align the album's faces, as ``facefix restore`` does.

    Args:
        photos: the album's files.
        analyzer, gallery: face backend and enrolled people.
        person: ``auto`` keeps every face (each with its person or None);
            a name keeps only faces that match that person.
        min_face: skip faces under this eye-to-mouth distance (source pixels).
        max_faces: stop after this many faces.

    Returns:
        The faces, and ``(photo, reason)`` for photos that gave none.
    """
    from facefix.faces import estimate_alignment, warp_face
    from facefix.faces.align import CROP_SIZE
    from facefix.photos import read_photo
    from facefix.restore.matching import assign

    faces: list[AlbumFace] = []
    skipped: list[tuple[Path, str]] = []
    for path in photos:
        if max_faces is not None and len(faces) >= max_faces:
            break
        try:
            photo = read_photo(path)
            rgb8 = photo.rgb8()
            found = analyzer.detect(rgb8, embed=True)
        except (FacefixError, OSError) as exc:
            skipped.append((path, f"unreadable: {exc}"))
            continue
        finally:
            if on_photo:
                on_photo(path)
        matches = assign(found, gallery, person=person, threshold=analyzer.same_person_similarity)
        kept = 0
        for i, (face, match) in enumerate(zip(found, matches)):
            if face.eye_mouth < min_face:
                continue
            if person != "auto" and not (match.person == person and match.reason == "requested"):
                continue
            crop = warp_face(rgb8, estimate_alignment(face.landmarks, CROP_SIZE))
            faces.append(AlbumFace(path, i, match.person, face, photo.meta.jpeg_quality, np.ascontiguousarray(crop, dtype=np.uint8)))
            kept += 1
            if max_faces is not None and len(faces) >= max_faces:
                break
        if not kept:
            skipped.append((path, "no face found" if not found else
                            ("no face of " + person if person != "auto" else f"faces under --min-face {min_face:g}")))
    return faces, skipped


def people_among(faces: Sequence[AlbumFace], gallery, line: float) -> set[str]:
    """The enrolled people these faces may show: each face's matched person, and anyone whose score for a
    face reaches ``line`` (looser than matching's, so a record of whose faces a model learned from errs
    towards naming too many: forgetting someone must not miss a face that matching left unassigned)."""
    found = {f.person for f in faces if f.person is not None}
    for f in faces:
        if f.face.embedding is not None:
            found |= {name for name, score in gallery.scores(f.face.embedding).items() if score >= line}
    return found


@dataclass
class AdaptCallbacks:
    """Progress hooks for :func:`adapt_album` (the CLI draws bars with them)."""

    on_stage: Callable[[str, int | None], None] | None = None  # (label, total units or None)
    on_photo: Callable[[Path], None] | None = None
    on_face: Callable[[int, bool], None] | None = None  # (index, reused from cache)
    on_diffusion_step: Callable[[], None] | None = None
    on_step: Callable[[Any], None] | None = None  # fine-tuning StepInfo


@dataclass(frozen=True)
class AdaptResult:
    """What :func:`adapt_album` did. ``name`` is None when nothing was saved."""

    name: str | None
    faces: int
    skipped: list[tuple[Path, str]]
    made: int
    reused: int
    missing: int
    interrupted: bool
    steps: int = 0
    seconds: float = 0.0
    loss_before: float | None = None
    loss_after: float | None = None
    started_from: str | None = None


def default_name(folder: Path, person: str) -> str:
    """The album's folder name, plus ``-<person>`` for a person's adaptation."""
    base = Path(folder).expanduser().resolve().name or "album"
    return base if person == "auto" else f"{base}-{person}"


def adapt_album(
    folder: Path,
    *,
    name: str,
    person: str = "auto",
    model_set=None,
    budget_s: float = 600.0,
    pseudo_config=None,
    finetune_config=None,
    resume: bool = False,
    max_faces: int | None = None,
    max_new: int | None = None,
    max_steps: int | None = None,
    min_face: float = 16.0,
    backend: str = "auto",
    device: str = "auto",
    store: ProfileStore | None = None,
    generic: GenericStore | None = None,
    adapted: AdaptedStore | None = None,
    callbacks: AdaptCallbacks | None = None,
) -> AdaptResult:
    """Collect an album's faces, make pseudo-targets with the diffusion prior, fine-tune, save.

    Args:
        folder: the album (searched recursively).
        name: the adapted restorer's name.
        person: ``auto`` (every face; start from the generic restorer) or an enrolled
            person (only their faces; start from their restorer).
        model_set: diffusion model set (name, directory or ModelSet); None: the default.
        budget_s: fine-tuning seconds (pseudo-target time depends on the faces, not on this).
        pseudo_config: :class:`facefix.training.pseudo_targets.PseudoTargetConfig`.
        finetune_config: :class:`facefix.training.finetune.FinetuneConfig`.
        resume: continue an interrupted fine-tune (pseudo-targets are always reused).
        max_faces: use at most this many faces.
        max_new: make at most this many new pseudo-targets in this run.
        max_steps: also stop fine-tuning after this many steps.

    Raises:
        ModelError: no diffusion weights (names the id and ``facefix models pull``), or no fast restorer.
    """
    import torch

    from facefix.common.devices import inference_dtype, resolve_device
    from facefix.enroll.select import scan_photos
    from facefix.faces import get_analyzer
    from facefix.modelsets.hub import locate
    from facefix.modelsets.parts import load_parts
    from facefix.modelsets.registry import ModelSet, resolve_model_set
    from facefix.providers.fast import FastRestorers
    from facefix.restore.matching import Gallery
    from facefix.training.finetune import (
        FinetuneConfig,
        evaluate_pairs,
        finetune_on_pairs,
    )
    from facefix.training.pseudo_targets import (
        PseudoTargetConfig,
        PseudoTargetSampler,
        generate_pseudo_targets,
    )

    cb = callbacks or AdaptCallbacks()
    name = validate_name(name)
    store = store or ProfileStore()
    generic = generic or GenericStore()
    adapted = adapted or AdaptedStore()
    pseudo_config = pseudo_config or PseudoTargetConfig()
    finetune_config = finetune_config or FinetuneConfig()
    device = resolve_device(device)
    # 1. everything that can be missing, before any slow work
    if person != "auto":
        store.load(person)
    model_set = model_set if isinstance(model_set, ModelSet) else resolve_model_set(model_set)
    try:
        model_paths = locate(model_set)
    except ModelError as exc:
        raise ModelError(f"facefix adapt needs the diffusion prior to make pseudo-targets. {exc}") from exc
    restorers = FastRestorers(store, generic, device=device)
    start = restorers.get(None if person == "auto" else person)
    from facefix.restorers.fast import FastRestorer

    if not isinstance(start, FastRestorer):
        # Without a trained model the provider hands out the weight-free classical restorer: nothing to fine-tune.
        raise ModelError(f"facefix adapt fine-tunes a trained fast restorer and there is none yet ({start.name} has "
                         "no weights); enroll someone first with 'facefix enroll NAME DIR'")
    photos = scan_photos(Path(folder))
    if not photos:
        raise UsageError(f"no photos (jpg, png, tif, webp, bmp) in {folder}")
    # 2. the album's faces, each with its fast restorer
    analyzer = get_analyzer(backend)
    gallery = Gallery.from_store(store, analyzer)
    if cb.on_stage:
        cb.on_stage("finding faces", len(photos))
    faces, skipped = collect_album_faces(photos, analyzer, gallery, person=person, min_face=min_face,
                                         max_faces=max_faces, on_photo=cb.on_photo)
    if not faces:
        who = "" if person == "auto" else f" of {person}"
        raise UsageError(f"no usable face{who} in {folder} ({len(skipped)} photos without one); "
                         "check --person and --min-face")
    crops = np.stack([f.crop for f in faces])
    precleaners = [restorers.get(f.person) for f in faces]
    # 3. pseudo-targets (cached per face; Ctrl-C keeps what is done)
    if device == "cpu":
        log.warning("no GPU: pseudo-targets run the diffusion model on the CPU (minutes per face at real size)")
    dtype = inference_dtype(device)
    parts = load_parts(model_paths, device=device, dtype=dtype)
    sampler = PseudoTargetSampler(parts, pseudo_config)
    if cb.on_stage:
        cb.on_stage("pseudo-targets", len(faces))
    made = generate_pseudo_targets(crops, precleaners, sampler, cache_dir=paths.pseudo_target_cache(), max_new=max_new,
                                   on_face=cb.on_face, on_step=cb.on_diffusion_step)
    del sampler, parts
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    base = AdaptResult(None, len(faces), skipped, made.made, made.reused, made.missing, made.interrupted)
    if made.interrupted or made.missing:
        return base
    targets = np.stack(made.targets)
    # 4. fine-tune the start restorer on the pairs, within the budget
    tensors, settings = start.state()
    from facefix.restorers.fast import FastConfig

    model_config = FastConfig.from_dict(settings["config"])
    loss_before = evaluate_pairs(tensors, model_config, crops, targets, finetune_config, device=device)
    if cb.on_stage:
        cb.on_stage("fine-tuning", None)
    result = finetune_on_pairs(crops, targets, init=tensors, model_config=model_config, budget_s=budget_s,
                               max_steps=max_steps, checkpoint_dir=adapted.work_dir(name), resume=resume,
                               on_step=cb.on_step, config=finetune_config, device=device)
    loss_after = evaluate_pairs(result.tensors, model_config, crops, targets, finetune_config, device=device)
    # 5. save, with how it was made
    adaptation = {
        "album": str(Path(folder).expanduser().resolve()),
        "person": None if person == "auto" else person,
        "faces": len(faces),
        "photos": len({f.source for f in faces}),
        "started_from": start.name,
        "prior": model_paths.provenance(),
        "pseudo_targets": pseudo_config.to_dict(),
        "loss_before": round(loss_before, 6),
        "loss_after": round(loss_after, 6),
    }
    # Whose photos it learned from: the album's (its faces matched against the people enrolled now), and
    # through its start, what that model learned from.
    from facefix.common.files import file_sha256
    from facefix.profiles.provenance import KEY as PROVENANCE
    from facefix.profiles.provenance import Provenance

    sources = sorted({f.source for f in faces})
    record = Provenance.of(people_among(faces, gallery, analyzer.outlier_similarity), photos=map(file_sha256, sources),
                           folders=[adaptation["album"]], matched=gallery.people)
    start_record = Provenance.from_settings(settings)
    record = None if start_record is None else record.fine_tuned_from(start_record, start.name)
    adapted.commit(name, result.tensors, {**result.settings, "name": name, "adaptation": adaptation,
                                          PROVENANCE: None if record is None else record.to_settings()})
    return AdaptResult(name, len(faces), skipped, made.made, made.reused, 0, result.interrupted, result.steps,
                       float(result.settings["training"]["seconds"]), loss_before, loss_after, start.name)

