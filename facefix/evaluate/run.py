"""``facefix eval``: does a person's restorer beat the generic one on their own photos?

Holds out some of the person's references, trains a generic model and the
person's model on everything else (so nothing held out is seen in training),
degrades the held-out faces at two fixed levels with fixed seeds, restores
them with every restorer, and scores each against the original: PSNR, SSIM,
identity similarity (cosine of the face backend's embeddings), sharpness against
the original's and the expression error of eyes and mouth
(:mod:`facefix.quality.metrics`). The profile on disk is not changed.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from facefix.common.devices import resolve_device
from facefix.enroll.fast import GENERIC_SHARE_NEW
from facefix.enroll.fusion import FUSION_SHARE, can_learn_fusion
from facefix.errors import UsageError
from facefix.faces import FaceAnalyzer
from facefix.faces.landmarks import aligned_landmarks68
from facefix.profiles import ProfileStore
from facefix.quality.degrade import LEVELS, degrade_level, resize_like_alignment
from facefix.quality.metrics import expression_error, psnr, sharpness_ratio, ssim
from facefix.quality.same_photo import photo_groups
from facefix.restorers.guides import GuideSet
from facefix.restorers.reference import LEARNED_FROM, ReferenceRestorer

log = logging.getLogger(__name__)

#: The method every report scores first: the degraded input itself, restored by nothing.
#: The restorers follow in the order of the ``restorers`` they were given, so the set
#: of methods is whatever was trained or passed in (generic, person, person+refs, ...).
BASELINE = "degraded"


@dataclass(frozen=True)
class EvalRow:
    """Mean scores of one method at one degradation level."""

    level: str
    method: str
    psnr: float
    ssim: float
    identity: float  # mean cosine similarity to the original's embedding
    distance: float  # mean Euclidean distance of the unit embeddings (dlib's scale)
    sharpness: float  # mean detail energy over the original's (1 = as sharp), metrics.sharpness_ratio
    expression: float  # mean eyes/mouth structure not the original's (lower = truer), metrics.expression_error
    faces: int
    face_size: int = 512  # side of the faces scored, px


@dataclass(frozen=True, eq=False)
class EvalReport:
    person: str
    backend: str
    held_out: tuple[str, ...]
    train_references: int
    other_references: int
    steps: dict
    rows: tuple[EvalRow, ...]
    sheet: np.ndarray
    face_sizes: tuple[int, ...] = (512,)

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods scored, in report order (:data:`BASELINE` first)."""
        return tuple(dict.fromkeys(r.method for r in self.rows))

    def to_dict(self) -> dict:
        return {
            "person": self.person, "backend": self.backend, "held_out": list(self.held_out),
            "train_references": self.train_references, "other_references": self.other_references,
            "steps": self.steps, "face_sizes": list(self.face_sizes), "methods": list(self.methods),
            "rows": [asdict(r) for r in self.rows],
        }

    def sheet_u8(self) -> np.ndarray:
        """The contact sheet as uint8 RGB, ready to write."""
        return _to8(self.sheet)

    def row(self, level: str, method: str, face_size: int | None = None) -> EvalRow:
        size = face_size or self.face_sizes[0]
        return next(r for r in self.rows if r.level == level and r.method == method and r.face_size == size)


def _to8(x: np.ndarray) -> np.ndarray:
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _resize(faces: np.ndarray, size: int) -> np.ndarray:
    """Faces (N, H, W, 3) float to ``size`` px, as :func:`facefix.quality.degrade.resize_like_alignment`."""
    if faces.shape[1] == size:
        return faces
    return np.stack([resize_like_alignment(f, size, size) for f in faces])


def _scores(level: str, method: str, out: np.ndarray, clean: np.ndarray, clean_emb: np.ndarray,
            clean_points: np.ndarray, analyzer: FaceAnalyzer, template: int, size: int) -> EvalRow:
    emb = analyzer.embed_aligned(_to8(_resize(out, template)))
    cos = np.sum(emb * clean_emb, axis=1)
    dist = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * cos))
    return EvalRow(level=level, method=method, psnr=float(np.mean([psnr(o, c) for o, c in zip(out, clean)])),
                   ssim=float(np.mean([ssim(o, c) for o, c in zip(out, clean)])),
                   identity=float(cos.mean()), distance=float(dist.mean()),
                   sharpness=sharpness_ratio(out, clean, clean_points),
                   expression=expression_error(out, clean, clean_points), faces=len(out), face_size=size)


