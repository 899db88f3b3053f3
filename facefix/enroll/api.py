"""Enrolling a person, as a Python API: what ``facefix enroll`` (and the quickstart, the benchmarks) call.

    result = enroll("alice", Path("refs"), EnrollOptions(budget_minutes=10), EnrollCallbacks(on_note=print))

Steps: check the request (a missing diffusion model set fails before any slow
step), pick the person's face in each photo and store the aligned references,
train the fast restorer (the generic model first when the references changed),
then, with the diffusion engine, Dual-Pivot Tuning. Progress and decisions
reach the caller through :class:`EnrollCallbacks`; nothing here prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facefix.enroll.fast import train_person
from facefix.enroll.fusion import FUSION_SHARE, can_learn_fusion, train_person_fusion
from facefix.enroll.select import (
    FEW_REFERENCES,
    MIN_FACE,
    Selection,
    scan_photos,
    select_references,
)
from facefix.errors import ProfileError, UsageError
from facefix.profiles import GenericStore, ProfileStore, validate_name
from facefix.profiles.kinds import FAST_KIND
from facefix.providers.choose import ENGINES, choose_engine


@dataclass(frozen=True)
class EnrollOptions:
    """How to enroll (see ``facefix enroll --help``).

    Attributes:
        add: add the photos to an existing profile.
        budget_minutes: fast training time.
        resume: continue an interrupted training.
        min_face: smallest eye-to-mouth distance of a reference (px).
        train: False: only store the references.
        backend, device: face backend and torch device.
        engine: ``fast``, ``diffusion`` or ``auto`` (diffusion with a CUDA GPU and the model set on disk).
        model_set: diffusion model set (name or directory; None: the default).
        generic_faces: folder of aligned generic crops for diffusion stage 2.
        stage1_steps, stage2_steps, class_images, generic_count: Dual-Pivot settings (None: defaults).
        fusion: after the fast models, learn how the person's references fuse into their
            restored faces (:mod:`facefix.enroll.fusion`; a share of ``budget_minutes``).
    """

    add: bool = False
    budget_minutes: float = 10.0
    resume: bool = False
    min_face: float = MIN_FACE
    train: bool = True
    backend: str = "auto"
    device: str = "auto"
    engine: str = "auto"
    model_set: str | None = None
    generic_faces: Path | None = None
    stage1_steps: int | None = None
    stage2_steps: int | None = None
    class_images: int | None = None
    generic_count: int | None = None
    fusion: bool = True


@dataclass
class EnrollCallbacks:
    """What the caller hears while :func:`enroll` works (every field optional).

    Attributes:
        on_note: a decision worth telling (the engine fell back to fast).
        on_warning: something the user should fix (few references).
        on_info: plain progress news (nothing new to add; going on with the tuning).
        on_scan: ``(done, total)`` photos read.
        on_references: the selection (accepted and rejected photos) and the profile's reference count,
            once the references are stored.
        on_stage, on_step: fast training (see :func:`facefix.enroll.fast.train_person`).
        on_fusion: the reference fusion's progress (share done in [0, 1], what it is doing).
        on_tune: diffusion tuning progress (:class:`facefix.training.diffusion_loop.TrainProgress`
            or a painting progress).
    """

    on_note: Callable[[str], None] | None = None
    on_warning: Callable[[str], None] | None = None
    on_info: Callable[[str], None] | None = None
    on_scan: Callable[[int, int], None] | None = None
    on_references: Callable[[Selection, int], None] | None = None
    on_stage: Callable[[str, float], None] | None = None
    on_step: Callable[[Any], None] | None = None
    on_tune: Callable[[Any], None] | None = None
    on_fusion: Callable[[float, str], None] | None = None

    def note(self, text: str) -> None:
        if self.on_note is not None:
            self.on_note(text)

    def warn(self, text: str) -> None:
        if self.on_warning is not None:
            self.on_warning(text)

    def info(self, text: str) -> None:
        if self.on_info is not None:
            self.on_info(text)


@dataclass
class EnrollResult:
    """What :func:`enroll` did.

    Attributes:
        name: the person.
        added: references added by this call.
        references: references in the profile now.
        training: the fast training stages' results (empty when nothing was trained).
        tuning: the diffusion tuning's result, or None.
        interrupted: training or tuning stopped early (Ctrl-C); a rerun with ``resume`` continues.
    """

    name: str
    added: int = 0
    references: int = 0
    training: list = field(default_factory=list)
    tuning: Any = None
    interrupted: bool = False


def plan_diffusion(options: EnrollOptions, callbacks: EnrollCallbacks):
    """``(ModelSet, DualPivotConfig)`` when diffusion tuning will run, else None (noting why for ``auto``)."""
    from facefix.enroll.diffusion import dual_pivot_config
    from facefix.modelsets.hub import locate
    from facefix.modelsets.registry import resolve_model_set

    concrete, why = choose_engine(options.engine, options.model_set, device=options.device)
    if why:
        callbacks.note(f"{why}; training the fast restorer only")
    if concrete != "diffusion":
        return None
    chosen = resolve_model_set(options.model_set)
    locate(chosen)  # ModelError naming the id, where it looked and `facefix models pull ...`
    try:
        config = dual_pivot_config(stage1_steps=options.stage1_steps, stage2_steps=options.stage2_steps,
                                   class_images=options.class_images, generic_faces=options.generic_count)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return chosen, config


def fast_is_done(store: ProfileStore, name: str) -> bool:
    """The person's fast restorer is trained and was not interrupted."""
    art = store.load(name).artifacts.get(FAST_KIND)
    return art is not None and not art.settings.get("training", {}).get("interrupted", False)


