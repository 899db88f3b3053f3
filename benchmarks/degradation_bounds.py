"""What is left to gain on `facefix eval`'s held-out faces: two oracles per level.

For the exact faces, sizes, levels and seeds that ``eval_real_people.py`` (the code
of ``facefix eval``) scores, this prints the degraded input's PSNR and the PSNR of
two oracles that know the clean face:

* ``no JPEG``: the same degradation without the JPEG step (noise and blur kept);
* ``no noise, no JPEG``: blur and downscale only — what a restorer that removed
  all noise and every JPEG block perfectly, and recovered nothing more, would give.

A restorer gains beyond the second oracle only by undoing blur and downscale,
i.e. super-resolution from what the face still holds. The quality targets in
docs/fast_restorer.md are read against these numbers.

    python benchmarks/degradation_bounds.py [--seed 0 --seed 1] [--face-size 512 --face-size 256]

Needs the network once (PyPI) unless the photos are already in the cache, as
eval_real_people.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, action="append", help="eval seeds (default 0 and 1)")
    parser.add_argument("--face-size", type=int, action="append", help="face sizes (default 512 256 128)")
    parser.add_argument("--holdout", type=int, default=2)
    args = parser.parse_args()
    os.environ["FACEFIX_HOME"] = tempfile.mkdtemp(prefix="facefix-bounds-")
    sys.path.insert(0, str(Path(__file__).parent))
    from eval_real_people import enroll_people

    from facefix.common import paths
    from facefix.evaluate.run import _resize, degradation_seed, eval_training_sets
    from facefix.faces import get_analyzer
    from facefix.photos.samples import face_recognition_photos
    from facefix.quality.degrade import LEVELS, degrade_fixed, degrade_level
    from facefix.quality.metrics import psnr

    store = enroll_people(face_recognition_photos(paths.cache_dir() / "eval-photos"), get_analyzer("dlib"))
    print(f"{'seed':>4} {'face':>4} {'level':9} {'input':>7} {'no JPEG':>15} {'no noise, no JPEG':>18}")
    for seed in args.seed or (0, 1):
        sets = eval_training_sets("obama", store=store, holdout=args.holdout, seed=seed)
        faces = sets["crops"][sets["test_idx"]].astype(np.float32) / 255.0
        for size in args.face_size or (512, 256, 128):
            clean = _resize(faces, size)
            for li, (name, lv) in enumerate(LEVELS.items()):
                seeds = [degradation_seed(seed, li, i) for i in range(len(clean))]
                scores = np.array([
                    [psnr(degrade_level(c, name, seed=s), c),
                     psnr(degrade_fixed(c, lv.sigma, lv.scale, lv.noise, None, seed=s), c),
                     psnr(degrade_fixed(c, lv.sigma, lv.scale, 0.0, None, seed=s), c)]
                    for c, s in zip(clean, seeds)
                ]).mean(axis=0)
                gains = scores - scores[0]
                print(f"{seed:4d} {size:4d} {name:9} {scores[0]:7.2f} {scores[1]:7.2f} ({gains[1]:+.2f}) "
                      f"{scores[2]:9.2f} ({gains[2]:+.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
