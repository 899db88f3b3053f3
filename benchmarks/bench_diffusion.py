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
import gc
import json
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facefix.modelsets.random_weights import build_random_sd15
from facefix.restorers.adapters import UNET_TARGETS
from facefix.restorers.diffusion import DiffusionRestorer, SamplerSettings
from facefix.training.diffusion_loop import checkpointing_for
from facefix.training.dual_pivot import DualPivotConfig
from facefix.training.generic_faces import generate_images, generic_prompts
from facefix.training.lora import add_lora
from facefix.training.stage1 import Stage1Config, train_stage1
from facefix.training.stage2 import Stage2Config, train_stage2

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gb(device: str) -> float | None:
    return (
        torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    )


def fresh_parts(args, device: str | None = None, dtype: torch.dtype | None = None):
    """A model set at real size with random weights (or tiny, for a dry run of this script)."""
    torch.manual_seed(0)
    device = device or args.device
    dtype = dtype or DTYPES[args.dtype]
    if args.tiny:
        import tempfile

        from tests.tiny_diffusion import tiny_parts

        parts = tiny_parts(Path(tempfile.mkdtemp())).to(device=device, dtype=dtype)
    else:
        parts = build_random_sd15(device=device, dtype=dtype)
    if args.attention == "xformers":
        parts.unet.enable_xformers_memory_efficient_attention()
        parts.guide.enable_xformers_memory_efficient_attention()
    return parts


def release(*objects) -> None:
    del objects
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def faces(n: int, size: int = 512) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, (n, size, size, 3)).astype(np.float32)


def time_restore(args, restorer, steps: int, batch: int, **labels) -> dict:
    """Median seconds per face over ``args.repeats`` restores of ``batch`` faces."""
    restorer.settings = replace(restorer.settings, steps=steps, batch_size=batch)
    crops = faces(batch, args.size)
    restorer.restore(crops)  # warm-up at this shape (a CUDA graph is captured here)
    reset_peak(args.device)
    times = []
    for _ in range(args.repeats):
        sync(args.device)
        start = time.perf_counter()
        restorer.restore(crops)
        sync(args.device)
        times.append(time.perf_counter() - start)
    row = {"what": "restore", **labels, "steps": steps, "batch": batch,
           "cuda_graphs": restorer._graphed is not None and not restorer._graphed.failed,
           "s_per_face": statistics.median(times) / batch, "peak_gb": peak_gb(args.device)}  # fmt: skip
    return emit(args, row)


def drop_graphs(restorer) -> None:
    if restorer._graphed is not None:
        restorer._graphed.clear()


def make_restorer(args, parts, **settings) -> DiffusionRestorer:
    return DiffusionRestorer(
        parts,
        prompt="a photo of sks person",
        settings=SamplerSettings(**settings),
        device=args.device,
    )


def bench_restores(args) -> None:
    """Restore speed: the CLI's unfused adapters, then fused, with and without CUDA graphs."""
    parts = fresh_parts(args)
    add_lora(parts.unet, 16, 16, UNET_TARGETS)  # a person's LoRA
    parts.unet.requires_grad_(False)
    dtype = args.dtype
    # As `facefix restore` runs it: adapters active, not fused (people switch).
    for graphs in (True, False):
        restorer = make_restorer(args, parts, fuse_lora=False, cuda_graphs=graphs)
        for batch in (1, args.batch):
            time_restore(args, restorer, 25, batch, dtype=dtype, lora="active")
        drop_graphs(restorer)
    # Fused (one person, e.g. a folder of one family member).
    eager = make_restorer(args, parts, fuse_lora=True, cuda_graphs=False)
    graphed = make_restorer(args, parts, fuse_lora=True, cuda_graphs=True)
    crops = faces(2, args.size)
    same = np.abs(eager.restore(crops) - graphed.restore(crops)).max()
    emit(
        args,
        {
            "what": "graphs vs eager",
            "max_abs_diff": float(same),
            "batch": 2,
            "steps": 25,
        },
    )
    for steps in (20, 25, 50):
        for batch in (1, args.batch):
            time_restore(args, graphed, steps, batch, dtype=dtype, lora="fused")
    for batch in (1, args.batch):
        time_restore(args, eager, 25, batch, dtype=dtype, lora="fused")
    drop_graphs(graphed)
    for extra in args.also_dtype:
        if extra != dtype:
            other = make_restorer(args, parts.to(dtype=DTYPES[extra]), cuda_graphs=True)
            for batch in (1, args.batch):
                time_restore(args, other, 25, batch, dtype=extra, lora="fused")
            drop_graphs(other)
    release(parts, eager, graphed)


