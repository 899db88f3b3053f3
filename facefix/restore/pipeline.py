"""Restore one photo from the pieces: read → detect → match → align → restore → paste → write.

Each step is a plain function over plain values; the only long-lived objects
are the analyzer and the loaded restorers, passed in by the caller.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from facefix.errors import UsageError
from facefix.faces import (
    Alignment,
    FaceAnalyzer,
    estimate_alignment,
    paste_faces,
    warp_face,
)
from facefix.faces.align import CROP_SIZE
from facefix.faces.grain import estimate_grain
from facefix.faces.types import Face
from facefix.photos import Photo, PhotoMeta, read_photo, write_photo
from facefix.restore.matching import Gallery, assign
from facefix.restorers.base import Restorer

log = logging.getLogger(__name__)

FACE_CHOICES = ("all", "largest", "center")
EXT_CHOICES = ("same", "jpg", "png")


class RestorerProvider(Protocol):
    """Hands out loaded restorers: a person's, or the generic one for None."""

    def get(self, person: str | None) -> Restorer: ...


@dataclass(frozen=True)
class RestoreOptions:
    """What the user asked for; see ``facefix restore --help``.

    Attributes:
        person: "auto" or an enrolled name (see :func:`facefix.restore.matching.assign`).
        faces: which faces to restore: "all", "largest" or "center" (nearest the middle).
        min_face: skip faces whose eye-to-mouth distance is below this (source pixels).
        upscale: integer factor for the whole output photo.
        strength: 1 = restored face, 0 = original; in between blends.
        aligned: inputs are already aligned 512 face crops (no detection).
        grain: give restored faces the photo's own film grain, this many times what
            they lack of it (0 = off; 1 = as strong as the photo's), so that a face in
            a grainy scan does not look pasted on.
    """

    person: str = "auto"
    faces: str = "all"
    min_face: float = 10.0
    upscale: int = 1
    strength: float = 1.0
    aligned: bool = False
    grain: float = 0.0

    def __post_init__(self) -> None:
        if self.faces not in FACE_CHOICES:
            raise UsageError(f"--faces must be one of {', '.join(FACE_CHOICES)}, not {self.faces!r}")
        if not 1 <= self.upscale <= 8:
            raise UsageError(f"--upscale must be between 1 and 8, not {self.upscale}")
        if not 0.0 <= self.strength <= 1.0:
            raise UsageError(f"--strength must be between 0 and 1, not {self.strength}")
        if not 0.0 <= self.grain <= 2.0:
            raise UsageError(f"--grain must be between 0 and 2, not {self.grain}")
        if self.min_face < 0:
            raise UsageError(f"--min-face must be positive, not {self.min_face}")


@dataclass(frozen=True)
class FaceRecord:
    """What happened to one face; one line of the summary and of ``--json``."""

    index: int
    box: tuple[float, float, float, float]
    person: str | None
    similarity: float | None
    reason: str
    restorer: str | None
    skipped: str | None = None

    def to_dict(self) -> dict:
        return {
            "face": self.index,
            "box": [round(float(v), 1) for v in self.box],
            "person": self.person or "generic",
            "similarity": None if self.similarity is None else round(self.similarity, 4),
            "match": self.reason,
            "restorer": self.restorer,
            "skipped": self.skipped,
        }


@dataclass(frozen=True, eq=False)
class RestoredImage:
    """The in-memory result of restoring one image."""

    rgb: np.ndarray
    faces: tuple[FaceRecord, ...]
    before: tuple[np.ndarray, ...] = field(default=(), repr=False)
    after: tuple[np.ndarray, ...] = field(default=(), repr=False)


