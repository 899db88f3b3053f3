"""The reference-guided restorer: a person's own photos put their detail back.

A blind restorer (the fast CNN, or the classical one) removes noise and JPEG
blocks but cannot know what lashes, irises or skin looked like. The person's
references can. For each face:

1. pre-clean it with the base restorer;
2. find its 68 landmarks and rank the references by pose *and* expression
   (mouth opening first: teeth pasted into closed lips is the worst failure);
3. warp the best few onto the face (thin-plate spline + optical flow,
   :func:`facefix.restorers.guides.warp_guide`);
4. estimate how blurred the face is, by the blur at which the warped
   references agree with it best;
5. replace the face's brightness detail above that blur by the references'
   detail, only where a reference agrees with the face at the coarse scale
   (local normalised correlation), the best-agreeing reference nearly alone at
   each pixel, inside a soft face region; elsewhere the pre-cleaned face is
   kept as it is. Eyes and mouth take less of it the blurrier the face, and
   none past a blur where gaze and teeth cannot be told any more;
6. colour: the face's own chroma, its edges re-drawn along the new brightness
   (guided filter), plus part of the references' colour detail, so irises and
   lips keep their colour instead of going grey;
7. keep the photo's own eye and mouth shapes: there the restored face keeps
   only its finest detail, on the photo's coarser structure
   (:mod:`facefix.restorers.fidelity`; past a blur of 12 px, the mouth only).

Not learned: nothing is trained, so it works from the first enrolment. Its
limits (measured in docs/references.md): a reference's glasses, make-up or
expression can come along where the blurred face cannot tell them apart.

A learned fusion (:mod:`facefix.restorers.fusion_net`, trained at enroll by
:func:`facefix.training.fusion_train.train_fusion`) can replace step 5 and 6:
``ReferenceRestorer(..., fusion=...)``, for faces from ``learned_from`` blur on.
It is off unless given.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from facefix.errors import UsageError
from facefix.faces.landmarks import (
    aligned_landmarks68,
    face_region_mask,
    feature_masks,
)
from facefix.quality.degrade import to_luma
from facefix.restorers.base import Restorer, check_crops
from facefix.restorers.fidelity import FidelitySettings, keep_photo_features
from facefix.restorers.guides import GuideSet, landmark_map, rank_guides, warp_guide

log = logging.getLogger(__name__)

#: Changes whenever the fusion's output changes, so folder runs redo their photos.
FUSION_VERSION = 9
#: Blur widths (Gaussian sigma, 512-px crop) tried when estimating a face's blur.
BLURS = (1.0, 1.5, 2.0, 3.0, 4.0, 5.5, 7.5, 10.0, 14.0)


#: Faces at least this blurred (512-px sigma) get a person's learned fusion when they have
#: one, less blurred ones the hand-made fusion. 12: every face of eval's moderate level
#: (256 px) goes to the hand-made fusion, which is sharper there, every severe one to the
#: learned (at 10, the first choice, some moderate faces went to the softer learned one;
#: docs/references.md).
LEARNED_FROM = 12.0


@dataclass(frozen=True)
class FusionSettings:
    """How references are used.

    Attributes:
        guides: how many of the best-ranked references are warped and fused.
        candidates: how many are scored for blur (the first ``guides`` of them are fused).
        cutoff: detail above ``cutoff`` times the estimated blur width is taken from the references.
        trust_low, trust_high: local correlation below ``trust_low`` takes nothing, above
            ``trust_high`` takes all of a reference's detail.
        min_blur: below this estimated blur (512-px sigma) the face is sharp enough: nothing is added.
        gain_min, gain_max: bounds of the contrast match of a reference's detail to the face.
        power: references are weighted by their trust to this power (high: the best one
            at each pixel, nearly alone; averaging several blurs their detail away).
        chroma_share: how much of the references' colour detail comes along (irises and
            lips keep their colour instead of going grey).
        feature_blur_full, feature_blur_none: eyes and mouth take references' detail in
            full up to the first blur and not at all from the second (512-px sigma): the
            blurrier the face, the less its eyes and mouth say about gaze and teeth, and a
            wrong mouth or gaze is the worst outcome.
        feature_gate_low, feature_gate_high: an eye or the mouth of a reference is used
            only as far as it agrees with the face's over the whole feature at the face's
            blur (correlation from low, none, to high, all).
        mouth_gate_low, mouth_gate_high: the same for the mouth, stricter: a smile's teeth
            in a speaking mouth (the quickstart's photo) passed the eyes' gate.
        head_grow: the region that takes detail, grown about the face's centre to reach
            the hairline, ears and jaw line, so that no sharp face sits on a blurred head.
        chroma_cutoff: like ``cutoff``, for the references' colour detail.
        eye_colour: how much of the agreeing references' eye colour (their colour cast
            removed) replaces the face's, which blur mixes with the skin around.
        max_cut: the cut-off never goes above this (512-px sigma): on a very blurred face
            only finer detail is taken, never the shape of features, which warps a few
            pixels off would misplace (with no limit, every severe face at 256 px got
            wrinkles, a closed smile or a ghost of another face). 7.5 since the whole-face
            back-off below and the learned fusion took the severe faces over (5 before:
            moderate faces came out softer, sharpness 0.37 against 0.43). 10 measured the
            same on the development set but drew a reference's smile crease into the
            quickstart's speaking face (estimated blur 10).
        blur_full, blur_none: the whole face takes references' detail in full up to the
            first blur and none from the second (512-px sigma). A face as blurred as
            eval's severe level at 256 px (about 32 px of face in the photo) gets none:
            with ``max_cut`` alone, nostrils, brow lines and creases were still drawn a
            few pixels off on a blurred face.
        learned_gates: the learned fusion's guides go through the same eye and mouth
            gates first (:func:`gate_features`): where a reference's eye or mouth
            disagrees with the face's at the face's blur, that guide shows the face's own
            there, which the network reads as "no guide". Off: measured on the
            development set (docs/references.md), the features it refused were mostly
            right ones refused because the person's CNN had mangled the face's own
            (doubled mouths at eval's severe level), which the gate then kept.
    """

    guides: int = 3
    candidates: int = 3
    cutoff: float = 1.0
    trust_low: float = 0.55
    trust_high: float = 0.9
    min_blur: float = 1.2
    gain_min: float = 0.5
    gain_max: float = 2.0
    power: float = 8.0
    chroma_share: float = 0.7
    feature_blur_full: float = 8.0
    feature_blur_none: float = 16.0
    feature_gate_low: float = 0.5
    feature_gate_high: float = 0.8
    mouth_gate_low: float = 0.7
    mouth_gate_high: float = 0.9
    head_grow: float = 1.15
    chroma_cutoff: float = 0.7
    eye_colour: float = 0.5
    max_cut: float = 7.5
    blur_full: float = 10.0
    blur_none: float = 14.0
    learned_gates: bool = False


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(x, (0, 0), sigma) if sigma > 0 else x


def local_correlation(a: np.ndarray, b: np.ndarray, sigma: float) -> np.ndarray:
    """Normalised cross-correlation of two images in a Gaussian window of ``sigma`` px."""
    ma, mb = _blur(a, sigma), _blur(b, sigma)
    va = np.maximum(_blur(a * a, sigma) - ma * ma, 0)
    vb = np.maximum(_blur(b * b, sigma) - mb * mb, 0)
    cov = _blur(a * b, sigma) - ma * mb
    return cov / np.sqrt(va * vb + 1e-7)


def _small(x: np.ndarray, size: int = 128) -> np.ndarray:
    return cv2.resize(x, (size, size), interpolation=cv2.INTER_AREA) if x.shape[0] != size else x


def estimate_blur(face: np.ndarray, guides: list[np.ndarray], mask: np.ndarray) -> float:
    """The Gaussian width (512-px) at which sharp references agree best with the face.

    Compared at 128 px: the blurs that matter (several 512-px pixels) are seen there.

    Args:
        face: (S, S) brightness of the pre-cleaned face.
        guides: (S, S) brightness of references warped onto it.
        mask: (S, S) where to compare (the face region).
    """
    face, mask = _small(face), _small(mask)
    guides = [_small(g) for g in guides]
    k = 128 / 512.0
    face_hp = face - _blur(face, 24 * k)
    best, best_err = BLURS[0], np.inf
    for s in BLURS:
        err = 0.0
        for g in guides:
            gb = _blur(g, s * k)
            gb = gb - _blur(gb, 24 * k)
            # a least-squares gain: references differ in lighting and contrast
            gain = float(np.sum(mask * gb * face_hp) / (np.sum(mask * gb * gb) + 1e-8))
            err += float(np.sum(mask * (face_hp - gain * gb) ** 2))
        if err < best_err:
            best, best_err = s, err
    return best


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter: ``src`` smoothed along the edges of ``guide``."""
    size = (2 * radius + 1, 2 * radius + 1)

    def box(x):
        return cv2.boxFilter(x, -1, size, borderType=cv2.BORDER_REFLECT)

    mg, ms = box(guide), box(src)
    a = (box(guide * src) - mg * ms) / (box(guide * guide) - mg * mg + eps)
    b = ms - a * mg
    return box(a) * guide + box(b)


def _region_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Correlation of two images over one soft region."""
    w = mask / (mask.sum() + 1e-8)
    da, db = a - np.sum(w * a), b - np.sum(w * b)
    return float(np.sum(w * da * db) / np.sqrt(np.sum(w * da * da) * np.sum(w * db * db) + 1e-12))


def gate_features(face: np.ndarray, points: np.ndarray, warped: list[np.ndarray], blur: float,
                  settings: FusionSettings) -> tuple[list[np.ndarray], list[dict]]:
    """Each guide with its eyes and mouth replaced by the face's where they disagree with it.

    Agreement is judged as :func:`fuse` judges it: the correlation of the face and the
    guide over the whole feature, both blurred to the face's blur, at 128 px; from
    ``feature_gate_low`` (``mouth_gate_low`` for the mouth) the guide's feature is
    replaced by the face's, up to ``..._high`` it is kept whole. On the development set
    that agreement followed the sharp truth's (correlation 0.8 for the mouth at eval's
    severe level, 0.97 at moderate), which is what lets a closed mouth refuse a smile's
    teeth even where the 68 landmarks cannot tell them apart.

    Returns:
        The gated guides (float32 (S, S, 3)) and, per guide, the gate of each feature
        (``left_eye``, ``right_eye``, ``mouth``: 1 = kept, 0 = replaced).
    """
    size = face.shape[0]
    small = 128
    s = blur * small / 512.0
    y_low = _blur(_small(to_luma(face), small), s)
    (left, right), mouth = feature_masks(points * (small / size), small)
    (left_full, right_full), mouth_full = feature_masks(points, size)
    features = (("left_eye", left, left_full, settings.feature_gate_low, settings.feature_gate_high),
                ("right_eye", right, right_full, settings.feature_gate_low, settings.feature_gate_high),
                ("mouth", mouth, mouth_full, settings.mouth_gate_low, settings.mouth_gate_high))
    gated, gates = [], []
    for guide in warped:
        g_low = _blur(_small(to_luma(guide), small), s)
        replace = np.zeros((size, size), np.float32)
        decided = {}
        for label, mask, full, low, high in features:
            gate = float(np.clip((_region_correlation(y_low, g_low, mask) - low) / (high - low), 0, 1))
            decided[label] = round(gate, 3)
            # the whole feature (its soft mask peaks below 1), feathered outside it
            replace = np.maximum(replace, np.clip(2 * full, 0, 1) * (1 - gate))
        replace = replace[..., None]
        gated.append((guide * (1 - replace) + face * replace).astype(np.float32))
        gates.append(decided)
    return gated, gates


def fuse(face: np.ndarray, points: np.ndarray, warped: list[np.ndarray], settings: FusionSettings,
         blur: float | None = None, region: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Put the warped references' detail into a pre-cleaned face where they agree with it.

    Args:
        face: float32 (S, S, 3) pre-cleaned face.
        points: (68, 2) its landmarks.
        warped: references warped onto it (float32 (S, S, 3) each), best first.
        settings: see :class:`FusionSettings`.
        blur: the face's blur (512-px sigma); estimated when None.
        region: :func:`facefix.faces.landmarks.face_region_mask` of ``points`` (made when None).

    Returns:
        The restored face and what was decided (``blur``, ``trust``: mean trust in the face region).
    """
    size = face.shape[0]
    k = size / 512.0
    if region is None:
        region = face_region_mask(points, size)
    y = to_luma(face)
    detail_region = region if settings.head_grow <= 1 else face_region_mask(points, size, grow=settings.head_grow,
                                                                              feather=0.06, forehead=0.6)
    guides_y = [to_luma(w) for w in warped]
    if blur is None:
        blur = estimate_blur(y, guides_y, region)
    info = {"blur": float(blur), "trust": 0.0}
    if blur < settings.min_blur or not warped:
        return face, info
    cut = min(settings.cutoff * blur, settings.max_cut) * k
    # where a reference agrees with the face is decided at the face's blur, at 128 px
    small = 128
    ks = small / 512.0
    s = blur * ks
    window = max(1.5, 2.0 * s)
    y_low = _blur(_small(y, small), s)
    region_small = _small(detail_region, small)
    eye_masks, mouth = feature_masks(points * (small / size), small)
    features = np.maximum(np.maximum(*eye_masks), mouth)
    # eyes and mouth carry expression: their detail goes first as the blur grows
    feature_cap = float(np.clip((settings.feature_blur_none - blur)
                                / (settings.feature_blur_none - settings.feature_blur_full), 0, 1))
    keep = 1 - features * (1 - feature_cap)
    # ... and past a blur where the face's shape says too little, the whole face's: the
    # warps are a few pixels off there, and detail drawn a few pixels off makes lines
    # on a blurred face, wrinkles and lost smiles (every severe face of the dev set)
    keep *= float(np.clip((settings.blur_none - blur) / (settings.blur_none - settings.blur_full), 0, 1))
    detail = np.zeros_like(y)
    weight = np.zeros_like(y)
    trust_max = np.zeros_like(y)
    chroma_detail = np.zeros_like(face)
    eye_chroma = []
    for g, rgb in zip(guides_y, warped):
        g_low = _blur(_small(g, small), s)
        ncc = local_correlation(y_low, g_low, window)
        trust = np.clip((ncc - settings.trust_low) / (settings.trust_high - settings.trust_low), 0, 1)
        trust *= region_small * keep
        if settings.feature_gate_high > 0:
            # a mouth or an eye is taken whole or not at all: its agreement over the
            # whole feature, not window by window (windows always find something alike)
            gates = [(m, settings.feature_gate_low, settings.feature_gate_high) for m in eye_masks]
            for mask, low_gate, high_gate in (*gates, (mouth, settings.mouth_gate_low, settings.mouth_gate_high)):
                agree = _region_correlation(y_low, g_low, mask)
                gate = float(np.clip((agree - low_gate) / (high_gate - low_gate), 0, 1))
                trust *= 1 - mask * (1 - gate)
        # match the reference's contrast to the face's (other light, other camera)
        sd_y = np.sqrt(np.maximum(_blur(y_low * y_low, window) - _blur(y_low, window) ** 2, 1e-6))
        sd_g = np.sqrt(np.maximum(_blur(g_low * g_low, window) - _blur(g_low, window) ** 2, 1e-6))
        gain = np.clip(sd_y / sd_g, settings.gain_min, settings.gain_max)
        trust = cv2.resize(trust, (size, size), interpolation=cv2.INTER_LINEAR)
        gain = cv2.resize(gain, (size, size), interpolation=cv2.INTER_LINEAR)
        band = (g - _blur(g, cut)) * gain
        w = trust ** settings.power
        detail += w * band
        weight += w
        c = rgb - g[..., None]
        if settings.chroma_share > 0:
            chroma_detail += w[..., None] * (c - _blur(c, settings.chroma_cutoff * blur * k)) * gain[..., None]
        if settings.eye_colour > 0:
            # the reference's colour cast removed: its eyes' colour, in this photo's light
            cast = np.sum(region[..., None] * c, axis=(0, 1)) / (region.sum() + 1e-6)
            eye_chroma.append(c - cast)
        trust_max = np.maximum(trust_max, trust)
    detail /= np.maximum(weight, 1e-6)
    chroma_detail /= np.maximum(weight, 1e-6)[..., None]
    own = y - _blur(y, cut)
    y_new = _blur(y, cut) + trust_max * detail + (1 - trust_max) * own
    # colour: keep the face's chroma, its edges re-drawn along the new brightness, plus
    # part of the references' colour detail -- none for a gray face, which stays gray
    chroma = face - y[..., None]
    if np.abs(chroma).max() > 1.0 / 255.0:
        sharp_chroma = np.stack([guided_filter(y_new, chroma[..., c], max(2, int(round(2 * blur * k))), 1e-4)
                                 for c in range(3)], -1)
        chroma = trust_max[..., None] * (sharp_chroma + settings.chroma_share * chroma_detail) \
            + (1 - trust_max[..., None]) * chroma
        if settings.eye_colour > 0 and eye_chroma:
            # an iris's colour is the person's: where the face is too blurred to hold it
            # (smeared with the skin around), take it from the references that agree
            own_cast = np.sum(region[..., None] * (face - y[..., None]), axis=(0, 1)) / (region.sum() + 1e-6)
            eyes_full = cv2.resize(np.maximum(*eye_masks), (size, size), interpolation=cv2.INTER_LINEAR)
            t = (settings.eye_colour * trust_max * eyes_full)[..., None]
            # the median over the references: one with coloured make-up or odd light is outvoted
            chroma = (1 - t) * chroma + t * (np.median(np.stack(eye_chroma), axis=0) + own_cast)
    out = np.clip(y_new[..., None] + chroma, 0, 1).astype(np.float32)
    info["trust"] = float(np.sum(trust_max * region) / (np.sum(region) + 1e-6))
    return out, info