def bench_low_vram(args) -> None:
    parts = fresh_parts(args, device="cpu")
    add_lora(parts.unet, 16, 16, UNET_TARGETS)
    parts.unet.requires_grad_(False)
    restorer = make_restorer(args, parts, low_vram=True)
    time_restore(args, restorer, 25, 1, dtype=args.dtype, lora="fused", low_vram=True)
    release(parts, restorer)


def _timed_training(args, stage: str, steps: int, checkpointing: bool) -> dict:
    parts = fresh_parts(args)
    mp = {"fp16": "fp16", "bf16": "bf16", "fp32": "no"}[args.dtype]
    batch = {"batch_size": args.train_batch} if args.train_batch else {}
    times: list[float] = []

    def tick(_report) -> None:
        sync(args.device)
        times.append(time.perf_counter())

    reset_peak(args.device)
    if stage == "stage1":
        config = Stage1Config(
            steps=steps,
            mixed_precision=mp,
            attention=args.attention,
            gradient_checkpointing=checkpointing,
            **batch,
        )
        train_stage1(parts, faces(10, args.size), config, progress=tick)
    else:
        add_lora(parts.unet, 16, 16, UNET_TARGETS)
        config = Stage2Config(
            steps=steps,
            mixed_precision=mp,
            attention=args.attention,
            gradient_checkpointing=checkpointing,
            **batch,
        )
        noisy = lambda face, rng: np.clip(
            face + rng.normal(0, 0.05, face.shape), 0, 1
        ).astype(np.float32)
        train_stage2(
            parts,
            faces(8, args.size),
            noisy,
            pivot_prompt="a photo of sks person",
            config=config,
            progress=tick,
        )
    # The first steps pay for warm-up: the median step time over the rest.
    gaps = np.diff(times[2:]) if len(times) > 3 else np.diff(times)
    rate = 1.0 / float(np.median(gaps)) if len(gaps) else float("nan")
    row = {
        "what": stage,
        "batch": config.batch_size,
        "checkpointing": checkpointing,
        "steps_per_s": rate,
        "peak_gb": peak_gb(args.device),
    }
    release(parts)
    return emit(args, row)


def bench_painting(args, n: int = 4, steps: int = 25) -> dict:
    parts = fresh_parts(args)
    generate_images(parts, generic_prompts(1), steps=2, batch_size=1)  # warm-up
    reset_peak(args.device)
    sync(args.device)
    start = time.perf_counter()
    generate_images(parts, generic_prompts(n), steps=steps, batch_size=n)
    sync(args.device)
    row = {
        "what": "paint generic face",
        "steps": steps,
        "s_per_image": (time.perf_counter() - start) / n,
        "peak_gb": peak_gb(args.device),
    }
    release(parts)
    return emit(args, row)


RESULTS: list[dict] = []


def emit(args, row: dict) -> dict:
    """Print a row as soon as it is measured and keep the JSON file current (a cut-off run keeps its rows)."""
    RESULTS.append(row)
    print(
        "  ".join(
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
            for k, v in row.items()
        ),
        flush=True,
    )
    if args.json:
        args.json.write_text(json.dumps({"info": INFO, "results": RESULTS}, indent=2))
    return row