def select_faces(faces: Sequence[Face], shape: tuple[int, int], options: RestoreOptions) -> list[str | None]:
    """For each face, None to restore it or the reason it is skipped."""
    reasons: list[str | None] = [
        None if f.eye_mouth >= options.min_face else f"too small ({f.eye_mouth:.0f} px < --min-face {options.min_face:g})"
        for f in faces
    ]
    if options.faces == "all" or not faces:
        return reasons
    candidates = [i for i, r in enumerate(reasons) if r is None]
    if not candidates:
        return reasons
    if options.faces == "largest":
        keep = max(candidates, key=lambda i: faces[i].eye_mouth)
    else:
        cy, cx = shape[0] / 2, shape[1] / 2
        keep = min(candidates, key=lambda i: (faces[i].center[0] - cx) ** 2 + (faces[i].center[1] - cy) ** 2)
    return [r if (i == keep or r) else f"not selected by --faces {options.faces}" for i, r in enumerate(reasons)]


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """Replace colour by its luma, keeping three channels."""
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat(luma[..., None], 3, axis=-1)


def restore_crops(
    crops: Sequence[np.ndarray], people: Sequence[str | None], restorers: RestorerProvider
) -> tuple[list[np.ndarray], list[str]]:
    """Restore crops in one batch per restorer; returns results and restorer names."""
    groups: dict[str | None, list[int]] = defaultdict(list)
    for i, person in enumerate(people):
        groups[person].append(i)
    results: list[np.ndarray | None] = [None] * len(crops)
    names = [""] * len(crops)
    for person, idx in groups.items():
        restorer = restorers.get(person)
        batch = restorer.restore(np.stack([crops[i] for i in idx]).astype(np.float32))
        for j, i in enumerate(idx):
            results[i] = np.clip(batch[j], 0.0, 1.0)
            names[i] = restorer.name
    return results, names  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class Analysis:
    """What is known about an image before restoration: its faces and their crops.

    Built by :func:`analyze_image` (detection, matching, alignment), consumed by
    :func:`restore_crops` (``before``/``people``) and :func:`finish_image`. The
    split lets a batch run analyse the next photos while the restorer works.
    """

    records: tuple[FaceRecord, ...]  # restorer names are filled in by finish_image
    todo: tuple[int, ...]  # indices of the faces to restore
    people: tuple[str | None, ...]  # for each restored face: its person, None = generic
    alignments: tuple[Alignment, ...] = field(repr=False)
    before: tuple[np.ndarray, ...] = field(repr=False)
    aligned: bool = False  # the image is itself an aligned crop


def analyze_image(
    rgb: np.ndarray,
    *,
    analyzer: FaceAnalyzer,
    gallery: Gallery,
    options: RestoreOptions,
) -> Analysis:
    """Detect, match, select and align the faces of an RGB float32 image in [0, 1]."""
    rgb8 = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if options.aligned:
        h, w = rgb.shape[:2]
        crop = rgb if (h, w) == (CROP_SIZE, CROP_SIZE) else cv2.resize(
            rgb, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_CUBIC)
        crop8 = np.clip(crop * 255.0 + 0.5, 0, 255).astype(np.uint8)
        embedding = analyzer.embed_aligned(crop8[None])[0]
        face = Face(box=(0.0, 0.0, float(w), float(h)), landmarks=np.zeros((5, 2), np.float32),
                    score=1.0, backend=analyzer.name, embedding=embedding)
        match = assign([face], gallery, person=options.person, threshold=analyzer.same_person_similarity)[0]
        record = FaceRecord(0, face.box, match.person, match.similarity, match.reason, None)
        return Analysis((record,), (0,), (match.person,), (), (crop.astype(np.float32),), aligned=True)
    # 1. detect, then decide who each face is and which to restore
    faces = analyzer.detect(rgb8, embed=True)
    del rgb8
    skips = select_faces(faces, rgb.shape[:2], options)
    matches = assign(faces, gallery, person=options.person, threshold=analyzer.same_person_similarity)
    todo = tuple(i for i, s in enumerate(skips) if s is None)
    # 2. align: one 512 crop per face to restore
    alignments = tuple(estimate_alignment(faces[i].landmarks, CROP_SIZE) for i in todo)
    before = tuple(warp_face(rgb, a) for a in alignments)
    records = tuple(FaceRecord(i, face.box, match.person, match.similarity, match.reason, None, skip)
                    for i, (face, match, skip) in enumerate(zip(faces, matches, skips)))
    return Analysis(records, todo, tuple(matches[i].person for i in todo), alignments, before)


