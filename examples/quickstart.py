"""facefix quickstart: enroll a person and restore an old photo of them.

Needs no photos of your own. It uses scikit-image's astronaut portrait, which
the test extras install (`pip install scikit-image`):

1. builds a small reference set from it (re-framed, re-lit copies — a stand-in
   for "several photos of one person"; a real profile wants different photos),
2. makes an "old photo" of the same person: blurred, downscaled, noisy, JPEG,
3. `facefix enroll astronaut REFS` — picks and aligns the face in each
   reference and trains the person's restorer,
4. `facefix restore OLD --person astronaut --compare` — writes the restored
   photo and a side-by-side comparison.

Run:  python examples/quickstart.py [--out quickstart_out] [--budget 3]

Profiles go to OUT/home (FACEFIX_HOME) unless FACEFIX_HOME is already set,
so the demo leaves your real profiles alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("quickstart_out"), help="working folder")
    parser.add_argument("--budget", type=float, default=3.0, help="training minutes (default 3)")
    args = parser.parse_args()
    out: Path = args.out
    os.environ.setdefault("FACEFIX_HOME", str((out / "home").resolve()))

    from facefix import samples
    from facefix.cli.main import main as facefix
    from facefix.degrade import degrade_fixed
    from facefix.photos import read_photo

    portrait = samples.skimage_image("astronaut.png")
    refs = out / "references"
    samples.make_variants(portrait, refs, count=6, seed=0)
    print(f"1. reference photos: {refs}")

    old = degrade_fixed(read_photo(portrait).rgb_float(), sigma=2.0, scale=2.0, noise=8.0, jpeg=50, seed=0)
    exif = Image.Exif()
    exif[0x0132] = "1984:02:03 12:00:00"  # DateTime, carried into the restored file
    old_path = out / "old_photo.jpg"
    Image.fromarray((old * 255 + 0.5).astype(np.uint8)).save(old_path, quality=85, exif=exif)
    print(f"2. old photo: {old_path}")

    # The sample portrait is small (37 px between eyes and mouth), hence --min-face.
    print("3. facefix enroll astronaut ...")
    if facefix(["enroll", "astronaut", str(refs), "--add", "--min-face", "30", "--budget", str(args.budget)]) not in (0,):
        return 1
    print("4. facefix restore ...")
    restored = out / "restored"
    code = facefix(["restore", str(old_path), "--person", "astronaut", "--compare", "--output", str(restored)])
    if code == 0:
        print(f"done: {restored / 'old_photo_restored.jpg'} and {restored / 'old_photo_restored_compare.jpg'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
