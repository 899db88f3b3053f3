"""Held-out evaluation on real photos of a real person: `facefix eval` on Barack Obama.

The only package on PyPI we found that ships several photos of one person is
the ``face_recognition`` 1.3.0 source distribution (its ``tests/test_images``:
five photos of Barack Obama and one of Joe Biden). This script downloads that
sdist with pip into facefix's cache (nothing is copied into the repository),
enrolls Obama (and Biden, so the generic model has another face) in a scratch
FACEFIX_HOME, and runs the evaluation: hold out 2 references, train the generic
and the person's model on the rest within the budget, degrade the held-out
photos at the moderate and severe levels, restore, score.

    python benchmarks/eval_real_people.py [--budget 10] [--holdout 2] [--json out.json]

Needs the network once (PyPI) unless the sdist is already in the cache.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def add_sample_people(store, analyzer) -> None:
    """Every face in the sample photos that installed packages ship, one profile each."""
    from facefix.common.files import file_sha256
    from facefix.faces import estimate_alignment, warp_face
    from facefix.photos import read_photo, samples

    sources = [samples.insightface_image("t1.jpg"), samples.insightface_image("Tom_Hanks_54745.png"),
               samples.skimage_image("astronaut.png")]
    count = 0
    for path in sources:
        photo = read_photo(path)
        for k, face in enumerate(analyzer.detect(photo.rgb8(), embed=True)):
            with store.edit(f"sample{count}", create=True) as editor:
                editor.add_reference(warp_face(photo.rgb8(), estimate_alignment(face.landmarks)), source=path,
                                     sha256=hashlib.sha256(f"{file_sha256(path)}-{k}".encode()).hexdigest(), embeddings={analyzer.name: face.embedding},
                                     box=face.box)
            count += 1
    print(f"sample people: {count} faces")


def enroll_photos(store, name: str, files, analyzer) -> int:
    """Enroll ``files`` as ``name`` (enroll's own selection, no training); how many were kept."""
    from facefix.enroll.select import select_references

    selection = select_references(files, analyzer, min_face=48)
    for r in selection.rejected:
        print(f"{name}: rejected {r.path.name}: {r.reason}")
    with store.edit(name, create=True) as editor:
        for c in selection.accepted:
            editor.add_reference(c.crop, source=c.path, sha256=c.sha256,
                                 embeddings={analyzer.name: c.face.embedding}, box=c.face.box)
    return len(selection.accepted)


def enroll_people(photos: Path, analyzer):
    """Obama (five photos) and Biden as profiles in the current FACEFIX_HOME; the store."""
    from facefix.profiles import ProfileStore

    store = ProfileStore()
    for name, files in (("obama", sorted(photos.glob("obama*.jpg"))), ("biden", [photos / "biden.jpg"])):
        print(f"{name}: {enroll_photos(store, name, files, analyzer)} references")
    return store


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=10.0, help="training minutes (both models)")
    parser.add_argument("--holdout", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--sheet", type=Path, help="also write the contact sheet (PNG) here")
    parser.add_argument("--lr-scratch", type=float, help="override TrainConfig.lr_scratch (experiments)")
    parser.add_argument("--lr-finetune", type=float, help="override TrainConfig.lr_finetune (experiments)")
    parser.add_argument("--train", action="append", default=[], metavar="KEY=VALUE",
                        help="override a TrainConfig field (experiments), e.g. fft_weight=0 or recipe=kuai")
    parser.add_argument("--face-size", type=int, action="append", help="score faces at this size, repeatable "
                        "(256: the issue's figures; default 512)")
    parser.add_argument("--generic-share", type=float, help="share of the budget for the generic model "
                        "(default: enroll's)")
    parser.add_argument("--position", type=int, help="override FastConfig.position (experiments; 0 = off)")
    parser.add_argument("--sample-people", action="store_true", help="also enroll every face in the photos "
                        "that insightface and scikit-image ship (t1.jpg, Tom Hanks, astronaut), one person each, "
                        "so that the generic model sees more than Obama and Biden")
    parser.add_argument("--export", type=Path, help="write the training sets to DIR/training.npz and stop "
                        "(train them elsewhere with train_eval_models.py)")
    parser.add_argument("--trained", type=Path, help="score the models train_eval_models.py wrote to DIR "
                        "instead of training here")
    args = parser.parse_args()

    from facefix.common import paths
    from facefix.photos import samples

    photos = samples.face_recognition_photos(paths.cache_dir() / "eval-photos")
    home = Path(tempfile.mkdtemp(prefix="facefix-eval-real-"))
    os.environ["FACEFIX_HOME"] = str(home)
    import torch

    from facefix.evaluate.run import evaluate_person
    from facefix.faces import get_analyzer

    if args.threads:
        torch.set_num_threads(args.threads)
    analyzer = get_analyzer("dlib")
    store = enroll_people(photos, analyzer)
    if args.sample_people:
        add_sample_people(store, analyzer)
    if args.export:
        from facefix.evaluate.run import eval_training_sets

        sets = eval_training_sets("obama", store=store, holdout=args.holdout, seed=args.seed)
        args.export.mkdir(parents=True, exist_ok=True)
        np.savez(args.export / "training.npz", generic=sets["generic"], person=sets["person"])
        print(f"wrote {args.export / 'training.npz'}: {len(sets['generic'])} generic, {len(sets['person'])} person")
        return 0
    trained = None
    if args.trained:
        from train_eval_models import load_parts

        trained = {m: load_parts(args.trained / m, name=f"fast/{m} (eval)") for m in ("generic", "person")}
        trained["steps"] = json.loads((args.trained / "steps.json").read_text())["steps"]
    from dataclasses import replace

    from facefix.training.loop import TrainConfig

    overrides = {k: v for k, v in (("lr_scratch", args.lr_scratch), ("lr_finetune", args.lr_finetune)) if v}
    for item in args.train:
        key, _, value = item.partition("=")
        if key.startswith("recipe."):  # one range of the recipe, e.g. recipe.scale=0.8,16
            from dataclasses import replace as with_field

            from facefix.quality.degrade import get_recipe

            base = overrides.get("recipe", "default")
            base = get_recipe(base) if isinstance(base, str) else base
            field_name = key.split(".", 1)[1]
            if field_name == "log_scale":
                overrides["recipe"] = with_field(base, log_scale=value.lower() in ("1", "true", "yes"))
            else:
                lo, hi = (float(v) for v in value.split(","))
                kind = int if field_name == "jpeg" else float
                overrides["recipe"] = with_field(base, **{field_name: (kind(lo), kind(hi))})
        else:
            overrides[key] = value if key == "recipe" else float(value)
    train_config = replace(TrainConfig(), **overrides) if overrides else None
    from facefix.restorers.fast import FastConfig

    model_config = FastConfig(position=args.position) if args.position is not None else None
    start = time.perf_counter()
    report = evaluate_person("obama", store=store, analyzer=analyzer, holdout=args.holdout,
                             budget_s=args.budget * 60, seed=args.seed, trained=trained,
                             train_config=train_config, model_config=model_config, face_sizes=args.face_size,
                             generic_share=args.generic_share)
    seconds = time.perf_counter() - start
    print(f"\nheld out: {', '.join(Path(p).name for p in report.held_out)}; "
          f"trained on {report.train_references} + {report.other_references} other; "
          f"steps {report.steps}; {seconds:.0f} s on {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads")
    print(f"{'face':>4} {'level':9} {'method':9} {'PSNR':>7} {'SSIM':>6} {'identity':>9} {'distance':>9}")
    for r in report.rows:
        print(f"{r.face_size:4d} {r.level:9} {r.method:9} {r.psnr:7.2f} {r.ssim:6.3f} {r.identity:9.3f} "
              f"{r.distance:9.3f}")
    if args.sheet:
        from PIL import Image

        Image.fromarray(report.sheet_u8()).save(args.sheet)
    if args.json:
        args.json.write_text(json.dumps({**report.to_dict(), "seconds": seconds}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