def add_references(name: str, folder: Path, store: ProfileStore, options: EnrollOptions,
                   callbacks: EnrollCallbacks, *, exists: bool) -> tuple[int, int]:
    """Select the person's face in each photo of ``folder`` and store the new references.

    Returns:
        ``(added, total)``; ``added == 0`` when every usable photo was already in the profile.

    Raises:
        UsageError: no photos in the folder.
        ProfileError: no usable photo of the person.
    """
    from facefix.faces import get_analyzer

    photos = scan_photos(folder)
    if not photos:
        raise UsageError(f"no photos (jpg, png, tif, webp, bmp) in {folder}")
    analyzer = get_analyzer(options.backend)
    known, hashes = None, []
    if exists:
        profile = store.load(name)
        hashes = [r.sha256 for r in profile.references]
        if analyzer.name in profile.backends:
            known = profile.embeddings(analyzer.name)
    done = [0]

    def on_photo(_) -> None:
        done[0] += 1
        if callbacks.on_scan is not None:
            callbacks.on_scan(done[0], len(photos))

    selection = select_references(photos, analyzer, known=known, known_hashes=hashes, min_face=options.min_face,
                                  on_photo=on_photo)
    if not selection.accepted and exists and any(r.reason.startswith("duplicate") for r in selection.rejected):
        if callbacks.on_references is not None:
            callbacks.on_references(selection, len(hashes))
        callbacks.info(f"no new references: the photos in {folder} are already in {name}'s profile or rejected above")
        return 0, len(hashes)
    if not selection.accepted:
        if callbacks.on_references is not None:
            callbacks.on_references(selection, len(hashes))
        raise ProfileError(f"no usable photo of {name} in {folder} ({len(selection.rejected)} rejected, "
                           "reasons above); add clear, single-person photos and try again")
    with store.edit(name, create=True) as editor:
        for cand in selection.accepted:
            editor.add_reference(cand.crop, source=cand.path.resolve(), sha256=cand.sha256,
                                 embeddings={analyzer.name: cand.face.embedding}, box=cand.face.box,
                                 info={"sharpness": round(cand.sharpness, 1), "eye_mouth": round(cand.face.eye_mouth, 1)})
        total = len(editor.references)
    if callbacks.on_references is not None:
        callbacks.on_references(selection, total)
    if total < FEW_REFERENCES:
        callbacks.warn(f"{name} has only {total} reference(s); {FEW_REFERENCES} or more different photos "
                       "restore them more faithfully")
    return len(selection.accepted), total


def enroll(name: str, folder: Path | None, options: EnrollOptions | None = None,
           callbacks: EnrollCallbacks | None = None, *, store: ProfileStore | None = None,
           generic: GenericStore | None = None) -> EnrollResult:
    """Enroll ``name`` from the photos in ``folder`` (None: ``options.resume`` an enrolled person's training).

    Raises:
        UsageError: a bad name or engine, no folder without ``resume``, an enrolled name without ``add``/``resume``.
        ModelError: the diffusion engine was asked for and its model set is not on disk.
        ProfileError: no usable photo.
    """
    options = options or EnrollOptions()
    callbacks = callbacks or EnrollCallbacks()
    name = validate_name(name)
    if options.engine not in ENGINES:
        raise UsageError(f"unknown engine {options.engine!r}; use one of {', '.join(ENGINES)}")
    store = store if store is not None else ProfileStore()
    generic = generic if generic is not None else GenericStore()
    exists = store.exists(name)
    if folder is None and not (options.resume and exists):
        raise UsageError("give the folder of photos (FOLDER), or --resume to continue training an enrolled person")
    if folder is not None and exists and not options.add and not options.resume:
        raise UsageError(f"{name!r} is already enrolled; use --add to add photos, or "
                         f"'facefix profiles rm {name}' to start over")
    result = EnrollResult(name=name)
    # Decide (and find the weights) before any slow step, so a missing model set fails at once.
    tuning = plan_diffusion(options, callbacks) if options.train else None
    if folder is not None:
        result.added, result.references = add_references(name, folder, store, options, callbacks, exists=exists)
        if not result.added and not options.resume:
            return result  # nothing new: the profile and its restorer are as they were
    if not options.train:
        return result
    if tuning is not None and options.resume and folder is None and fast_is_done(store, name):
        callbacks.info(f"{name}'s fast restorer is trained; going on with the diffusion tuning")
    else:
        budget_s = options.budget_minutes * 60.0
        fusion = options.fusion and can_learn_fusion(store.load_crops(store.load(name)))
        result.training = train_person(name, store=store, generic=generic,
                                       budget_s=budget_s * (1 - FUSION_SHARE) if fusion else budget_s,
                                       resume=options.resume, device=options.device, on_stage=callbacks.on_stage,
                                       on_step=callbacks.on_step)
        if any(r.interrupted for r in result.training):
            result.interrupted = True
            return result
        if fusion:
            if callbacks.on_stage:
                callbacks.on_stage("reference fusion", budget_s * FUSION_SHARE)
            stage = train_person_fusion(name, store=store, generic=generic, budget_s=budget_s * FUSION_SHARE,
                                        device=options.device, on_progress=callbacks.on_fusion)
            if stage is not None:
                result.training.append(stage)
    if tuning is not None:
        from facefix.enroll.diffusion import tune_person

        model_set, config = tuning
        result.tuning = tune_person(name, store=store, generic=generic, model_set=model_set, device=options.device,
                                    resume=options.resume, on_progress=callbacks.on_tune, config=config,
                                    generic_folder=options.generic_faces, backend=options.backend)
        result.interrupted = result.tuning.interrupted
    return result