def attempt(args, label: str, fn) -> None:
    """Run one measurement; a failure is recorded and the rest still run."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - a benchmark reports and goes on
        emit(args, {"what": label, "error": f"{type(exc).__name__}: {exc}"[:300]})
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


INFO: dict = {}


def find(what: str, key: str, **match) -> dict | None:
    """The first measured row of ``what`` that has ``key`` and the ``match`` values."""
    for row in RESULTS:
        if (
            row["what"] == what
            and key in row
            and all(row.get(k) == v for k, v in match.items())
        ):
            return row
    return None


def run_full(args) -> None:
    if args.only != "train":
        attempt(args, "restore", lambda: bench_restores(args))
    if args.only == "restore":
        return
    if args.only is None and not args.skip_low_vram:
        attempt(args, "restore low_vram", lambda: bench_low_vram(args))
    if args.only == "train":
        args.also_dtype = []
    for stage in ("stage1", "stage2"):
        for checkpointing in (True, False):
            attempt(
                args,
                stage,
                lambda stage=stage, c=checkpointing: _timed_training(
                    args, stage, args.train_steps, c
                ),
            )
    attempt(args, "paint generic face", lambda: bench_painting(args))
    auto = checkpointing_for("auto", torch.device(args.device))  # what enroll uses here
    s1 = find("stage1", "steps_per_s", checkpointing=auto)
    s2 = find("stage2", "steps_per_s", checkpointing=auto)
    paint = find("paint generic face", "s_per_image")
    if s1 and s2 and paint:
        training = (
            Stage1Config().steps / s1["steps_per_s"]
            + Stage2Config().steps / s2["steps_per_s"]
        )
        painting = (
            DualPivotConfig().class_images + DualPivotConfig().generic_faces
        ) * paint["s_per_image"]
        emit(
            args,
            {
                "what": "enroll estimate",
                "s_training": training,
                "s_painting_once": painting,
                "checkpointing": auto,
            },
        )


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
        (
            "cpu unet+guide step",
            lambda: parts.predict_noise(latents, t, embeds[:1], embeds[1:], condition),
        ),
        ("cpu vae decode", lambda: parts.vae_decode(latents)),
    ):
        fn()  # warm-up
        start = time.perf_counter()
        fn()
        rows.append(
            {
                "what": label,
                "seconds": time.perf_counter() - start,
                "threads": torch.get_num_threads(),
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp16")
    parser.add_argument(
        "--also-dtype",
        nargs="*",
        default=["bf16"],
        choices=sorted(DTYPES),
        help="restore at 25 steps in these dtypes too",
    )
    parser.add_argument(
        "--attention", choices=["sdpa", "xformers", "sliced"], default="sdpa"
    )
    parser.add_argument(
        "--batch", type=int, default=8, help="faces in the batched restore measurement"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument(
        "--train-batch",
        type=int,
        default=None,
        help="stage 1/2 batch (default: their configs')",
    )
    parser.add_argument(
        "--only",
        choices=["restore", "train"],
        help="run one part of the full measurement",
    )
    parser.add_argument("--size", type=int, default=512, help="face crop size")
    parser.add_argument("--skip-low-vram", action="store_true")
    parser.add_argument(
        "--full",
        action="store_true",
        help="run the GPU measurements on any device (a dry run with --tiny)",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="tiny random parts instead of real size (checks the script)",
    )
    parser.add_argument(
        "--no-cpu", action="store_true", help="exit instead of a reduced CPU run"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    INFO.update({"torch": torch.__version__, "device": args.device, "dtype": args.dtype, "attention": args.attention,
                 "host": platform.node(), "tiny": args.tiny})  # fmt: skip
    if args.device.startswith("cuda"):
        INFO["gpu"] = torch.cuda.get_device_name()
    print(json.dumps(INFO), flush=True)
    if args.device.startswith("cuda") or args.full:
        run_full(args)
    else:
        print(
            "no CUDA device: this benchmark needs a GPU for real numbers;",
            file=sys.stderr,
        )
        if args.no_cpu:
            return 1
        print(
            "running a reduced CPU measurement: one fp32 UNet+guide step and one VAE decode at 512 px",
            file=sys.stderr,
        )
        INFO["dtype"] = "fp32"
        for row in bench_cpu_step():
            emit(args, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
