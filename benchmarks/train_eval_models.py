"""Train `facefix eval`'s two models on another machine (e.g. a GPU), to be scored where the faces were found.

    # here (needs dlib and the photos):
    python benchmarks/eval_real_people.py --export /tmp/evalset
    # on the GPU machine (needs only torch + facefix):
    python benchmarks/train_eval_models.py /tmp/evalset/training.npz --generic-s 120 --person-s 50 --out /tmp/models
    # back here: score them exactly as `facefix eval` scores its own
    python benchmarks/eval_real_people.py --trained /tmp/models

The same training as `facefix eval` (train_fast, default configs: generic from
scratch on everyone's kept references, then the person's model from it),
with budgets in seconds on whatever device this runs on.
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

from facefix.training.fast import train_fast

PART_BYTES = 12 * 2**20  # files that come back from a device machine are limited to 16 MB each


def save_parts(restorer, stem: Path) -> None:
    """``stem.0.safetensors``, ``stem.1.safetensors``, ...: the weights in parts under 12 MB, settings in part 0."""
    from safetensors.torch import save_file

    tensors, settings = restorer.state()
    parts, size = [{}], 0
    for key, value in tensors.items():
        nbytes = value.numel() * value.element_size()
        if parts[-1] and size + nbytes > PART_BYTES:
            parts.append({})
            size = 0
        parts[-1][key] = value.contiguous()
        size += nbytes
    for i, part in enumerate(parts):
        meta = {"facefix": json.dumps(settings), "parts": str(len(parts))} if i == 0 else {}
        save_file(part, str(stem.with_name(f"{stem.name}.{i}.safetensors")), metadata=meta)


def load_parts(stem: Path, name: str):
    """The restorer that :func:`save_parts` wrote."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from facefix.restorers.fast import FastRestorer

    first = stem.with_name(f"{stem.name}.0.safetensors")
    with safe_open(str(first), framework="pt") as f:
        meta = f.metadata()
    tensors = {}
    for i in range(int(meta["parts"])):
        tensors.update(load_file(str(stem.with_name(f"{stem.name}.{i}.safetensors"))))
    return FastRestorer.load(tensors, json.loads(meta["facefix"]), name=name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="training.npz written by eval_real_people.py --export")
    parser.add_argument("--generic-s", type=float, default=300.0)
    parser.add_argument("--person-s", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    data = np.load(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    info = {"device": args.device, "torch": torch.__version__, "host": platform.node(),
            "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None}  # fmt: skip
    start = time.perf_counter()
    generic = train_fast(data["generic"], budget_s=args.generic_s, seed=args.seed, device=args.device)
    print(f"generic: {generic.steps} steps in {time.perf_counter() - start:.0f} s", flush=True)
    save_parts(generic.restorer(name="fast/generic (eval)"), args.out / "generic")
    start = time.perf_counter()
    person = train_fast(data["person"], init=generic.tensors, budget_s=args.person_s, seed=args.seed + 1,
                        device=args.device)  # fmt: skip
    print(f"person: {person.steps} steps in {time.perf_counter() - start:.0f} s", flush=True)
    save_parts(person.restorer(name="fast/person (eval)"), args.out / "person")
    steps = {"generic": generic.steps, "person": person.steps}
    (args.out / "steps.json").write_text(json.dumps({**info, "steps": steps,
                                                     "budget_s": [args.generic_s, args.person_s]}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
