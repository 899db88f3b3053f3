"""facefix quickstart: enroll a real person from two photos, restore a third, degraded one.

Needs no photos of your own. It uses the official White House portraits of
Barack Obama that ship in the ``face_recognition`` 1.3.0 source distribution
(public domain, works of the US federal government), downloaded once from the
package index with pip into facefix's cache:

1. references: two *distinct* photos of him (``obama.jpg``, ``obama3.jpg``);
2. an "old photo": a third photo (``obama2.jpg``, never shown to facefix as
   a reference) made small, blurred, noisy and JPEG-compressed, as a scanned
   print of a small face looks;
3. ``facefix.enroll("obama", REFS)`` (the API ``facefix enroll`` calls) -- picks
   and aligns his face in each photo and trains his restorer (``--budget``
   minutes; 0 skips training: the weight-free generic restorer then pre-cleans);
4. ``facefix.restore_paths([OLD], options=RestoreOptions(person="obama"))``
   (``facefix restore OLD --person obama``) -- his faces are pre-cleaned, then
   given detail from his references where they agree with the face;
5. a labelled comparison (input | restored | his references) of the face, and
   the numbers against the photo before it was degraded.

Run:  python examples/quickstart.py [--out quickstart_out] [--budget 2]

Profiles go to OUT/home (FACEFIX_HOME) unless FACEFIX_HOME is already set,
so the demo leaves your real profiles alone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def degrade_photo(rgb: np.ndarray, *, shrink: float = 5.0, seed: int = 0) -> np.ndarray:
    """A small, soft, noisy copy, as an old print scanned at low resolution (JPEG comes when saved)."""
    from facefix.quality.degrade import degrade_fixed, resize_like_alignment

    h, w = rgb.shape[:2]
    small = resize_like_alignment(rgb, round(w / shrink), round(h / shrink))
    return degrade_fixed(small, sigma=1.2, scale=1.0, noise=5.0, jpeg=None, seed=seed)


def label(img: np.ndarray, text: str) -> np.ndarray:
    out = np.concatenate([np.full((30, img.shape[1], 3), 255, np.uint8), img], axis=0)
    cv2.putText(out, text, (8, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("quickstart_out"), help="working folder")
    parser.add_argument("--budget", type=float, default=2.0, help="training minutes (default 2; 0: no training)")
    args = parser.parse_args()
    out: Path = args.out
    os.environ.setdefault("FACEFIX_HOME", str((out / "home").resolve()))

    import facefix
    from facefix.faces import estimate_alignment, get_analyzer, warp_face
    from facefix.photos import read_photo, samples
    from facefix.profiles import ProfileStore
    from facefix.quality.metrics import face_sharpness, psnr

    photos = samples.face_recognition_photos()
    refs = out / "references"
    refs.mkdir(parents=True, exist_ok=True)
    for name in ("obama.jpg", "obama3.jpg"):
        shutil.copy2(photos / name, refs / name)
    print(f"1. his reference photos: {refs}")

    clean = read_photo(photos / "obama2.jpg").rgb_float()
    old = degrade_photo(clean)
    exif = Image.Exif()
    exif[0x0132] = "1984:02:03 12:00:00"  # DateTime, carried into the restored file
    old_path = out / "old_photo.jpg"
    Image.fromarray((old * 255 + 0.5).astype(np.uint8)).save(old_path, quality=50, exif=exif)
    print(f"2. old photo ({old.shape[1]}x{old.shape[0]} px, made from a photo he was not enrolled with): {old_path}")

    print("3. facefix.enroll('obama', ...)")
    enrolled = facefix.enroll(
        "obama", refs,
        facefix.EnrollOptions(add=True, min_face=40, train=args.budget > 0, budget_minutes=max(args.budget, 0)),
        facefix.EnrollCallbacks(on_note=print, on_warning=print, on_info=print,
                                on_stage=lambda stage, _: print(f"   training {stage} ...")))
    print(f"   {enrolled.references} references" + "".join(
        f"; {r.stage}: {r.steps} steps in {r.seconds:.0f} s" for r in enrolled.training))
    print("4. facefix.restore_paths(...)")
    restored_dir = out / "restored"
    summary = facefix.restore_paths([old_path], output=restored_dir, ext="png", force=True,
                                    options=facefix.RestoreOptions(person="obama"))
    if summary.counts["failed"]:
        print("\n".join(summary.failures))
        return 1
    restored = read_photo(restored_dir / "old_photo_restored.png").rgb_float()

    # 5. the face, before and after, beside his references; scored against the photo before degradation
    analyzer = get_analyzer("dlib")
    face = analyzer.detect((clean * 255).astype(np.uint8), embed=False)[0]
    truth = np.clip(warp_face(clean, estimate_alignment(face.landmarks, 512)), 0, 1)
    small = estimate_alignment(face.landmarks / clean.shape[1] * old.shape[1], 512)
    crops = {"input": warp_face(np.asarray(read_photo(old_path).rgb_float()), small),
             "restored": warp_face(restored, small)}
    store = ProfileStore()
    references = store.load_crops(store.load("obama"))
    tile = 320

    def show(img: np.ndarray) -> np.ndarray:
        return cv2.resize((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), (tile, tile),
                          interpolation=cv2.INTER_AREA)

    panels = [label(show(crops["input"]), "input (old photo)"), label(show(crops["restored"]), "restored"),
              label(show(truth), "the photo before it was degraded")]
    refs_col = np.concatenate([cv2.resize(r, (tile // 2, tile // 2), interpolation=cv2.INTER_AREA)
                               for r in references[:2]], axis=0)
    panels.append(label(np.pad(refs_col, ((0, tile - refs_col.shape[0]), (0, 0), (0, 0)), constant_values=255),
                        "his references"))
    gap = np.full((tile + 30, 6, 3), 255, np.uint8)
    sheet = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
    compare = restored_dir / "old_photo_compare.png"
    Image.fromarray(sheet).save(compare)
    size = face.eye_mouth / clean.shape[1] * old.shape[1]
    print(f"5. the face ({size:.0f} px between eyes and mouth in the old photo), against the photo before "
          f"it was degraded, at the face's own size:")
    side = int(round(512 * size / face.eye_mouth * 1.0))
    down = {k: cv2.resize(v, (side, side), interpolation=cv2.INTER_AREA) for k, v in {**crops, "truth": truth}.items()}
    embeddings = analyzer.embed_aligned(np.stack([(np.clip(c, 0, 1) * 255 + 0.5).astype(np.uint8)
                                                  for c in (truth, crops["input"], crops["restored"])]))
    for i, key in enumerate(("input", "restored"), start=1):
        print(f"   {key:9s} PSNR {psnr(down[key], down['truth']):5.2f} dB, "
              f"sharpness {face_sharpness(crops[key]) / face_sharpness(truth):.2f} of the truth's, "
              f"identity distance {np.linalg.norm(embeddings[i] - embeddings[0]):.3f} (dlib; lower is truer)")
    print(f"done: {restored_dir / 'old_photo_restored.png'} and {compare}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
