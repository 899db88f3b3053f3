"""Photos per minute for a folder of real photos, fast restorer on CPU.

    python benchmarks/bench_folder.py                     # 10 photos, 3 runs each way
    python benchmarks/bench_folder.py --runs 5 --copies 8 --json
    python benchmarks/bench_folder.py --large            # also one 48 MP scan: peak memory

The folder is built from photos that installed packages ship: insightface's
t1.jpg (a group photo, six faces), scikit-image's astronaut, and re-framed
variants of both (``facefix.photos.samples.make_variants``). The generic fast
restorer is the default-size network with untrained weights (its speed does
not depend on what it learned), in a throw-away FACEFIX_HOME; faces are found
with the dlib backend unless ``--backend`` says otherwise.

Two ways are timed, each the median of ``--runs`` runs, on the same folder:
``sequential`` (``restore_file`` per photo: read, detect, restore, write,
one after another) and ``pipelined`` (:class:`facefix.restore.runner.BatchRunner`:
reading, detection and writing overlap the restorer, faces of several photos
share a restorer call). Both restore on a worker thread (see ``in_thread``). Wall time on a shared machine partly measures the
neighbours; process CPU time is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path


def describe_machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return {"cpu": cpu, "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform()}


def build_folder(folder: Path, copies: int, large: bool) -> list[Path]:
    from PIL import Image

    from facefix.photos import samples

    folder.mkdir(parents=True, exist_ok=True)
    group, portrait = samples.insightface_image("t1.jpg"), samples.skimage_image("astronaut.png")
    shutil.copy(group, folder / "group.jpg")
    with Image.open(portrait) as im:
        im.convert("RGB").save(folder / "astronaut.jpg", quality=92)
    samples.make_variants(group, folder / "group_variants", count=copies // 2, seed=1)
    samples.make_variants(portrait, folder / "portrait_variants", count=copies - copies // 2, seed=2)
    if large:  # a 48 MP "scan": 8000x6000, the group photo enlarged
        with Image.open(group) as im:
            im.convert("RGB").resize((8000, 6000), Image.Resampling.LANCZOS).save(folder / "scan_48mp.jpg", quality=90)
    from facefix.enroll.select import scan_photos

    return scan_photos(folder)


def make_home(home: Path) -> None:
    os.environ["FACEFIX_HOME"] = str(home)
    from facefix.profiles import GenericStore
    from facefix.restorers.fast import FastConfig, FastRestorer

    tensors, settings = FastRestorer.build(FastConfig()).state()
    GenericStore().commit_artifact("fast", tensors, settings)


def _capture(fn, arg, errors: list) -> None:
    try:
        fn(arg)
    except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread
        errors.append(exc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs of each way (median reported)")
    parser.add_argument("--copies", type=int, default=8, help="variants added to the two originals")
    parser.add_argument("--backend", default="dlib", help="face backend: dlib or insightface")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--large", action="store_true", help="add a 48 MP scan (and report peak memory)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="facefix_bench_"))
    os.environ.setdefault("FACEFIX_OFFLINE", "1")
    try:
        make_home(work / "home")
        photos = build_folder(work / "photos", args.copies, args.large)
        from facefix.faces import get_analyzer
        from facefix.profiles import GenericStore, ProfileStore
        from facefix.providers.fast import FastRestorers
        from facefix.restore.matching import Gallery
        from facefix.restore.pipeline import RestoreOptions, restore_file
        from facefix.restore.plan import plan_inputs
        from facefix.restore.runner import BatchRunner

        analyzer = get_analyzer(args.backend)
        store = ProfileStore()
        gallery = Gallery.from_store(store, analyzer)
        restorers = FastRestorers(store, GenericStore(), device=args.device)
        options = RestoreOptions()
        restorers.get(None).restore(__import__("numpy").zeros((1, 512, 512, 3), "float32"))  # warm-up
        faces = {}

        def sequential(out: Path) -> None:
            faces["sequential"] = 0
            for job in plan_inputs([work / "photos"], output_dir=out, suffix="_r", ext="same", recursive=True).jobs:
                r = restore_file(job.source, job.target, analyzer=analyzer, gallery=gallery,
                                 restorers=restorers, options=options)
                faces["sequential"] += sum(f.skipped is None for f in r.faces)

        def pipelined(out: Path) -> None:
            jobs = plan_inputs([work / "photos"], output_dir=out, suffix="_r", ext="same", recursive=True).jobs
            failed = []
            faces["pipelined"] = 0

            def on_outcome(o):
                if o.status != "restored":
                    failed.append(o)
                else:
                    faces["pipelined"] += sum(f.skipped is None for f in o.result.faces)

            BatchRunner(analyzer=analyzer, gallery=gallery, providers=[restorers], options=options,
                        on_outcome=on_outcome).run(jobs)
            assert not failed, [o.error for o in failed]

        def in_thread(fn):
            # The pipelined run restores on a worker thread; on a worker thread
            # torch's CPU kernels run under different OpenMP settings than on
            # the main thread (measured up to 2-3x apart on a loaded 2-core
            # machine), so the sequential baseline runs on one too: the
            # comparison then measures overlap and batching only.
            def run(out: Path) -> None:
                errors = []
                t = threading.Thread(target=lambda: _capture(fn, out, errors))
                t.start()
                t.join()
                if errors:
                    raise errors[0]
            return run

        results = {}
        for name, fn in (("sequential", in_thread(sequential)), ("pipelined", pipelined)):
            walls, cpus = [], []
            for i in range(args.runs):
                out = work / f"out_{name}_{i}"
                w, c = time.perf_counter(), time.process_time()
                fn(out)
                walls.append(time.perf_counter() - w)
                cpus.append(time.process_time() - c)
                shutil.rmtree(out)
            wall = statistics.median(walls)
            results[name] = {"faces": faces[name], "median_s": round(wall, 2), "photos_per_min": round(len(photos) / wall * 60, 1),
                             "cpu_s": round(statistics.median(cpus), 2), "runs_s": [round(x, 2) for x in walls]}
        report = {"machine": describe_machine(), "photos": len(photos),
                  "backend": analyzer.name, "device": args.device, "restorer": "fast (default size, fp32 or bf16 as on CPU)",
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), **results}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    m = report["machine"]
    print(f"machine: {m['cpu']}, {m['cores_usable']} usable cores, torch {m['torch']} "
          f"({m['torch_threads']} threads), Python {m['python']}")
    print(f"folder: {report['photos']} real photos, backend {report['backend']}, device {report['device']}")
    for name in ("sequential", "pipelined"):
        r = report[name]
        print(f"{name:>10}: {r['photos_per_min']:6.1f} photos/min, {r['faces']} faces  (median {r['median_s']} s of {r['runs_s']}; "
              f"CPU {r['cpu_s']} s)")
    print(f"peak memory (RSS): {report['peak_rss_mb']} MB; load average at the end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
