"""Speed of the fast restorer on this machine: restore time per 512 face, training steps/s.

    python benchmarks/bench_fast.py                 # default model, both precisions
    python benchmarks/bench_fast.py --threads 2 --json

Prints wall-clock medians and process CPU time (on a busy shared machine wall
time mostly measures the neighbours; CPU time measures the work).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import numpy as np
import torch

from facefix.restorers.fast import FastConfig, FastNet, FastRestorer, cpu_has_bf16
from facefix.training.loop import PairSampler, TrainConfig, restoration_loss


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def bench_restore(config: FastConfig, precision: str, repeats: int, tta: bool) -> dict:
    restorer = FastRestorer.build(config, precision=precision, tta=tta)
    crops = np.random.default_rng(0).random((1, 512, 512, 3), dtype=np.float32)
    restorer.restore(crops)  # warm-up: oneDNN builds its kernels on the first call
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        restorer.restore(crops)
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return {"precision": precision, "tta": tta, "median_s": statistics.median(walls),
            "cpu_s": statistics.median(cpus)}


def bench_train(config: FastConfig, precision: str, steps: int) -> dict:
    train = TrainConfig(precision=precision)
    net = FastNet(config).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    faces = (np.random.default_rng(0).random((4, 512, 512, 3)) * 255).astype(np.uint8)
    sampler = PairSampler(faces, train, np.random.default_rng(0))
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    data_s, step_s = [], []
    for i in range(steps + 1):
        t = time.perf_counter()
        clean, bad, box = sampler.batch()
        t1 = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            pred = net(bad, box)
        loss = restoration_loss(pred, clean, train)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:  # first step warms up
            data_s.append(t1 - t)
            step_s.append(time.perf_counter() - t1)
    per = statistics.median(data_s) + statistics.median(step_s)
    return {"precision": precision, "batch": train.batch, "patch": train.patch,
            "data_s": statistics.median(data_s), "compute_s": statistics.median(step_s), "steps_per_s": 1.0 / per}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed restores per setting")
    parser.add_argument("--train-steps", type=int, default=5, help="timed training steps (0 = skip)")
    parser.add_argument("--precision", choices=["fp32", "bf16", "both"], default="both")
    parser.add_argument("--tta", action="store_true", help="also time flip ensembling")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = FastConfig()
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    result = {
        "machine": {"cpu": _cpu_name(), "threads": args.threads, "bf16_native": cpu_has_bf16(),
                    "torch": torch.__version__},
        "model": {"config": config.to_dict(), "params_m": sum(p.numel() for p in FastNet(config).parameters()) / 1e6},
        "restore": [bench_restore(config, p, args.repeats, False) for p in precisions],
        "train": [bench_train(config, p, args.train_steps) for p in precisions] if args.train_steps else [],
    }
    if args.tta:
        result["restore"] += [bench_restore(config, p, args.repeats, True) for p in precisions]
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return 0
    m = result["machine"]
    print(f"{m['cpu']}, {m['threads']} torch threads, native bf16: {m['bf16_native']}, torch {m['torch']}")
    print(f"model: {result['model']['params_m']:.2f} M parameters")
    for r in result["restore"]:
        print(f"restore 512 face  {r['precision']:>4}{' +flip' if r['tta'] else ''}: "
              f"{r['median_s'] * 1000:7.0f} ms wall, {r['cpu_s'] * 1000:7.0f} ms CPU (median)")
    for r in result["train"]:
        print(f"train batch {r['batch']}x{r['patch']}px {r['precision']:>4}: {r['steps_per_s']:.2f} steps/s "
              f"(data {r['data_s'] * 1000:.0f} ms + compute {r['compute_s'] * 1000:.0f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