#: Boxes of the contact sheet's zoomed crops in 512-template pixels (left, top, right,
#: bottom): half the crop's width, so shown at the tile's width they are twice the
#: tile's scale -- lashes, irises and teeth become visible.
ZOOM_BOXES_512 = {"eyes": (128, 188, 384, 288), "mouth": (128, 316, 384, 436)}
#: White rows above each zoomed strip: without them the strips read as one odd face.
ZOOM_GAP = 2


def _fit(img: np.ndarray, width: int, height: int) -> np.ndarray:
    interp = cv2.INTER_AREA if width < img.shape[1] else cv2.INTER_CUBIC
    return np.clip(cv2.resize(np.ascontiguousarray(img, np.float32), (width, height), interpolation=interp), 0, 1)


def contact_sheet(columns: Sequence[np.ndarray], labels: Sequence[str], tile: int = 192, *,
                  zoom: bool = True) -> np.ndarray:
    """Grid of aligned faces: one row per face, one column per method, with zoomed eyes and mouth.

    Args:
        columns: one (N, S, S, 3) float array in [0, 1] per column (the original, the
            degraded input, each method...), aligned to the template at any size S
            (the same N everywhere).
        labels: one header per column.
        tile: side of each face's tile in pixels.
        zoom: under each tile, the eyes and the mouth (:data:`ZOOM_BOXES_512`) at twice
            the tile's scale, each below a :data:`ZOOM_GAP`-px white line.

    Returns:
        float32 (H, W, 3) sheet in [0, 1], a 24-px header of labels on top.
    """
    if len(columns) != len(labels) or not columns:
        raise UsageError(f"a contact sheet needs one label per column; got {len(columns)} columns, "
                         f"{len(labels)} labels")
    if len({len(c) for c in columns}) != 1:
        raise UsageError(f"contact sheet columns hold different numbers of faces: {[len(c) for c in columns]}")
    rows = []
    for i in range(len(columns[0])):
        cells = []
        for col in columns:
            face = col[i]
            parts = [_fit(face, tile, tile)]
            if zoom:
                k = face.shape[0] / 512.0
                for left, top, right, bottom in ZOOM_BOXES_512.values():
                    box = face[round(top * k):round(bottom * k), round(left * k):round(right * k)]
                    parts.append(np.ones((ZOOM_GAP, tile, 3), np.float32))
                    parts.append(_fit(box, tile, round(tile * (bottom - top) / (right - left))))
            cells.append(np.concatenate(parts, axis=0))
        rows.append(np.concatenate(cells, axis=1))
    sheet = np.concatenate(rows, axis=0)
    header = np.full((24, sheet.shape[1], 3), 255, np.uint8)
    for j, label in enumerate(labels):
        cv2.putText(header, label, (j * tile + 6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([header.astype(np.float32) / 255.0, sheet], axis=0)


def evaluate_person(
    name: str,
    *,
    store: ProfileStore,
    analyzer: FaceAnalyzer,
    holdout: int = 3,
    budget_s: float = 600.0,
    seed: int = 0,
    device: str = "auto",
    on_stage: Callable[[str, float], None] | None = None,
    on_step: Callable[[object], None] | None = None,
    max_steps: int | None = None,
    model_config=None,
    train_config=None,
    trained: dict | None = None,
    face_sizes: Sequence[int] | None = None,
    generic_share: float | None = None,
    references: bool = True,
    fusion: bool = True,
) -> EvalReport:
    """Hold out ``holdout`` references of ``name``, train without them, and score.

    Args:
        name: an enrolled person.
        store: the profiles (read only).
        analyzer: face backend whose embeddings measure identity.
        holdout: how many references to hold out (at least one must remain).
        budget_s: training seconds for the generic and the person's model together.
        seed: picks the held-out references and seeds the degradations.
        device: torch device for training and restoring.
        on_stage, on_step: progress callbacks (see :func:`facefix.enroll.fast.train_person`).
        max_steps, model_config, train_config: training overrides (tests, experiments).
        trained: ``{"generic": Restorer, "person": Restorer, "steps": {...}}`` already
            trained on :func:`eval_training_sets` (e.g. on another machine): scored
            instead of training. Every key but ``"steps"`` is a method, scored and
            shown in this order (e.g. add ``"person+refs"``).
        face_sizes: sides in pixels of the faces as photos hold them, each scored
            (``None``: the 512 template). Smaller faces are made from the originals
            by area averaging, degraded at that size, enlarged into the template (as
            restore does), restored, brought back and scored at that size. The
            contact sheet shows the first size.
        references: also score ``person+refs``: the person's model followed by their kept
            references (:class:`facefix.restorers.reference.ReferenceRestorer`), as
            restore does. Ignored with ``trained`` (pass it there).
        fusion: with ``references``, also learn the reference fusion on the person's model
            (:data:`facefix.enroll.fusion.FUSION_SHARE` of ``budget_s``, as enroll does) and
            use it for faces blurred past :data:`facefix.restorers.reference.LEARNED_FROM`.
        generic_share: share of ``budget_s`` (less the fusion's) for the generic model (default: enroll's
            share for a first enrolment, :data:`facefix.enroll.fast.GENERIC_SHARE_NEW`).
    """
    from facefix.training.fast import train_fast

    device = resolve_device(device)
    profile = store.load(name)
    sets = eval_training_sets(name, store=store, holdout=holdout, seed=seed)
    crops, test_idx, train_idx = sets["crops"], sets["test_idx"], sets["train_idx"]
    if trained is not None:
        restorers = {m: r for m, r in trained.items() if m != "steps"}
        steps = trained.get("steps", {})
        if not restorers or {BASELINE, "original"} & set(restorers):
            raise UsageError(f"trained needs at least one restorer, named other than {BASELINE!r} and 'original' "
                             f"(the sheet's columns); got {sorted(trained)}")
    else:
        # 1. train both models without the held-out references (scratch dirs, profile untouched),
        # and the reference fusion on the person's model, in enroll's shares of the budget
        fusion = references and fusion and can_learn_fusion(crops[train_idx])
        fusion_s = budget_s * FUSION_SHARE if fusion else 0.0
        budget_s -= fusion_s
        with tempfile.TemporaryDirectory(prefix="facefix-eval-") as tmp:
            generic_s = budget_s * (GENERIC_SHARE_NEW if generic_share is None else generic_share)
            if on_stage:
                on_stage("generic model (eval)", generic_s)
            generic = train_fast(sets["generic"], budget_s=generic_s, max_steps=max_steps, seed=seed,
                                 checkpoint_dir=Path(tmp) / "generic", on_step=on_step, config=train_config,
                                 model_config=model_config, device=device)
            if on_stage:
                on_stage(f"{name}'s model (eval)", budget_s - generic_s)
            person = train_fast(sets["person"], init=generic.tensors, budget_s=budget_s - generic_s, max_steps=max_steps,
                                seed=seed + 1, checkpoint_dir=Path(tmp) / "person", on_step=on_step,
                                config=train_config, model_config=model_config or _config_of(generic), device=device)
        restorers = {"generic": generic.restorer(name="fast/generic (eval)", device=device),
                     "person": person.restorer(name=f"fast/{name} (eval)", device=device)}
        steps = {"generic": generic.steps, "person": person.steps}
        if references:
            # what restore does for an enrolled person: their model, then their references
            # (the kept ones only: a held-out photo must not guide its own restoration),
            # fused by the learned fusion past LEARNED_FROM when enroll would learn one
            learned = None
            if fusion:
                from facefix.training.fusion_train import train_fusion

                if on_stage:
                    on_stage(f"{name}'s reference fusion (eval)", fusion_s)
                trained_fusion = train_fusion(crops[train_idx], restorers["person"], budget_s=fusion_s, seed=seed,
                                              max_steps=max_steps)
                steps["fusion"] = trained_fusion.steps
                learned = trained_fusion.net if trained_fusion.steps else None
            restorers["person+refs"] = ReferenceRestorer(
                restorers["person"], GuideSet.from_crops(crops[train_idx], name), name=f"fast/{name}+refs (eval)",
                fusion=learned, learned_from=LEARNED_FROM)
    # 2. degrade the held-out faces at fixed levels and score each method
    template = crops.shape[1]
    sizes = tuple(face_sizes or (template,))
    for size in sizes:
        if not 32 <= size <= template:
            raise UsageError(f"face size {size} px is outside 32..{template}; pass --face-size between them")
    clean_emb = analyzer.embed_aligned(crops[test_idx])
    # The originals' landmarks, found once at the template's size where the predictor is
    # sure of them, place the regions of the sharpness and expression measures at every
    # size (landmarks of a degraded or restored face follow the predictor's prior).
    clean_points = aligned_landmarks68(crops[test_idx])
    methods = (BASELINE, *restorers)
    rows, shown = [], {m: [] for m in ("original", *methods)}
    for size in sizes:
        clean = _resize(crops[test_idx].astype(np.float32) / 255.0, size)
        points = clean_points * (size / template)
        for li, level in enumerate(LEVELS):
            bad = np.stack([degrade_level(c, level, seed=degradation_seed(seed, li, i))
                            for i, c in enumerate(clean)]).astype(np.float32)
            enlarged = _resize(bad, template)
            outputs = {BASELINE: bad, **{m: _resize(r.restore(enlarged), size) for m, r in restorers.items()}}
            for method in methods:
                rows.append(_scores(level, method, outputs[method], clean, clean_emb, points, analyzer, template, size))
            if size == sizes[0]:
                for column, faces in (("original", clean), *outputs.items()):
                    shown[column].append(faces)
    sheet = contact_sheet([np.concatenate(faces) for faces in shown.values()],
                          [name if m == "person" else m for m in shown])
    return EvalReport(
        person=name, backend=analyzer.name, held_out=tuple(profile.references[i].source for i in test_idx),
        train_references=len(train_idx), other_references=sets["others"],
        steps=steps, rows=tuple(rows), sheet=sheet, face_sizes=sizes,
    )


def degradation_seed(seed: int, level_index: int, face_index: int) -> int:
    """The noise seed of held-out face ``face_index`` at level ``level_index`` (of LEVELS)."""
    return seed + 1000 * level_index + face_index


def eval_training_sets(name: str, *, store: ProfileStore, holdout: int, seed: int) -> dict:
    """What ``facefix eval`` trains on: the split of ``name``'s references and both training sets.

    Returns a dict: ``crops`` (all of the person's, uint8), ``test_idx`` /
    ``train_idx`` (held out / kept, seeded by ``seed``), ``generic`` (everyone
    else's references + the kept ones), ``person`` (the kept ones) and
    ``others`` (how many references of other people).
    """
    crops = store.load_crops(store.load(name))
    if holdout < 1 or len(crops) - holdout < 1:
        raise UsageError(f"{name} has {len(crops)} references; --holdout must be between 1 and "
                         f"{len(crops) - 1} so that some remain for training")
    test_idx, train_idx = holdout_split(crops, holdout, seed)
    if not train_idx:
        raise UsageError(f"{name}'s references come from too few different photos to hold out {holdout} "
                         "(crops of one photo are held out together); use a smaller --holdout or add photos")
    others = [store.load_crops(store.load(n)) for n in store.names() if n != name]
    others = np.concatenate([o for o in others if len(o)]) if any(len(o) for o in others) else crops[:0]
    return {"crops": crops, "test_idx": test_idx, "train_idx": train_idx, "others": len(others),
            "generic": np.concatenate([others, crops[train_idx]]), "person": crops[train_idx]}


def holdout_split(crops: np.ndarray, holdout: int, seed: int) -> tuple[list[int], list[int]]:
    """(held out, kept) indices: whole photo groups, in a seeded order, until ``holdout``
    references are held out. With no shared photos this is a seeded random choice of
    ``holdout`` references."""
    groups = photo_groups(crops)
    test: list[int] = []
    for g in np.random.default_rng(seed).permutation(len(groups)):
        if len(test) >= holdout:
            break
        test += groups[g]
    return sorted(test), sorted(set(range(len(crops))) - set(test))


def _config_of(result):
    from facefix.restorers.fast import FastConfig

    return FastConfig.from_dict(result.settings["config"])
