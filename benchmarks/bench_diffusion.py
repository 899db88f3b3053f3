"""Speed and memory of the diffusion restorer and of Dual-Pivot Tuning at real size.

Builds SD 1.5 + the tile ControlNet with random weights (no download: the
architecture, not the weights, sets the cost), then measures:

* restore: seconds per 512 face at 20 and 50 steps, batch 1 and a batch,
  peak GPU memory (also with ``--low-vram``);
* stage 1 and stage 2: steps per second and peak memory;
* enroll: estimated wall time of the default settings (painting the generic
  faces once + stage 1 + stage 2).

Run on a CUDA machine::

    python benchmarks/bench_diffusion.py --dtype fp16 --json bench.json

Without CUDA it says so and runs a reduced CPU measurement (one small
restore and one training step of each stage), unless ``--no-cpu``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facefix.diffusion_parts import build_random_sd15  # noqa: E402
from facefix.restorers.diffusion import DiffusionRestorer, SamplerSettings  # noqa: E402
from facefix.tuning.generic_faces import generate_images, generic_prompts  # noqa: E402
from facefix.tuning.lora import UNET_TARGETS, add_lora  # noqa: E402
from facefix.tuning.stage1 import Stage1Config, train_stage1  # noqa: E402
from facefix.tuning.stage2 import Stage2Config, train_stage2  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gb(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def fresh_parts(device: str, dtype: torch.dtype, attention: str):
    torch.manual_seed(0)
    parts = build_random_sd15(device=device, dtype=dtype)
    if attention == "xformers":
        parts.unet.enable_xformers_memory_efficient_attention()
        parts.guide.enable_xformers_memory_efficient_attention()
    return parts


def faces(n: int, size: int = 512) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, (n, size, size, 3)).astype(np.float32)


def bench_restore(args, steps: int, batch: int, low_vram: bool = False) -> dict:
    parts = fresh_parts("cpu" if low_vram else args.device, DTYPES[args.dtype], args.attention)
    add_lora(parts.unet, 16, 16, UNET_TARGETS)  # a person's LoRA, fused below as in real use
    parts.unet.requires_grad_(False)
    settings = SamplerSettings(steps=steps, batch_size=batch, low_vram=low_vram)
    restorer = DiffusionRestorer(parts, prompt="a photo of sks person", settings=settings, device=args.device)
    crops = faces(batch)
    restorer.restore(crops[:1])  # warm-up: kernels, allocator
    reset_peak(args.device)
    sync(args.device)
    start = time.perf_counter()
    for _ in range(args.repeats):
        restorer.restore(crops)
    sync(args.device)
    seconds = (time.perf_counter() - start) / args.repeats
    return {
        "what": "restore", "steps": steps, "batch": batch, "low_vram": low_vram,
        "s_per_face": seconds / batch, "peak_gb": peak_gb(args.device),
    }  # fmt: skip


def _timed_training(args, stage: str, steps: int) -> dict:
    parts = fresh_parts(args.device, DTYPES[args.dtype], args.attention)
    mp = {"fp16": "fp16", "bf16": "bf16", "fp32": "no"}[args.dtype]
    times: list[float] = []

    def tick(_report) -> None:
        sync(args.device)
        times.append(time.perf_counter())

    reset_peak(args.device)
    if stage == "stage1":
        config = Stage1Config(steps=steps, mixed_precision=mp, attention=args.attention, gradient_checkpointing=not args.no_checkpointing)
        train_stage1(parts, faces(10), config, progress=tick)
    else:
        add_lora(parts.unet, 16, 16, UNET_TARGETS)
        config = Stage2Config(steps=steps, mixed_precision=mp, attention=args.attention, gradient_checkpointing=not args.no_checkpointing)
        noisy = lambda face, rng: np.clip(face + rng.normal(0, 0.05, face.shape), 0, 1).astype(np.float32)  # noqa: E731
        train_stage2(parts, faces(8), noisy, pivot_prompt="a photo of sks person", config=config, progress=tick)
    # The first step pays for warm-up; rate over the rest.
    rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else float("nan")
    return {"what": stage, "batch": config.batch_size, "steps_per_s": rate, "peak_gb": peak_gb(args.device)}


def bench_painting(args, n: int = 4, steps: int = 25) -> dict:
    parts = fresh_parts(args.device, DTYPES[args.dtype], args.attention)
    generate_images(parts, generic_prompts(1), steps=2, batch_size=1)  # warm-up
    sync(args.device)
    start = time.perf_counter()
    generate_images(parts, generic_prompts(n), steps=steps, batch_size=n)
    sync(args.device)
    return {"what": "paint generic face", "steps": steps, "s_per_image": (time.perf_counter() - start) / n}


@torch.no_grad()
def bench_cpu_step() -> list[dict]:
    """What a CPU can tell: the cost of one sampler step and one decode (a restore is steps x the first)."""
    parts = build_random_sd15(device="cpu", dtype=torch.float32)
    embeds = parts.encode_prompt(["a photo of sks person", ""])
    latents = torch.randn(1, 4, 64, 64)
    condition = torch.rand(1, 3, 512, 512)
    t = torch.tensor([500])
    rows = []
    for label, fn in (
        ("cpu unet+guide step", lambda: parts.predict_noise(latents, t, embeds[:1], embeds[1:], condition)),
        ("cpu vae decode", lambda: parts.vae_decode(latents)),
    ):
        fn()  # warm-up
        start = time.perf_counter()
        fn()
        rows.append({"what": label, "seconds": time.perf_counter() - start, "threads": torch.get_num_threads()})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    parser.add_argument("--attention", choices=["sdpa", "xformers", "sliced"], default="sdpa")
    parser.add_argument("--batch", type=int, default=8, help="faces in the batched restore measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--no-checkpointing", action="store_true", help="train without gradient checkpointing")
    parser.add_argument("--no-cpu", action="store_true", help="exit instead of a reduced CPU run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()

    results: list[dict] = []
    info = {"torch": torch.__version__, "device": args.device, "dtype": args.dtype, "attention": args.attention, "host": platform.node()}
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
        for steps in (20, 25, 50):
            for batch in (1, args.batch):
                results.append(bench_restore(args, steps, batch))
        results.append(bench_restore(args, 25, 1, low_vram=True))
        results.append(_timed_training(args, "stage1", args.train_steps))
        results.append(_timed_training(args, "stage2", args.train_steps))
        results.append(bench_painting(args))
        s1 = next(r for r in results if r["what"] == "stage1")
        s2 = next(r for r in results if r["what"] == "stage2")
        paint = next(r for r in results if r["what"] == "paint generic face")
        first = Stage1Config().steps / s1["steps_per_s"] + Stage2Config().steps / s2["steps_per_s"]
        painting = (100 + 200) * paint["s_per_image"]
        results.append({"what": "enroll estimate", "s_training": first, "s_painting_once": painting})
    else:
        print("no CUDA device: this benchmark needs a GPU for real numbers;", file=sys.stderr)
        if args.no_cpu:
            return 1
        print("running a reduced CPU measurement: one fp32 UNet+guide step and one VAE decode at 512 px", file=sys.stderr)
        info["dtype"] = "fp32"
        results.extend(bench_cpu_step())

    print(json.dumps(info))
    for row in results:
        print("  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    if args.json:
        args.json.write_text(json.dumps({"info": info, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
