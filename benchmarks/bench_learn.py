"""``facefix learn`` on a library vs the classical generic restorer, on held-out photos (split by photo).

The library: every photo of the given people but ``--holdout`` per person (the
held-out photos are the test set, never seen), plus "old" copies of some
library photos (shrunk to the test's face size and degraded there at eval's
levels, in turn) as the library's degraded faces that the training
degradations are matched to: a library whose old photos look like the test. ``facefix.learn`` trains the
generic restorer on it for ``--budget`` minutes in a fresh FACEFIX_HOME.

The held-out faces are scored as ``facefix eval`` scores them: the clean
aligned face shrunk to ``--face-size`` px, degraded there at each of
:data:`facefix.quality.degrade.LEVELS`, enlarged into the template as restore
does, restored, brought back and scored (PSNR, sharpness ratio: 1.0 = as sharp
as the truth) against the clean face.

Usage::

    python benchmarks/bench_learn.py --people /work/devdata/dmdnet/00075 ... [--budget 3] [--json OUT]

Each ``--people`` folder holds one person's photos (e.g. the DMDNet development
set's ids that may be used; read at run time, never copied into the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # a shared machine: one core (docs/fast_restorer.md, threads)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import cv2
import numpy as np

EXTS = {".png", ".jpg", ".jpeg"}


def build_library(people: list[Path], root: Path, holdout: int, old_per_person: int, face_size: int, seed: int):
    """Copy all but ``holdout`` photos per person into ``root``, plus degraded small copies; the held-out paths."""
    from facefix.quality.degrade import LEVELS, degrade_level

    rng = np.random.default_rng(seed)
    held = []
    for folder in people:
        photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTS)
        held += photos[-holdout:]
        kept = photos[:-holdout]
        (root / folder.name).mkdir(parents=True)
        for p in kept:
            shutil.copy(p, root / folder.name / p.name)
        for i, p in enumerate(kept[:old_per_person]):
            # An old photo: the face as small as the test's (--face-size), degraded at one of eval's levels there.
            rgb = cv2.imread(str(p))[..., ::-1].astype(np.float32) / 255
            small = cv2.resize(rgb, (face_size, face_size), interpolation=cv2.INTER_AREA)
            level = list(LEVELS)[i % len(LEVELS)]
            old = degrade_level(small, level, seed=int(rng.integers(1 << 31)))
            # saved as a JPEG at the level's quality, as an old scan in a library would be
            cv2.imwrite(str(root / folder.name / f"old_{p.stem}.jpg"), (old[..., ::-1] * 255 + 0.5).astype(np.uint8),
                        [cv2.IMWRITE_JPEG_QUALITY, LEVELS[level].jpeg])
    return held


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--people", type=Path, nargs="+", required=True)
    ap.add_argument("--holdout", type=int, default=2, help="photos per person held out as the test set")
    ap.add_argument("--old", type=int, default=3, help="degraded copies per person in the library")
    ap.add_argument("--budget", type=float, default=3.0, help="learn's training minutes")
    ap.add_argument("--face-size", type=int, default=256)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_learn_"))
    os.environ["FACEFIX_HOME"] = str(work / "home")
    os.environ["FACEFIX_OFFLINE"] = "1"
    from facefix.adapt.album import collect_album_faces
    from facefix.evaluate.run import degradation_seed
    from facefix.faces import get_analyzer
    from facefix.learn.api import LearnOptions, learn
    from facefix.profiles import GenericStore, ProfileStore
    from facefix.providers.fast import FastRestorers
    from facefix.quality.degrade import LEVELS, degrade_level, resize_like_alignment
    from facefix.quality.metrics import psnr, sharpness_ratio
    from facefix.restore.matching import Gallery
    from facefix.restorers.classical import ClassicalRestorer

    try:
        held = build_library(args.people, work / "library", args.holdout, args.old, args.face_size, seed=0)
        t0 = time.monotonic()
        result = learn(work / "library", LearnOptions(budget_minutes=args.budget, device="cpu"))
        learn_s = time.monotonic() - t0
        analyzer = get_analyzer("auto")
        faces, _ = collect_album_faces(held, analyzer, Gallery(analyzer.name, {}))
        learned = FastRestorers(ProfileStore(), GenericStore(), device="cpu").get(None)
        restorers = {"classical": ClassicalRestorer(), "learned": learned}
        size = args.face_size
        clean = np.stack([resize_like_alignment(f.crop.astype(np.float32) / 255, size, size) for f in faces])
        rows = {}
        for li, level in enumerate(LEVELS):
            bad = np.stack([degrade_level(c, level, seed=degradation_seed(0, li, i)) for i, c in enumerate(clean)])
            enlarged = np.stack([resize_like_alignment(b, 512, 512) for b in bad])
            outs = {"input": bad}
            for name, r in restorers.items():
                t = time.monotonic()
                outs[name] = np.stack([resize_like_alignment(o, size, size) for o in r.restore(enlarged)])
                rows[f"{level}/{name}/seconds_per_face"] = (time.monotonic() - t) / len(enlarged)
            for name, out in outs.items():
                rows[f"{level}/{name}"] = {"psnr": [psnr(o, c) for o, c in zip(out, clean)],
                                           "sharpness": [sharpness_ratio(o, c) for o, c in zip(out, clean)]}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"library: {result.photos} photos, {result.faces} faces, {result.targets} learned from, "
          f"{result.validation} validation; {result.degradation.describe()}")
    print(f"learn: {result.steps} steps, {result.seconds:.0f} s training, {learn_s:.0f} s in all")
    if result.after is not None:
        print(f"learn's validation PSNR: degraded {result.degraded.psnr:.2f}, classical {result.before.psnr:.2f}, "
              f"learned {result.after.psnr:.2f}")
    print(f"held-out: {len(faces)} faces from {len(held)} photos, scored at {args.face_size} px")
    print(f"{'level':9} {'method':10} {'PSNR':>7} {'sharpness':>9}")
    for level in LEVELS:
        for name in ("input", "classical", "learned"):
            r = rows[f"{level}/{name}"]
            print(f"{level:9} {name:10} {np.mean(r['psnr']):7.2f} {np.mean(r['sharpness']):9.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0],
                        "threads": os.environ["OMP_NUM_THREADS"]},
            "people": [p.name for p in args.people], "holdout": args.holdout, "budget_minutes": args.budget,
            "face_size": args.face_size, "held_out_faces": len(faces),
            "learn": {"photos": result.photos, "faces": result.faces, "targets": result.targets,
                      "validation": result.validation, "rejected": result.rejected, "steps": result.steps,
                      "seconds": result.seconds, "degradation": result.degradation.to_dict(),
                      "validation_scores": None if result.after is None else {
                          "degraded": result.degraded.to_dict(), "before": result.before.to_dict(),
                          "after": result.after.to_dict()}},
            "rows": rows,
        }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
