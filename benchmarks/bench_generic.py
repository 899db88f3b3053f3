"""Quality and speed of the generic restorers on aligned clean faces: input vs classical (vs a trained CNN).

Each clean 512 face is scored at two sizes, as ``facefix eval`` does: at 512
(degraded in the template) and at 256 (area-shrunk, degraded there, enlarged
bicubically into the template as restore does, restored, brought back and
scored at 256). Levels are :data:`facefix.quality.degrade.LEVELS`. Per face: PSNR and
SSIM against the clean face, and the sharpness ratio (variance of the
Laplacian of luma inside the face's ellipse, output / degraded input).

Usage::

    python benchmarks/bench_generic.py --faces DIR [--faces DIR2 ...] [--json OUT]
        [--generic HOME]   # also score the trained generic CNN of a FACEFIX_HOME
        [--deblur-cnn]     # and that CNN followed by the classical deblur step

DIR holds aligned 512x512 faces (PNG/JPEG), e.g. the crops that
``facefix restore PHOTO --save-faces`` writes (``*_before.png``) from clean photos.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # a shared machine: one core per benchmark

import cv2
import numpy as np

from facefix.quality.degrade import (
    LEVELS,
    degrade_level,
    resize_like_alignment,
    to_luma,
)
from facefix.quality.metrics import psnr, ssim

SIZES = (512, 256)
EXTS = {".png", ".jpg", ".jpeg"}


def face_ellipse(size: int) -> np.ndarray:
    """Where the face is in an aligned crop of ``size`` px (the template's eyes, nose and mouth)."""
    mask = np.zeros((size, size), np.uint8)
    k = size / 512.0
    cv2.ellipse(mask, (round(256 * k), round(290 * k)), (round(140 * k), round(180 * k)), 0, 0, 360, 1, -1)
    return mask.astype(bool)


def sharpness(img: np.ndarray) -> float:
    """Variance of the Laplacian of luma inside the face."""
    lap = cv2.Laplacian(to_luma(img).astype(np.float64), cv2.CV_64F, ksize=1)
    return float(lap[face_ellipse(img.shape[0])].var())


def load_faces(folders: list[Path], limit: int | None) -> list[tuple[str, np.ndarray]]:
    """Aligned faces as float32 RGB 512x512 (resampled when a file is another size)."""
    faces = []
    for folder in folders:
        for file in sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTS):
            bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if bgr is None:
                raise SystemExit(f"cannot read {file}; remove it from {folder} or fix it")
            rgb = bgr[..., ::-1].astype(np.float32) / 255.0
            faces.append((str(file.relative_to(folder)), resize_like_alignment(rgb, 512, 512)))
    return faces[:limit] if limit else faces


class DeblurAfter:
    """A restorer followed by the classical restorer's guarded deblur step only (no denoising)."""

    def __init__(self, inner):
        from facefix.restorers.classical import ClassicalRestorer

        self.inner = inner
        self.name = f"{inner.name}+deblur"
        self.classical = ClassicalRestorer()

    def restore(self, crops: np.ndarray) -> np.ndarray:
        return np.stack([self.classical.deblur_one(c) for c in self.inner.restore(crops)])


def methods(generic_home: Path | None, deblur_cnn: bool) -> dict:
    from facefix.restorers.classical import ClassicalRestorer

    found = {"classical": ClassicalRestorer()}
    if generic_home is not None:
        from facefix.profiles import GenericStore
        from facefix.profiles.kinds import FAST_KIND
        from facefix.restorers.fast import FastRestorer

        tensors, settings = GenericStore(generic_home / "generic").load_artifact(FAST_KIND)
        found["cnn"] = FastRestorer.load(tensors, settings, name="fast/generic", device="cpu")
        if deblur_cnn:
            found["cnn+deblur"] = DeblurAfter(found["cnn"])
    return found


def run(faces, restorers) -> list[dict]:
    rows = []
    for li, level in enumerate(LEVELS):
        for size in SIZES:
            for fi, (name, face) in enumerate(faces):
                clean = resize_like_alignment(face, size, size)
                bad = degrade_level(clean, level, seed=1000 * li + fi)
                big = resize_like_alignment(bad, 512, 512)
                row = {"face": name, "level": level, "size": size, "input": {
                    "psnr": psnr(bad, clean), "ssim": ssim(bad, clean), "sharpness": sharpness(bad)}}
                for method, restorer in restorers.items():
                    t0 = time.perf_counter()
                    out = restorer.restore(big[None])[0]
                    ms = 1000.0 * (time.perf_counter() - t0)
                    out = resize_like_alignment(out, size, size)
                    row[method] = {"psnr": psnr(out, clean), "ssim": ssim(out, clean),
                                   "sharpness_ratio": sharpness(out) / max(row["input"]["sharpness"], 1e-12),
                                   "ms": ms}
                rows.append(row)
    return rows


def summarise(rows: list[dict], restorers) -> None:
    print(f"{'level':9s} {'size':>4s} {'method':12s} {'PSNR med/mean':>15s} {'dPSNR med':>9s} "
          f"{'SSIM med':>8s} {'sharp x med/mean':>16s} {'ms/face':>8s}")
    for level in LEVELS:
        for size in SIZES:
            sel = [r for r in rows if r["level"] == level and r["size"] == size]
            if not sel:
                continue
            p = [r["input"]["psnr"] for r in sel]
            print(f"{level:9s} {size:4d} {'input':12s} {np.median(p):7.2f}/{np.mean(p):6.2f} {'':>9s} "
                  f"{np.median([r['input']['ssim'] for r in sel]):8.4f}")
            for m in restorers:
                q = [r[m]["psnr"] for r in sel]
                d = [r[m]["psnr"] - r["input"]["psnr"] for r in sel]
                s = [r[m]["sharpness_ratio"] for r in sel]
                print(f"{'':9s} {'':4s} {m:12s} {np.median(q):7.2f}/{np.mean(q):6.2f} {np.median(d):+9.2f} "
                      f"{np.median([r[m]['ssim'] for r in sel]):8.4f} {np.median(s):7.2f}/{np.mean(s):7.2f} "
                      f"{np.median([r[m]['ms'] for r in sel]):8.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, action="append", help="folder of aligned clean 512 faces (repeatable)")
    parser.add_argument("--json", type=Path, help="write the raw per-face results here")
    parser.add_argument("--limit", type=int, help="use at most this many faces")
    parser.add_argument("--generic", type=Path, help="a FACEFIX_HOME whose trained generic CNN is scored too")
    parser.add_argument("--deblur-cnn", action="store_true", help="also score the CNN followed by the classical deblur")
    args = parser.parse_args(argv)
    folders = [f for f in (args.faces or []) if f.is_dir()]
    if not folders:
        print("no faces to score: pass --faces DIR, a folder of aligned 512x512 clean faces (for example the "
              "'*_before.png' crops of 'facefix restore PHOTO --save-faces' run on sharp photos)")
        return 0
    cv2.setNumThreads(1)
    faces = load_faces(folders, args.limit)
    restorers = methods(args.generic, args.deblur_cnn)
    print(f"{len(faces)} faces from {', '.join(map(str, folders))}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    rows = run(faces, restorers)
    summarise(rows, restorers)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {"faces": len(faces), "folders": [str(f) for f in folders],
                "levels": {k: vars(v) for k, v in LEVELS.items()}, "sizes": list(SIZES), "methods": list(restorers), "cpus": os.cpu_count()}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
