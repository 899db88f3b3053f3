"""Speed of album adaptation: pseudo-targets per minute and fine-tuning time.

    python benchmarks/bench_adapt.py                    # GPU if present, else the CPU runs below
    python benchmarks/bench_adapt.py --threads 1 --json
    python benchmarks/bench_adapt.py --cpu-real-estimate   # CPU: time one real-size step, extrapolate

Real size is SD 1.5 (UNet 860 M, VAE at 512 px) with random weights -- the speed
of random weights is the speed of real ones -- and the shipped fast restorer.
That needs a GPU. Without one it says so and measures what a CPU can:

* ``tiny-set``: the tests' tiny diffusion set (32 px) -- the pipeline's own
  overhead (fast restorer at 512, pins, cache I/O), not diffusion cost;
* ``cpu-real-estimate``: one real-size UNet call, VAE decode and encode, and the
  per-face total they imply for the chosen strength/steps (minutes);
* fine-tuning steps/s for the shipped and the tiny fast restorer.

Every row says which device and which size it measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from facefix.restorers.fast import TINY_CONFIG, FastConfig, FastRestorer  # noqa: E402
from facefix.training.finetune import FinetuneConfig, finetune_on_pairs  # noqa: E402
from facefix.training.loop import TrainConfig  # noqa: E402
from facefix.training.pseudo_targets import (  # noqa: E402
    PseudoTargetConfig,
    PseudoTargetSampler,
    generate_pseudo_targets,
)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def album(n: int) -> np.ndarray:
    return (np.random.default_rng(0).uniform(0, 1, (n, 512, 512, 3)) * 255).astype(np.uint8)


def bench_pseudo_targets(parts, label: str, device: str, n: int, batch: int, config: PseudoTargetConfig) -> dict:
    cfg = PseudoTargetConfig(**{**config.to_dict(), "batch_size": batch})
    sampler = PseudoTargetSampler(parts, cfg)
    pre = FastRestorer.build(FastConfig(), device=device)
    faces = album(n)
    with tempfile.TemporaryDirectory() as cache:
        generate_pseudo_targets(faces[:1], [pre], sampler, cache_dir=Path(cache) / "warm")  # kernels, allocator
        sync(device)
        start = time.perf_counter()
        result = generate_pseudo_targets(faces, [pre] * n, sampler, cache_dir=Path(cache) / "run")
        sync(device)
        seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return {"what": "pseudo-targets", "size": label, "device": device, "batch": batch, "faces": result.made,
            "steps": sampler.steps_per_batch(), "per_minute": 60 * result.made / seconds,
            "s_per_face": seconds / result.made, "peak_gb": peak}


def bench_finetune(config: FastConfig, label: str, device: str, steps: int, patch: int, batch: int) -> dict:
    faces = album(8)
    tensors, _ = FastRestorer.build(config).state()
    ft = FinetuneConfig(train=TrainConfig(patch=patch, batch=batch, warmup_steps=1))
    finetune_on_pairs(faces, faces, init=tensors, model_config=config, max_steps=1, config=ft, device=device)  # warm-up
    sync(device)
    start = time.perf_counter()
    finetune_on_pairs(faces, faces, init=tensors, model_config=config, max_steps=steps, config=ft, device=device)
    sync(device)
    rate = steps / (time.perf_counter() - start)
    return {"what": "fine-tune", "size": label, "device": device, "patch": patch, "batch": batch,
            "steps_per_s": rate, "s_per_1000_steps": 1000 / rate}


@torch.no_grad()
def cpu_real_estimate(config: PseudoTargetConfig) -> dict:
    """Time one real-size UNet call, VAE decode and encode on the CPU; extrapolate one pseudo-target."""
    from facefix.modelsets.random_weights import build_random_sd15

    parts = build_random_sd15(device="cpu", dtype=torch.float32)
    sampler = PseudoTargetSampler(parts, config)
    z = torch.randn(1, 4, 64, 64)
    image = torch.rand(1, 3, 512, 512)
    timings = {}
    for label, fn in (("unet", lambda: sampler._predict(z, 500, None)), ("decode", lambda: parts.vae_decode(z)),
                      ("encode", lambda: parts.vae_encode(image))):
        start = time.perf_counter()
        fn()
        timings[label] = time.perf_counter() - start
    ts = sampler.timesteps()
    constrained = sum(t >= config.constrain_until * (sampler.num_train - 1) for t in ts)
    total = (len(ts) * timings["unet"] + constrained * (timings["decode"] + 2 * timings["encode"])
             + 2 * timings["encode"] + timings["decode"])
    return {"what": "pseudo-target estimate", "size": "real (SD 1.5, 512)", "device": "cpu", "steps": len(ts),
            "constrained_steps": constrained, **{f"{k}_s": v for k, v in timings.items()}, "s_per_face": total,
            "per_minute": 60 / total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--faces", type=int, default=8, help="faces per pseudo-target run")
    ap.add_argument("--strength", type=float, default=0.6)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--cpu-real-estimate", action="store_true", help="CPU: time one real-size step (minutes)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = PseudoTargetConfig(strength=args.strength, steps=args.steps)
    rows = []
    if args.device.startswith("cuda"):
        from facefix.modelsets.random_weights import build_random_sd15

        parts = build_random_sd15(device=args.device, dtype=torch.float16)
        for batch in (1, 4):
            torch.cuda.reset_peak_memory_stats()
            rows.append(bench_pseudo_targets(parts, "real (SD 1.5, 512)", args.device, args.faces, batch, config))
        del parts
        rows.append(bench_finetune(FastConfig(), "shipped", args.device, 100, 256, 8))
    else:
        print("no GPU: real-size pseudo-targets need one; measuring the tiny set (pipeline overhead only) "
              "and the fast restorer's fine-tuning on this CPU", file=sys.stderr)
        from tiny_diffusion import tiny_parts

        with tempfile.TemporaryDirectory() as tmp:
            parts = tiny_parts(Path(tmp))
        rows.append(bench_pseudo_targets(parts, "tiny set (32 px)", "cpu", min(args.faces, 4), 2, config))
        if args.cpu_real_estimate:
            rows.append(cpu_real_estimate(config))
        rows.append(bench_finetune(FastConfig(), "shipped", "cpu", 3, 256, 8))
        rows.append(bench_finetune(TINY_CONFIG, "tiny", "cpu", 20, 128, 4))
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    for r in rows:
        fields = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()
                           if k not in ("what", "size", "device"))
        print(f"{r['what']:<24} {r['size']:<20} {r['device']:<6} {fields}")


if __name__ == "__main__":
    main()
