"""Personalize the diffusion restorer for one enrolled person: Dual-Pivot stage 1 + 2, stored.

What ``facefix enroll NAME DIR --engine diffusion`` runs after the fast
training (the fast model is stage 2's and the restorer's pre-cleaner, so it
must exist first):

1. locate and load the model set (fp16 on CUDA, fp32 elsewhere);
2. the person's aligned references from the profile store;
3. generic faces for stage 2: other enrolled people's references, an optional
   folder of aligned crops, topped up with portraits painted once by the base
   model and aligned like every reference;
4. :func:`facefix.training.dual_pivot.run_dual_pivot` (which paints stage 1's
   class images from its class prompt, cached apart) with the fast restorer's
   degradation model and pre-cleaner, checkpointing into
   ``store.work_dir(name, "diffusion/<set key>")``;
5. both artifacts committed together (one manifest update), the work
   directory cleared.

Ctrl-C keeps the last checkpoint of the stage that was running; the same
call with ``resume=True`` goes on from it (and ends with exactly the tensors
of an uninterrupted run, since every random draw comes from ``(seed, step)``).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from facefix.common.devices import inference_dtype, resolve_device
from facefix.errors import ProfileError
from facefix.profiles import GenericStore, ProfileStore
from facefix.profiles.kinds import FAST_KIND
from facefix.profiles.provenance import KEY as PROVENANCE
from facefix.profiles.provenance import Provenance
from facefix.providers.fast import FastRestorers
from facefix.restorers.fast import FastRestorer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneResult:
    """What a personalization produced.

    Args:
        model_set: the model set's name.
        kinds: the artifact kinds committed (empty when interrupted).
        bytes: total size of the committed artifact files.
        stage1_steps, stage2_steps: optimizer steps done in all (resumed ones included).
        stage1_loss, stage2_loss: mean loss of the last steps, or None.
        seconds: wall time of this call.
        interrupted: Ctrl-C stopped it; checkpoints are kept for ``resume``.
    """

    model_set: str
    kinds: tuple[str, ...]
    bytes: int
    stage1_steps: int
    stage2_steps: int
    stage1_loss: float | None
    stage2_loss: float | None
    seconds: float
    interrupted: bool


def dual_pivot_config(
    base=None,
    *,
    stage1_steps: int | None = None,
    stage2_steps: int | None = None,
    class_images: int | None = None,
    generic_faces: int | None = None,
):
    """A :class:`~facefix.training.dual_pivot.DualPivotConfig` with some counts replaced.

    The counts are real knobs (recorded in the artifacts' settings), exposed
    as hidden ``facefix enroll`` options for tests and experiments; see
    docs/diffusion.md.
    """
    from facefix.training.dual_pivot import DualPivotConfig

    config = base or DualPivotConfig()
    if stage1_steps is not None:
        config = replace(config, stage1=replace(config.stage1, steps=stage1_steps))
    if stage2_steps is not None:
        config = replace(config, stage2=replace(config.stage2, steps=stage2_steps))
    if class_images is not None:
        config = replace(config, class_images=class_images)
    if generic_faces is not None:
        config = replace(config, generic_faces=generic_faces)
    for label, value in (("stage 1 steps", config.stage1.steps), ("stage 2 steps", config.stage2.steps)):
        if value < 1:
            raise ValueError(f"{label} must be at least 1, got {value}")
    return config


def other_people_pool(store: ProfileStore, name: str, limit: int, seed: int = 0) -> list[tuple[str, int]]:
    """Which references :func:`other_people_faces` takes: ``(person, index)``, a seeded subset of at most ``limit``."""
    pool: list[tuple[str, int]] = []
    for other in store.names():
        if other != name:
            pool += [(other, i) for i in range(len(store.load(other).references))]
    if not pool or limit <= 0:
        return []
    if len(pool) > limit:
        rng = np.random.default_rng(seed)
        pool = [pool[i] for i in sorted(rng.choice(len(pool), limit, replace=False))]
    return pool


def other_people_faces(store: ProfileStore, name: str, limit: int, seed: int = 0) -> np.ndarray:
    """Up to ``limit`` aligned references of everyone enrolled except ``name``, float32 [0, 1].

    A random (seeded, so resumable) subset when there are more, spread over
    all people rather than the first few.
    """
    pool = other_people_pool(store, name, limit, seed)
    if not pool:
        return np.zeros((0, 512, 512, 3), np.float32)
    profiles = {other: store.load(other) for other in dict.fromkeys(p for p, _ in pool)}
    out = []
    for other in dict.fromkeys(p for p, _ in pool):
        crops = store.load_crops(profiles[other])
        out += [crops[i] for p, i in pool if p == other]
    return np.stack(out).astype(np.float32) / 255.0


def face_aligner(backend: str = "auto") -> Callable[[np.ndarray], np.ndarray | None] | None:
    """Detect the largest face of a painted portrait and align it to the 512 template (None: no face).

    Returns None (portraits then used as painted, with a warning) when no
    face backend can be loaded.
    """
    from facefix.errors import FaceError
    from facefix.faces import estimate_alignment, get_analyzer, warp_face

    try:
        analyzer = get_analyzer(backend)
    except FaceError as exc:
        log.warning("painted generic faces are used unaligned: no face backend (%s)", exc)
        return None

    def align(image: np.ndarray) -> np.ndarray | None:
        image8 = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
        try:
            faces = analyzer.detect(image8, embed=False)
            if not faces:
                return None
            crop = warp_face(image8, estimate_alignment(faces[0].landmarks))
        except FaceError:
            return None
        return crop.astype(np.float32) / 255.0

    return align


def _degrade(face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # The fast restorer's training degradation, default recipe (GFPGAN/DiffBIR faces).
    from facefix.quality.degrade import degrade

    return degrade(face, rng)


def tune_person(
    name: str,
    *,
    store: ProfileStore,
    generic: GenericStore,
    model_set=None,
    device: str = "auto",
    resume: bool = False,
    on_progress: Callable[[object], None] | None = None,
    config=None,
    generic_folder: Path | None = None,
    backend: str = "auto",
) -> TuneResult:
    """Run Dual-Pivot Tuning for an enrolled person and store both adapters in their profile.

    Args:
        name: an enrolled person whose fast restorer is trained.
        store, generic: the profile store and the generic fast model.
        model_set: registered name, local model-set directory, ModelSet or
            None (``FACEFIX_MODEL_SET``, else the default).
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ...
        resume: go on from the checkpoints of an interrupted run; otherwise
            they are deleted and the run starts over.
        on_progress: one callback for the whole run, given
            :class:`~facefix.training.diffusion_loop.TrainProgress` (stage 1 / 2) and
            :class:`~facefix.training.dual_pivot.GenerationProgress` (painting).
        config: a :class:`~facefix.training.dual_pivot.DualPivotConfig`
            (see :func:`dual_pivot_config`); None: the defaults.
        generic_folder: a folder of aligned generic face crops to add to stage 2's faces.
        backend: face backend used to align painted portraits.

    Returns:
        A :class:`TuneResult`; ``interrupted`` when Ctrl-C stopped it.

    Raises:
        ModelError: the model set's weights are not on disk.
        ProfileError: no such person, no references, or no fast restorer yet.
    """

    from facefix.modelsets.hub import locate
    from facefix.modelsets.parts import load_parts
    from facefix.modelsets.registry import ModelSet, resolve_model_set
    from facefix.training.dual_pivot import (
        DualPivotConfig,
        guide_kind,
        run_dual_pivot,
        unet_lora_kind,
    )
    from facefix.training.generic_faces import load_face_folder

    started = time.monotonic()
    config = config or DualPivotConfig()
    model_set = model_set if isinstance(model_set, ModelSet) else resolve_model_set(model_set)
    paths = locate(model_set)  # ModelError (id, where, pull command) before any work

    # 1. The person: references and the fast pre-cleaner (trained first by enroll).
    profile = store.load(name)
    if not profile.references:
        raise ProfileError(f"{name!r} has no references; add photos with 'facefix enroll {name} DIR --add'")
    if FAST_KIND not in profile.artifacts:
        raise ProfileError(
            f"{name!r} has no fast restorer yet, and the diffusion engine uses it as its pre-cleaner; "
            f"train it first with 'facefix enroll {name} --resume --engine fast'"
        )
    device = resolve_device(device)
    if not device.startswith("cuda"):
        log.warning("tuning the diffusion restorer on %s: expect hours at real size; a CUDA GPU takes minutes", device)
    # Stage 2 conditions its guide on *other* people's faces pre-cleaned; the
    # person's own restorer would pull those strangers toward the person, so
    # the generic fast restorer makes the conditions, as the official code
    # pre-cleans with one generic stage for training and inference alike.
    precleaner = FastRestorers(store, generic, device=device).get(None)
    references = store.load_crops(profile).astype(np.float32) / 255.0

    # 2. Generic faces for stage 2: other people, a folder, then painted ones (inside run_dual_pivot).
    pools = [other_people_faces(store, name, config.generic_faces)]
    if generic_folder is not None:
        pools.append(load_face_folder(Path(generic_folder), size=references.shape[1], limit=config.generic_faces))
    generic_faces = np.concatenate(pools)[: config.generic_faces] if sum(map(len, pools)) else None
    have = 0 if generic_faces is None else len(generic_faces)
    align = face_aligner(backend) if have < config.generic_faces else None

    # 3. The model set, and where checkpoints go.
    dtype = inference_dtype(device)
    log.info("loading diffusion model set %s on %s (%s)", model_set.name, device, dtype)
    parts = load_parts(paths, device=device, dtype=dtype)
    work = store.work_dir(name, f"diffusion/{model_set.key}")
    if not resume and any(work.iterdir()):
        log.info("starting %s's diffusion tuning over (use --resume to continue the last run)", name)
        shutil.rmtree(work)
        work = store.work_dir(name, f"diffusion/{model_set.key}")

    # 4. Both stages.
    try:
        artifacts = run_dual_pivot(
            parts, references, degrade=_degrade, precleaner=precleaner, generic_faces=generic_faces,
            config=config, work_dir=work, align=align, progress=on_progress,
        )  # fmt: skip
    except KeyboardInterrupt:
        steps = _checkpoint_steps(work)
        log.info("interrupted: checkpoints kept in %s", work)
        return TuneResult(model_set.name, (), 0, steps.get("stage1", 0), steps.get("stage2", 0), None, None,
                          time.monotonic() - started, True)

    # 5. Commit both adapters at once: a profile never has a guide without its UNet LoRA. Each records whose
    # photos it learned from: stage 1 the person's; stage 2 also the other people whose references were its
    # generic faces, the generic folder's unknown faces and, through its pre-cleaner, the generic fast model's.
    stage1_record = Provenance.of([name])
    seen = {p for p, _ in other_people_pool(store, name, config.generic_faces)}
    stage2_record = Provenance.of([name, *seen], folders=[] if generic_folder is None else [str(Path(generic_folder).resolve())],
                                  matched=() if generic_folder is None else None)
    # A weight-free (classical) pre-cleaner learned from nobody.
    start = Provenance.from_settings(precleaner.settings) if isinstance(precleaner, FastRestorer) else Provenance()
    stage2_record = None if start is None else stage2_record.fine_tuned_from(start, "the generic fast model (its pre-cleaner)")
    records = {unet_lora_kind(model_set.key): stage1_record.to_settings(),
               guide_kind(model_set.key): None if stage2_record is None else stage2_record.to_settings()}
    artifacts = {kind: (tensors, {**settings, PROVENANCE: records[kind]}) for kind, (tensors, settings) in artifacts.items()}
    with store.edit(name, create=False) as editor:
        saved = [editor.save_artifact(kind, tensors, settings) for kind, (tensors, settings) in artifacts.items()]
    size = sum((profile.path / art.file).stat().st_size for art in saved)
    shutil.rmtree(work, ignore_errors=True)
    s1 = artifacts[unet_lora_kind(model_set.key)][1]
    s2 = artifacts[guide_kind(model_set.key)][1]
    return TuneResult(model_set.name, tuple(artifacts), size, s1["steps_done"], s2["steps_done"], s1["final_loss"],
                      s2["final_loss"], time.monotonic() - started, False)


def _checkpoint_steps(work: Path) -> dict[str, int]:
    """Step of each stage's last checkpoint in ``work`` (for the interrupted message)."""
    import json

    from safetensors import safe_open

    from facefix.training.diffusion_loop import CHECKPOINT

    steps = {}
    for stage in ("stage1", "stage2"):
        path = work / stage / CHECKPOINT
        if path.is_file():
            try:
                with safe_open(str(path), framework="pt") as fh:
                    steps[stage] = int(json.loads(fh.metadata()["facefix"])["step"])
            except Exception:  # a damaged checkpoint is reported by the next run
                pass
    return steps
