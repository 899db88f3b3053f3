"""Loading SD 1.5 + the tile ControlNet at real size from single files vs diffusers folders (random weights).

Writes real-size SD 1.5 (random weights, fp16) once as a user keeps it (one
``.safetensors`` in the original layout, a ControlNet ``.pth``) and as diffusers
folders, then times facefix's loader on each, offline, with the configs and
tokenizer shipped in ``facefix/data/sd15``. Prints one table; needs ~8 GB of
RAM and ~5 GB in the temporary folder.

    python benchmarks/bench_single_file.py [--repeat 2] [--dtype float16]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT / "tests", ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


def main() -> int:
    import torch
    from safetensors.torch import save_file
    from tiny_diffusion import controlnet_to_original, text_encoder_to_ldm, unet_to_ldm, vae_to_ldm

    from facefix.modelsets.hub import ModelPaths
    from facefix.modelsets.parts import load_parts
    from facefix.modelsets.random_weights import build_random_sd15
    from facefix.modelsets.registry import ModelSet
    from facefix.modelsets.single_file import SD15_CONFIG_DIR

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        parts = build_random_sd15(dtype=dtype)
        state = {**unet_to_ldm(parts.unet.state_dict(), parts.unet.config),
                 **vae_to_ldm(parts.vae.state_dict(), parts.vae.config),
                 **text_encoder_to_ldm(parts.text_encoder.state_dict())}
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "sd15.safetensors"))
        del state
        torch.save({k: v.contiguous() for k, v in controlnet_to_original(parts.guide.state_dict(), parts.guide.config).items()},
                   tmp / "control_sd15_tile.pth")
        for name in ("unet", "vae", "text_encoder"):
            getattr(parts, name).save_pretrained(tmp / "base" / name)
        parts.guide.save_pretrained(tmp / "guide")
        for sub in ("tokenizer", "scheduler"):
            (tmp / "base" / sub).mkdir()
            for file in (SD15_CONFIG_DIR / sub).iterdir():
                (tmp / "base" / sub / file.name).write_bytes(file.read_bytes())
        print(f"wrote real-size SD 1.5 ({args.dtype}) both ways in {time.perf_counter() - start:.0f} s "
              f"(single file {(tmp / 'sd15.safetensors').stat().st_size / 1e9:.2f} GB)")
        del parts
        layouts = {
            "single files (.safetensors + .pth)": (tmp / "sd15.safetensors", tmp / "control_sd15_tile.pth"),
            "diffusers folders": (tmp / "base", tmp / "guide"),
        }
        print(f"{'layout':40s} {'load s (each run)':>24s}")
        for label, (base, guide) in layouts.items():
            times = []
            for _ in range(args.repeat):
                paths = ModelPaths(ModelSet(name="bench", base=str(base), guide=str(guide), variant=None), base, guide, "x", "x")
                start = time.perf_counter()
                loaded = load_parts(paths, dtype=dtype)
                times.append(time.perf_counter() - start)
                del loaded
            print(f"{label:40s} {' '.join(f'{t:6.1f}' for t in times):>24s}")
    print(f"machine: {torch.get_num_threads()} torch threads, {args.dtype}, CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
