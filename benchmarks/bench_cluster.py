"""Photos per minute on one host: the local pipeline vs ``restore --cluster`` on Ray with 1 and 2 CPU workers.

    python benchmarks/bench_cluster.py                    # 26 photos, 2 runs each way
    python benchmarks/bench_cluster.py --runs 3 --copies 40 --json

What it answers: how much does Ray's overhead cost on one host? The folder,
the untrained default-size generic fast restorer and the dlib backend are
bench_folder.py's (the same ``build_folder`` and ``make_home``). Three ways,
each through the public API (``RestoreSession.open(request).run(...)``) into a
fresh output folder, the median of ``--runs``:

* ``local``: the one-host pipeline in this process (torch's default threads);
* ``ray-1``, ``ray-2``: :class:`facefix.cluster.executor.RayExecutor` with 1 and 2
  workers of 1 CPU each on a local Ray cluster of this machine's cores (started
  once, as ``--cluster local`` starts one, before the timings; its start-up is
  reported apart). A run's time includes its workers' start (a process each,
  torch, the models loaded), as a real run pays.

Every run's outputs are compared byte for byte with the local run's. The raw
numbers go to benchmarks/results/cluster-<cores>cpu.json (``--out``). On a
machine shared with other work the wall times partly measure the neighbours:
the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_folder import build_folder, describe_machine, make_home  # noqa: E402 - the same folder and home


def outputs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2, help="runs of each way (median reported)")
    parser.add_argument("--copies", type=int, default=24, help="variants added to bench_folder's two originals")
    parser.add_argument("--backend", default="dlib", help="face backend: dlib or insightface")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--out", type=Path, default=None, help="raw results file (default benchmarks/results/...)")
    args = parser.parse_args()

    for key, value in {"RAY_DISABLE_USAGE_STATS": "1", "RAY_USAGE_STATS_ENABLED": "0", "FACEFIX_OFFLINE": "1"}.items():
        os.environ.setdefault(key, value)
    import ray

    from facefix.cluster.connect import connect
    from facefix.cluster.executor import RayExecutor
    from facefix.restore.api import RestoreRequest, RestoreSession

    work = Path(tempfile.mkdtemp(prefix="facefix_bench_cluster_"))
    cores = len(os.sched_getaffinity(0))
    try:
        make_home(work / "home")
        photos = build_folder(work / "photos", args.copies, large=False)
        start = time.perf_counter()
        connect("local")  # as restore --cluster local starts one: this machine's cores, quietly
        ray_start_s = time.perf_counter() - start
        ways = {"local": None, "ray-1": RayExecutor("auto", workers=1), "ray-2": RayExecutor("auto", workers=2)}
        results, reference = {}, None
        for name, executor in ways.items():
            walls = []
            for i in range(args.runs):
                out = work / f"out_{name}_{i}"
                request = RestoreRequest(paths=(work / "photos",), output=out, recursive=True, backend=args.backend,
                                         devices=("cpu",))
                start = time.perf_counter()
                with RestoreSession.open(request) as session:
                    summary = session.run(executor=executor)
                walls.append(time.perf_counter() - start)
                assert summary.counts["restored"] == len(photos), summary.counts
                got = outputs(out)
                reference = reference if reference is not None else got
                assert got == reference, f"{name}: outputs differ from the local run's"
                shutil.rmtree(out)
            wall = statistics.median(walls)
            results[name] = {"median_s": round(wall, 2), "photos_per_min": round(len(photos) / wall * 60, 1),
                             "runs_s": [round(x, 2) for x in walls], "faces": summary.faces}
        for name in ("ray-1", "ray-2"):
            results[name]["vs_local"] = round(results[name]["photos_per_min"] / results["local"]["photos_per_min"], 2)
        report = {"machine": describe_machine(), "ray": ray.__version__, "photos": len(photos), "backend": args.backend,
                  "restorer": "fast (default size, untrained), CPU", "ray_start_s": round(ray_start_s, 2),
                  "load_average_end": round(os.getloadavg()[0], 1), **results}
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    path = args.out or Path(__file__).resolve().parent / "results" / f"cluster-{cores}cpu.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    m = report["machine"]
    print(f"machine: {m['cpu']}, {m['cores_usable']} usable cores, torch {m['torch']}, Ray {report['ray']}")
    print(f"folder: {report['photos']} real photos, backend {report['backend']}; Ray start-up {report['ray_start_s']} s "
          "(not in the times below)")
    for name in ways:
        r = report[name]
        ratio = f", {r['vs_local']}x local" if "vs_local" in r else ""
        print(f"{name:>6}: {r['photos_per_min']:6.1f} photos/min{ratio}  (median {r['median_s']} s of {r['runs_s']})")
    print(f"load average at the end: {report['load_average_end']}; raw numbers: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