class ReferenceRestorer:
    """A person's restorer that uses their references at restore time.

    Args:
        base: the restorer that pre-cleans each face (the person's fast CNN, or the generic one).
        guides: the person's aligned references (:class:`GuideSet`).
        settings: see :class:`FusionSettings`.
        name: label for reports (default ``refs/<person>+<base>``).
    """

    def __init__(self, base: Restorer, guides: GuideSet, settings: FusionSettings | None = None,
                 name: str | None = None, fusion=None, learned_from: float = 0.0,
                 fidelity: FidelitySettings | None = None):
        self.base = base
        self.guides = guides
        self.settings = settings or FusionSettings()
        # the photo's own eye and mouth shapes are kept (facefix.restorers.fidelity)
        self.fidelity = fidelity or FidelitySettings()
        self.name = name or f"{base.name}+refs"
        # the learned fusion (facefix.restorers.fusion_net.FusionNet) replaces the hand-made
        # one for faces at least ``learned_from`` blurred (512-px sigma); a path or the
        # weight file's bytes are read here
        self.fusion = _as_fusion(fusion)
        self.learned_from = float(learned_from)

    def restore(self, crops: np.ndarray) -> np.ndarray:
        # No per-call state is kept: restore workers on several threads share one restorer.
        crops = check_crops(crops)
        cleaned = self.base.restore(crops)
        if len(self.guides) == 0:
            return cleaned
        out = np.empty_like(cleaned)
        for i, face in enumerate(cleaned):
            out[i] = self.restore_one(face, original=crops[i])[0]
        return out

    def restore_one(self, face: np.ndarray, original: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
        """Fuse the best references into one pre-cleaned face.

        Args:
            face: float32 (S, S, 3) the base's output.
            original: the face before the base (what the photo holds). Its eyes' and
                mouth's shapes are kept (:mod:`facefix.restorers.fidelity`); with a learned
                fusion, its blur decides which fusion serves (a base that invents edges
                makes its own output look sharper than the photo is). None: neither.

        Returns:
            The face and what was decided (``blur``, ``trust``, ``guides``: the references
            used; ``photo_features``: the features whose shapes are the photo's).
        """
        if self.fusion is not None:
            out, info, prepared = self._restore_learned(face, original)
        else:
            prepared = prepare_guides(face, self.guides, self.settings, original=original)
            out, info = self._restore_hand_made(face, prepared)
        info["photo_features"] = list(self.fidelity.parts(_photo_blur(prepared))) if original is not None else []
        if info["photo_features"]:
            out = keep_photo_features(out, original, prepared["points"], self.fidelity,
                                      tuple(info["photo_features"]))
        return out, info

    def _restore_hand_made(self, face: np.ndarray, prepared: dict) -> tuple[np.ndarray, dict]:
        if prepared["warped"] is None:
            # too sharp to need them, or too blurred to place their detail: the base's face
            return face, {"blur": prepared["blur"], "trust": 0.0, "guides": []}
        out, info = fuse(face, prepared["points"], prepared["warped"], self.settings, blur=prepared["blur"],
                         region=prepared["region"])
        info["guides"] = prepared["guides"]
        return out, info

    def _restore_learned(self, face: np.ndarray, original: np.ndarray | None) -> tuple[np.ndarray, dict, dict]:
        from facefix.restorers.fusion_net import apply_fusion

        k = self.fusion.config.guides
        if self.learned_from > 0 and k != self.settings.guides:
            raise UsageError(f"the learned fusion takes {k} guides and the hand-made one "
                             f"{self.settings.guides}; give FusionSettings(guides={k})")
        prepared = prepare_guides(face, self.guides, self.settings, count=k, blur_none=float("inf"),
                                  original=original)
        if _photo_blur(prepared) < self.learned_from:
            # less blurred than where the learned fusion takes over: the hand-made one,
            # with its own limits
            if prepared["warped"] is not None and prepared["blur"] >= self.settings.blur_none:
                prepared["warped"] = None
            return (*self._restore_hand_made(face, prepared), prepared)
        if prepared["warped"] is None:  # sharp enough: nothing to add
            return face, {"blur": prepared["blur"], "trust": 0.0, "guides": [], "learned": True}, prepared
        warped, gates = prepared["warped"], None
        if self.settings.learned_gates:
            warped, gates = gate_features(face, prepared["points"], warped, prepared["blur"], self.settings)
        out = apply_fusion(self.fusion, face, warped, prepared["blur"], prepared["distance"])
        if is_gray(face):
            out = np.repeat(to_luma(out)[..., None], 3, -1)
        return out, {"blur": prepared["blur"], "original_blur": prepared.get("original_blur"),
                     "trust": float("nan"), "guides": prepared["guides"], "learned": True, "gates": gates}, prepared


def _photo_blur(prepared: dict) -> float:
    """How blurred the face is: the pre-cleaned face's blur, or the photo's where that is
    known and blurrier (a base that invents edges makes its output look sharper)."""
    return max(prepared["blur"], prepared.get("original_blur", 0.0))


def is_gray(face: np.ndarray, tol: float = 2.0 / 255.0) -> bool:
    return bool(np.abs(face[..., 0] - face[..., 1]).mean() < tol and np.abs(face[..., 1] - face[..., 2]).mean() < tol)


def _as_fusion(fusion):
    """The learned fusion network from a network, a weight file's path or its bytes (None: hand-made)."""
    if fusion is None:
        return None
    from pathlib import Path

    from facefix.restorers.fusion_net import (
        FusionNet,
        fusion_from_bytes,
        fusion_from_file,
    )

    if isinstance(fusion, FusionNet):
        return fusion.eval()
    if isinstance(fusion, (bytes, bytearray)):
        return fusion_from_bytes(bytes(fusion))
    if isinstance(fusion, (str, Path)):
        return fusion_from_file(fusion)
    raise UsageError(f"fusion must be a FusionNet, a weight file's path or its bytes, not {type(fusion).__name__}")


def prepare_guides(face: np.ndarray, guides: GuideSet, settings: FusionSettings, *, count: int | None = None,
                   exclude=(), blur_none: float | None = None, points: np.ndarray | None = None,
                   original: np.ndarray | None = None) -> dict:
    """Choose, and warp onto one pre-cleaned face, the best-matching references.

    What both fusions (hand-made and learned) and the learned one's training pairs use.

    Args:
        face: float32 (S, S, 3) pre-cleaned face.
        guides: the references.
        settings: ``candidates`` (how many are scored for blur), ``guides`` (how many are warped,
            unless ``count``), ``min_blur`` / ``blur_none`` (outside them nothing is warped).
        count: how many references to warp (default ``settings.guides``).
        exclude: indices of references not to use (training: the target's own photo).
        blur_none: overrides ``settings.blur_none`` (the learned fusion has no upper limit).
        points: the face's landmarks (found when None).
        original: the face before pre-cleaning; its blur is estimated too (``original_blur``),
            against the same landmark warps.

    Returns:
        dict: ``points``, ``region``, ``blur`` (512-px sigma), ``guides`` (indices used),
        ``distance`` (their ranking distances), ``warped`` (float32 (S, S, 3) each, best
        first; None when the blur is outside the limits).
    """
    count = settings.guides if count is None else count
    blur_none = settings.blur_none if blur_none is None else blur_none
    if points is None:
        points = aligned_landmarks68(face[None])[0]
    order, dist = rank_guides(points, guides)
    keep = np.array([int(j) not in set(exclude) for j in order], bool)
    order, dist = order[keep], dist[keep]
    chosen = order[: max(count, settings.candidates)]
    y = to_luma(face)
    region = face_region_mask(points, face.shape[0])
    refs = [guides.crops[j].astype(np.float32) / 255.0 for j in chosen]
    maps = [landmark_map(guides.points[j], points, face.shape[0]) for j in chosen]
    # the blur decides the scale of the flow, so it is estimated on the landmark warps
    rough = [to_luma(warp_guide(r, m, y, blur=4.0, flow=False)) for r, m in zip(refs, maps)]
    blur = estimate_blur(y, rough, region) if rough else BLURS[-1]
    result = {"points": points, "region": region, "blur": float(blur), "guides": [int(j) for j in chosen[:count]],
              "distance": np.asarray(dist[:count], np.float32), "warped": None}
    if original is not None:
        result["original_blur"] = float(estimate_blur(to_luma(np.asarray(original, np.float32)), rough, region)
                                        if rough else BLURS[-1])
    if settings.min_blur <= blur < blur_none:
        result["warped"] = [warp_guide(r, m, y, blur=blur) for r, m in zip(refs[:count], maps)]
    return result


class GuidedRestorers:
    """A restorer provider whose enrolled people are restored with their references.

    Wraps another provider (the fast engine's): a face matched to a person is
    pre-cleaned by that provider's restorer for them, then given detail from
    their references (:class:`ReferenceRestorer`); generic faces are left to
    the wrapped provider. Each person's references are read and landmarked
    once, on first use.

    Args:
        inner: the provider that pre-cleans (e.g. :class:`facefix.providers.fast.FastRestorers`).
        store: the enrolled people.
        settings: see :class:`FusionSettings`.
        fusion_kind: the profile artifact kind holding a person's learned fusion
            (:func:`facefix.training.fusion_train.train_fusion`'s ``tensors`` and ``settings``);
            a person who has one is restored with it, others with the hand-made fusion.
            ``None`` (the default): the hand-made fusion for everyone.
        learned_from: the learned fusion is used for faces at least this blurred (512-px
            sigma), the hand-made one below (0: the learned one for all).
        fidelity: how the photo's own eye and mouth shapes are kept (:mod:`facefix.restorers.fidelity`;
            ``FidelitySettings(sigma=0)``: not at all).
    """

    def __init__(self, inner, store, settings: FusionSettings | None = None, *, fusion_kind: str | None = None,
                 learned_from: float = 0.0, fidelity: FidelitySettings | None = None):
        self.inner = inner
        self.store = store
        self.settings = settings or FusionSettings()
        self.fusion_kind = fusion_kind
        self.learned_from = learned_from
        self.fidelity = fidelity or FidelitySettings()
        self.engine = inner.engine
        self._cache: dict[str, Restorer] = {}

    def get(self, person: str | None) -> Restorer:
        if person is None:
            return self.inner.get(None)
        if person not in self._cache:
            profile = self.store.load(person)
            base = self.inner.get(person)
            guides = GuideSet.from_crops(self.store.load_crops(profile), person)
            if len(guides) == 0:
                log.warning("%s has no references to guide restoration; using %s alone", person, base.name)
                self._cache[person] = base
            else:
                fusion = None
                if self.fusion_kind is not None and self.fusion_kind in profile.artifacts:
                    from facefix.restorers.fusion_net import load_fusion

                    fusion = load_fusion(*self.store.load_artifact(person, self.fusion_kind))
                self._cache[person] = ReferenceRestorer(base, guides, self.settings,
                                                        name=f"{base.name}+{'learned' if fusion else 'refs'}",
                                                        fusion=fusion, learned_from=self.learned_from,
                                                        fidelity=self.fidelity)
        return self._cache[person]