def finish_image(
    rgb: np.ndarray,
    analysis: Analysis,
    after: Sequence[np.ndarray],
    names: Sequence[str],
    *,
    options: RestoreOptions,
    grayscale: bool = False,
) -> RestoredImage:
    """Blend, paste the restored crops back onto the (upscaled) photo, and label the faces."""
    after = [_finish(b, a, options.strength, grayscale) for b, a in zip(analysis.before, after)]
    restored_names = dict(zip(analysis.todo, names))
    records = tuple(replace(r, restorer=restored_names.get(r.index)) for r in analysis.records)
    if analysis.aligned:
        h, w = rgb.shape[:2]
        size = (w * options.upscale, h * options.upscale)
        (restored,) = after
        out = restored if size == (CROP_SIZE, CROP_SIZE) else cv2.resize(
            restored, size, interpolation=cv2.INTER_CUBIC)
        return RestoredImage(np.clip(out, 0, 1), records, analysis.before, tuple(after))
    base = rgb
    alignments = list(analysis.alignments)
    if options.upscale > 1:
        h, w = rgb.shape[:2]
        base = cv2.resize(rgb, (w * options.upscale, h * options.upscale), interpolation=cv2.INTER_CUBIC)
        base = np.clip(base, 0.0, 1.0)
        alignments = [a.scaled(options.upscale) for a in alignments]
    out = base
    if analysis.todo:
        grain = estimate_grain(base) if options.grain > 0 else None
        out = paste_faces(base, after, alignments, grain=grain, grain_amount=options.grain)
    return RestoredImage(out, records, analysis.before, tuple(after))


def restore_image(
    rgb: np.ndarray,
    *,
    analyzer: FaceAnalyzer,
    gallery: Gallery,
    restorers: RestorerProvider,
    options: RestoreOptions,
    grayscale: bool = False,
) -> RestoredImage:
    """Restore every selected face of an RGB float32 image in [0, 1].

    Args:
        rgb: the photo, HxWx3 float32.
        analyzer: face backend (detection, landmarks, embeddings).
        gallery: enrolled people's embeddings for that backend.
        restorers: where restorers come from.
        options: see :class:`RestoreOptions`.
        grayscale: the photo is gray: restored faces are made gray too.
    """
    analysis = analyze_image(rgb, analyzer=analyzer, gallery=gallery, options=options)
    after, names = restore_crops(analysis.before, analysis.people, restorers) if analysis.todo else ([], [])
    return finish_image(rgb, analysis, after, names, options=options, grayscale=grayscale)


def _finish(before: np.ndarray, after: np.ndarray, strength: float, grayscale: bool) -> np.ndarray:
    if grayscale:
        after = to_gray(after)
    if strength < 1.0:
        after = strength * after + (1.0 - strength) * before
    return after.astype(np.float32)


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class PhotoResult:
    """What restoring one file produced."""

    source: Path
    output: Path
    faces: tuple[FaceRecord, ...]
    seconds: float
    extra: tuple[Path, ...] = ()

    def records(self) -> list[dict]:
        """One JSON record per face (file, box, person, similarity, restorer)."""
        base = {"file": str(self.source), "output": str(self.output)}
        return [{**base, **face.to_dict()} for face in self.faces] or [{**base, "face": None}]


def output_path(source: Path, *, output_dir: Path | None, suffix: str, ext: str, alpha: bool = False,
                keep_source_ext: bool = False) -> Path:
    """Where the restored version of ``source`` goes; never the source itself.

    With ``keep_source_ext`` the whole source name is kept before the suffix
    (``photo.gif`` → ``photo.gif_restored.png``): a folder run uses it when two
    sources sharing a stem would otherwise get the same output (see
    :func:`facefix.restore.plan.plan_inputs`).
    """
    if ext not in EXT_CHOICES:
        raise UsageError(f"--ext must be one of {', '.join(EXT_CHOICES)}, not {ext!r}")
    new_suffix = source.suffix if ext == "same" else f".{ext}"
    if alpha and new_suffix.lower() in {".jpg", ".jpeg"}:
        log.warning("%s has transparency, which JPEG cannot hold; writing PNG", source)
        new_suffix = ".png"
    folder = output_dir if output_dir is not None else source.parent
    base = source.name if keep_source_ext else source.stem
    target = folder / f"{base}{suffix}{new_suffix}"
    if os.path.realpath(target) == os.path.realpath(source):  # realpath: no error on a symlink loop
        raise UsageError(
            f"the output for {source} would overwrite it; give --output DIR or a non-empty --suffix"
        )
    return target


