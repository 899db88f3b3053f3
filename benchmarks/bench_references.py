"""Reference-guided restoration measured on people with many distinct photos.

For each person (a folder of their photos): enroll them in a scratch
FACEFIX_HOME, hold out ``--holdout`` distinct photos, degrade the held-out
faces at the moderate and severe levels at ``--face-size`` px (as small faces
in photos are), restore them and score against the originals with
``facefix eval``'s own code (:func:`facefix.evaluate.run.evaluate_person`): PSNR,
SSIM, identity distance (dlib), sharpness ratio and expression error.

Methods:
- always: ``classical`` (the weight-free generic restorer) and
  ``classical+refs`` (the same, then the person's kept references);
- ``--budget M``: also what ``facefix eval`` trains in M minutes per person
  (``generic``, ``person``, ``person+refs``: the person's model then their kept
  references, as restore does). With ``--models DIR`` the trained models are
  kept there (per person) and reused by later runs with the same split, so the
  fusion can be measured again without training again.
- ``--learned S``: the learned fusion, trained in S seconds per person (pairs +
  training, :func:`facefix.training.fusion_train.train_fusion`) from the kept
  references only, with the pre-cleaner it is then used on (``--learned-base``:
  the person's model, which needs ``--budget``, or the classical one):
  ``<base>+learned`` (it alone) and ``<base>+hybrid`` (the hand-made fusion below
  ``--learned-from`` blur, the learned one from it).

Development data: the DMDNet test set's aligned reference photos (CC BY-NC-SA,
non-commercial research only; never copy its images into this repository):

    # with the repository cloned or fetched somewhere:
    mkdir -p dmdnet && for id in 00075 00086 00089 00119 00121 00146; do
      mkdir -p dmdnet/$id && git -C DMDNet archive HEAD \\
        TestExamples/TestSpecificRestoration/RefsImg/$id | tar -x --strip-components=4 -C dmdnet/$id; done
    python benchmarks/bench_references.py --people dmdnet --json out.json

Without ``--people`` (or with an empty folder) it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: The development ids (tune and measure on these); others are held back to judge the result.
DEV_IDS = ("00075", "00086", "00089", "00119", "00121", "00146")


def trained_models(name: str, sets: dict, args):
    """``facefix eval``'s two models for this person's split: loaded from ``--models`` or trained."""
    import hashlib

    from facefix.enroll.fast import GENERIC_SHARE_NEW
    from facefix.restorers.fast import FastRestorer
    from facefix.training.fast import train_fast

    split = hashlib.sha256(np.ascontiguousarray(sets["crops"][sets["test_idx"]]).tobytes()).hexdigest()[:12]
    folder = (args.models / f"{name}-{split}-{args.budget:g}min") if args.models else None
    if folder is not None and (folder / "person.safetensors").is_file():
        steps = json.loads((folder / "steps.json").read_text())
        return (FastRestorer.from_file(folder / "generic.safetensors", name="fast/generic (eval)"),
                FastRestorer.from_file(folder / "person.safetensors", name=f"fast/{name} (eval)"), steps)
    budget_s = args.budget * 60
    generic = train_fast(sets["generic"], budget_s=budget_s * GENERIC_SHARE_NEW, seed=args.seed, device="cpu")
    person = train_fast(sets["person"], init=generic.tensors, budget_s=budget_s * (1 - GENERIC_SHARE_NEW),
                        seed=args.seed + 1, device="cpu")
    steps = {"generic": generic.steps, "person": person.steps}
    restorers = (generic.restorer(name="fast/generic (eval)"), person.restorer(name=f"fast/{name} (eval)"))
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        restorers[0].save(folder / "generic.safetensors")
        restorers[1].save(folder / "person.safetensors")
        (folder / "steps.json").write_text(json.dumps(steps))
    print(f"{name}: trained {steps}")
    return (*restorers, steps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=Path, help="a folder of people, one sub-folder of photos each")
    parser.add_argument("--ids", default=",".join(DEV_IDS), help="which sub-folders (comma-separated)")
    parser.add_argument("--holdout", type=int, default=3)
    parser.add_argument("--face-size", type=int, default=256)
    parser.add_argument("--budget", type=float, default=0.0, help="training minutes per person (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--models", type=Path, help="keep/reuse the trained models here (outside the repository)")
    parser.add_argument("--learned", type=float, default=0.0,
                        help="seconds per person to learn the reference fusion from the kept references "
                        "(pairs + training; 0: none). Adds <base>+learned (the learned fusion) and "
                        "<base>+hybrid (hand-made below --learned-from, learned from it)")
    parser.add_argument("--learned-from", type=float, default=None,
                        help="blur (512-px sigma) from which <base>+hybrid uses the learned fusion "
                        "(default: what restore uses, facefix.restorers.reference.LEARNED_FROM)")
    parser.add_argument("--learned-base", choices=("person", "classical", "both"), default="person",
                        help="which pre-cleaner the learned fusion is trained with and used on (classical: "
                        "the weight-free one, which has not memorised the references; works without --budget)")
    parser.add_argument("--learned-steps", type=int, default=None,
                        help="stop the fusion's training after this many steps (compare variants on a busy machine)")
    parser.add_argument("--generic-refs", action="store_true",
                        help="also the generic model as the references' pre-cleaner (hand-made fusion)")
    parser.add_argument("--fusions", type=Path, help="keep/reuse the learned fusions here (outside the repository; "
                        "only valid with the same split, base and --models)")
    parser.add_argument("--cache", type=Path, help="keep the fusion's training pairs here (outside the repository)")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--sheets", type=Path, help="write each person's contact sheet into this folder "
                        "(keep it outside the repository: the faces are not ours to publish)")
    args = parser.parse_args()
    if args.learned_from is None:
        from facefix.restorers.reference import LEARNED_FROM

        args.learned_from = LEARNED_FROM
    if args.people is None or not args.people.is_dir():
        print("no --people folder given (or not found): nothing to measure. See this script's docstring "
              "for how to get the development photos.")
        return 0
    os.environ["FACEFIX_HOME"] = tempfile.mkdtemp(prefix="facefix-bench-refs-")
    import cv2
    import torch

    from facefix.evaluate.run import eval_training_sets, evaluate_person
    from facefix.faces import get_analyzer
    from facefix.profiles import ProfileStore
    from facefix.restorers.classical import ClassicalConfig, ClassicalRestorer
    from facefix.restorers.fidelity import FidelitySettings
    from facefix.restorers.guides import GuideSet
    from facefix.restorers.reference import FusionSettings, ReferenceRestorer

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    analyzer = get_analyzer("dlib")
    store = ProfileStore()
    ids = [i for i in args.ids.split(",") if (args.people / i).is_dir()]
    sys.path.insert(0, str(Path(__file__).parent))
    from eval_real_people import enroll_photos

    for name in ids:
        files = sorted(p for p in (args.people / name).iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
        print(f"{name}: {enroll_photos(store, name, files, analyzer)} references")
    # FACEFIX_FUSION / FACEFIX_FIDELITY / FACEFIX_CLASSICAL / FACEFIX_FUSION_TRAIN: JSON overrides of
    # FusionSettings / FidelitySettings / ClassicalConfig / FusionTrainConfig (trials)
    fusion = FusionSettings(**json.loads(os.environ.get("FACEFIX_FUSION", "{}")))
    fidelity = FidelitySettings(**json.loads(os.environ.get("FACEFIX_FIDELITY", "{}")))
    reports, timings = [], []
    learned_info, learned_timings = {}, []
    start = time.perf_counter()
    for name in ids:
        sets = eval_training_sets(name, store=store, holdout=args.holdout, seed=args.seed)
        guides = GuideSet.from_crops(sets["crops"][sets["train_idx"]], name)
        classical = ClassicalRestorer(ClassicalConfig(**json.loads(os.environ.get("FACEFIX_CLASSICAL", "{}"))))
        refs = ReferenceRestorer(classical, guides, fusion, fidelity=fidelity, name="classical+refs")
        methods, steps = {}, {}
        if args.budget > 0:
            generic, person, steps = trained_models(name, sets, args)
            methods = {"generic": generic, "person": person,
                       "person+refs": ReferenceRestorer(person, guides, fusion, fidelity=fidelity, name="person+refs")}
            if args.generic_refs:
                methods["generic+refs"] = ReferenceRestorer(generic, guides, fusion, fidelity=fidelity, name="generic+refs")
        bases = {"person": methods.get("person"), "classical": classical}
        chosen = ("person", "classical") if args.learned_base == "both" else (args.learned_base,)
        learned_methods = {}
        for label in chosen if args.learned > 0 else ():
            if bases[label] is None:
                continue  # the person's model needs --budget
            from facefix.training.fusion_train import train_fusion

            steps_tag = f"-{args.learned_steps}steps" if args.learned_steps else ""
            kept = (args.fusions / f"{name}-{label}-{args.learned:g}s{steps_tag}.safetensors") if args.fusions else None
            if kept is not None and kept.is_file():
                weights = kept.read_bytes()
                learned_info[f"{name}/{label}"] = {"reused": str(kept)}
            else:
                t0 = time.perf_counter()
                from facefix.training.fusion_train import FusionTrainConfig

                train_config = FusionTrainConfig(**json.loads(os.environ.get("FACEFIX_FUSION_TRAIN", "{}")))
                learned = train_fusion(sets["crops"][sets["train_idx"]], bases[label], budget_s=args.learned,
                                       seed=args.seed, settings=fusion, config=train_config, cache_dir=args.cache,
                                       max_steps=args.learned_steps)
                weights = learned.weights
                learned_info[f"{name}/{label}"] = {"steps": learned.steps, "pairs": learned.pairs,
                                                   "seconds": round(time.perf_counter() - t0, 1)}
                if kept is not None:
                    kept.parent.mkdir(parents=True, exist_ok=True)
                    kept.write_bytes(weights)
            print(f"{name}: learned fusion on {label} {learned_info[f'{name}/{label}']}")
            learned_methods[f"{label}+learned"] = ReferenceRestorer(bases[label], guides, fusion,
                                                                    fidelity=fidelity, name=f"{label}+learned", fusion=weights)
            learned_methods[f"{label}+hybrid"] = ReferenceRestorer(bases[label], guides, fusion,
                                                                   fidelity=fidelity, name=f"{label}+hybrid", fusion=weights,
                                                                   learned_from=args.learned_from)
        methods.update({"classical": classical, "classical+refs": refs})
        methods.update(learned_methods)
        report = evaluate_person(name, store=store, analyzer=analyzer, holdout=args.holdout, seed=args.seed,
                                 face_sizes=[args.face_size], trained={**methods, "steps": steps})
        rows = report.rows
        # time one face through the whole person's restorer: base + references
        probe = (sets["crops"][sets["test_idx"][0]].astype(np.float32) / 255.0)[None]
        timed = methods.get("person+refs", refs)
        timed.restore(probe)  # warm (first call loads the landmark model)
        t0 = time.perf_counter()
        timed.restore(probe)
        timings.append(time.perf_counter() - t0)
        timed_learned = methods.get("person+learned") or methods.get("classical+learned")
        if timed_learned is not None:
            timed_learned.restore(probe)
            t0 = time.perf_counter()
            timed_learned.restore(probe)
            learned_timings.append(time.perf_counter() - t0)
        reports.append({"person": name, "held_out": [Path(p).name for p in report.held_out],
                        "train_references": report.train_references, "rows": [r.__dict__ for r in rows]})
        if args.sheets:
            from PIL import Image

            args.sheets.mkdir(parents=True, exist_ok=True)
            Image.fromarray(report.sheet_u8()).save(args.sheets / f"{name}.png")
        print(f"{name}: done ({time.perf_counter() - start:.0f} s)")
    seconds = time.perf_counter() - start
    methods = list(dict.fromkeys(r["method"] for rep in reports for r in rep["rows"]))
    summary = []
    print(f"\n{len(ids)} people, {args.holdout} held-out photos each, {args.face_size}-px faces; "
          f"{platform.processor() or platform.machine()}, {args.threads} thread(s); mean over faces")
    print(f"{'level':9} {'method':15} {'PSNR':>7} {'dPSNR':>6} {'SSIM':>6} {'distance':>9} {'vs input':>8} "
          f"{'sharpness':>9} {'expression':>10}")
    for level in ("moderate", "severe"):
        base = None
        for method in methods:
            rows = [r for rep in reports for r in rep["rows"] if r["level"] == level and r["method"] == method]
            n = sum(r["faces"] for r in rows)
            mean = {k: sum(r[k] * r["faces"] for r in rows) / n
                    for k in ("psnr", "ssim", "distance", "sharpness", "expression")}
            base = base or mean
            summary.append({"level": level, "method": method, "faces": n, **mean})
            print(f"{level:9} {method:15} {mean['psnr']:7.2f} {mean['psnr'] - base['psnr']:+6.2f} "
                  f"{mean['ssim']:6.3f} {mean['distance']:9.3f} {mean['distance'] / base['distance'] - 1:+8.1%} "
                  f"{mean['sharpness']:9.3f} {mean['expression']:10.3f}")
    print(f"person's restorer with references: median {np.median(timings):.2f} s per face; "
          f"total {seconds:.0f} s")
    if learned_timings:
        print(f"with the learned fusion: median {np.median(learned_timings):.2f} s per face")
    if args.json:
        args.json.write_text(json.dumps({"people": ids, "holdout": args.holdout, "face_size": args.face_size,
                                         "budget_min": args.budget, "seed": args.seed, "threads": args.threads,
                                         "machine": platform.processor() or platform.machine(),
                                         "seconds_per_face_refs": timings, "summary": summary,
                                         "learned_budget_s": args.learned, "learned_from": args.learned_from,
                                         "learned": learned_info, "seconds_per_face_learned": learned_timings,
                                         "reports": reports}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