def _labelled(image: np.ndarray, text: str) -> np.ndarray:
    """``image`` under a white band that names it (sized to the image, so it reads at any size)."""
    h, w = image.shape[:2]
    band = max(18, min(h, w) // 16)
    scale = band / 36.0
    top = np.full((band, w, 3), 255, np.uint8)  # OpenCV draws text on 8-bit images only
    cv2.putText(top, text, (max(4, band // 4), int(band * 0.72)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                max(1, round(scale * 1.5)), cv2.LINE_AA)
    return np.concatenate([(top.astype(np.float32) / 255.0).astype(image.dtype), image], axis=0)


def compare_image(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Side by side, labelled: the original (scaled to the output's size) and the result."""
    if before.shape[:2] != after.shape[:2]:
        before = cv2.resize(before, (after.shape[1], after.shape[0]), interpolation=cv2.INTER_CUBIC)
    before, after = _labelled(before, "original"), _labelled(after, "restored")
    gap = np.ones((after.shape[0], max(4, after.shape[1] // 100), 3), np.float32)
    return np.concatenate([before, gap, after], axis=1)


def restore_file(
    source: Path,
    target: Path,
    *,
    analyzer: FaceAnalyzer,
    gallery: Gallery,
    restorers: RestorerProvider,
    options: RestoreOptions,
    compare: bool = False,
    save_faces: bool = False,
) -> PhotoResult:
    """Restore one photo file into ``target`` (written atomically, metadata kept)."""
    start = time.perf_counter()
    photo = read_photo(source)
    rgb = photo.rgb_float()
    result = restore_image(rgb, analyzer=analyzer, gallery=gallery, restorers=restorers,
                           options=options, grayscale=photo.is_grayscale)
    written, extra = write_outputs(photo, rgb, result, target, compare=compare, save_faces=save_faces)
    return PhotoResult(source, written, result.faces, time.perf_counter() - start, extra)


def write_outputs(
    photo: Photo,
    rgb: np.ndarray,
    result: RestoredImage,
    target: Path,
    *,
    compare: bool = False,
    save_faces: bool = False,
) -> tuple[Path, tuple[Path, ...]]:
    """Write the restored photo (and the optional side images); each file atomically.

    Returns:
        The photo's path and the side images' paths.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    written = write_photo(photo.with_rgb(result.rgb), target)
    extra: list[Path] = []
    if compare:
        side = compare_image(rgb, result.rgb)
        cmp_path = target.with_name(f"{target.stem}_compare{target.suffix}")
        extra.append(write_photo(_as_photo(side, photo), cmp_path))
    if save_faces:
        folder = target.with_name(f"{target.stem}_faces")
        for rec, b, a in zip([r for r in result.faces if r.skipped is None], result.before, result.after):
            label = rec.person or "generic"
            for tag, img in (("before", b), ("after", a)):
                p = folder / f"face{rec.index}_{label}_{tag}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                extra.append(write_photo(_as_photo(img, None), p))
    return written, tuple(extra)


def _as_photo(rgb: np.ndarray, like: Photo | None) -> Photo:
    """A new 8-bit RGB photo (for side images), carrying ``like``'s ICC profile and DPI."""
    pixels = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
    meta = PhotoMeta(format="PNG", mode="RGB")
    if like is not None:
        meta = replace(meta, icc=like.meta.icc, dpi=like.meta.dpi,
                       jpeg_quality=like.meta.jpeg_quality, jpeg_subsampling=like.meta.jpeg_subsampling)
    return Photo(pixels=pixels, meta=meta)
