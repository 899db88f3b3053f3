"""One command that checks the diffusion path end to end, wherever a GPU is available.

Lays out the default model set (``sd15-tile``) the way the faithful fake hub
of the tests does (``tests/fake_hub.py``: every format the real repositories
hold, huggingface_hub's file-list cache, the tile guide as a pickle only), with
Stable Diffusion 1.5's UNet, VAE and text encoder and the tile ControlNet built
**at real size with random weights** (``--tiny``: the tests' tiny models), pulls
it with ``facefix models pull`` (in this process: the hub's network is the only
fake), then runs the real CLI in subprocesses, offline, with ``FACEFIX_HOME`` and
the Hugging Face cache in a temporary folder:

1. ``facefix models verify --offline``;
2. ``facefix enroll astro DIR --engine diffusion`` with the steps cut (the
   numbers are printed and written to the JSON);
3. ``facefix restore t1.jpg --person astro --engine diffusion`` (insightface's
   group photo: one face gets astro's diffusion restorer, the rest the fast
   generic one);
4. ``pytest -m gpu`` (the suite's CUDA tests);
5. restore and enroll timings from ``benchmarks/bench_diffusion.py``'s own
   functions (imported, not copied).

A step that fails is recorded with its one-line error and the next step runs;
the exit status is 1 when any step failed. Prints a table (status, seconds,
peak GPU memory where CUDA is present, the device) and writes ``--json OUT``
after every step::

    python benchmarks/gpu_check.py --json gpu_check.json          # a CUDA machine, real size
    python benchmarks/gpu_check.py --tiny --json /tmp/check.json  # any machine, tiny models (tests)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT / "benchmarks", ROOT / "tests", ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

PERSON = "astro"
BASE_COMMIT, GUIDE_COMMIT = "1" * 40, "2" * 40


@dataclass(frozen=True)
class Plan:
    """The cut-down numbers of one run (all written to the JSON)."""

    fast_budget_min: float  # enroll --budget: the fast restorer's training time
    stage1_steps: int  # default 500
    stage2_steps: int  # default 800
    class_images: int  # prior-preservation images painted (default 100)
    painted_generic: int  # generic faces painted for stage 2 beyond the supplied one (default: up to 200)
    references: int  # photos of the person (re-framed copies of one portrait)
    restore_steps: int  # facefix restore --steps (default 25)
    bench_restore_steps: int  # sampler steps of the restore timing
    bench_batches: tuple[int, ...]  # faces per restore call in the timing
    bench_repeats: int
    bench_size: int  # face crop size fed to the timed restorer
    bench_train_steps: int  # steps per timed training run (4 runs: 2 stages x checkpointing on/off)


REAL = Plan(fast_budget_min=0.5, stage1_steps=50, stage2_steps=50, class_images=4, painted_generic=2,
            references=4, restore_steps=25, bench_restore_steps=25, bench_batches=(1, 4), bench_repeats=3,
            bench_size=512, bench_train_steps=12)
# Tiny paints no generic face: random tiny weights paint no face that alignment keeps, so painting
# would only cost time on the CPU (the real-size run paints them).
TINY = Plan(fast_budget_min=0.02, stage1_steps=2, stage2_steps=2, class_images=1, painted_generic=0,
            references=3, restore_steps=2, bench_restore_steps=2, bench_batches=(1,), bench_repeats=1,
            bench_size=32, bench_train_steps=3)


# A subprocess that runs a module as ``python -m`` does and leaves its peak CUDA memory in a file.
_CHILD = """
import runpy, sys
peak_file, module = sys.argv[1], sys.argv[2]
sys.argv = [module] + sys.argv[3:]
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
finally:
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            text = str(torch.cuda.max_memory_allocated())
        else:
            text = "none"
    except Exception as exc:
        text = "error: %s: %s" % (type(exc).__name__, exc)
    with open(peak_file, "w") as f:
        f.write(text)
"""


class StepFailed(Exception):
    """A check inside a step did not hold; the message is the step's one-line error."""


def one_line(text: str, limit: int = 600) -> str:
    return " ".join(str(text).split())[:limit]


class Check:
    """Runs the steps, records each one, keeps the JSON current."""

    def __init__(self, args, plan: Plan, work: Path):
        self.args, self.plan, self.work = args, plan, work
        self.steps: list[dict] = []
        self.bench_rows: list[dict] = []
        self.started = time.perf_counter()
        self.info = device_info()
        self.base_env = dict(os.environ)  # before this script changed anything: the test suite's environment

    # ---- bookkeeping
    def record(self, name: str, fn) -> dict:
        print(f"\n== {name}", flush=True)
        cuda = self.info["cuda"]
        if cuda:
            import torch

            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        row = {"step": name, "status": "passed", "seconds": None, "peak_gpu_gb": None, "detail": None, "error": None}
        start = time.perf_counter()
        try:
            result = fn() or {}
            row.update(result)
        except StepFailed as exc:
            row.update(status="failed", error=one_line(exc))
        except Exception as exc:  # noqa: BLE001 - a failed step is recorded and the next one runs
            row.update(status="failed", error=one_line(f"{type(exc).__name__}: {exc}"))
            row["traceback"] = traceback.format_exc().splitlines()[-12:]
        row["seconds"] = round(time.perf_counter() - start, 2)
        if cuda and row["peak_gpu_gb"] is None and row.get("_in_process", True):
            import torch

            row["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        row.pop("_in_process", None)
        self.steps.append(row)
        print(f"-> {row['status']} in {row['seconds']:.1f} s" + (f": {row['error']}" if row["error"] else "")
              + (f" ({row['detail']})" if row["detail"] else ""), flush=True)
        self.write()
        gc.collect()
        return row

    def write(self) -> None:
        if not self.args.json:
            return
        data = {"device": self.info, "size": "tiny" if self.args.tiny else "real", "plan": asdict(self.plan),
                "steps": self.steps, "benchmarks": self.bench_rows,
                "total_seconds": round(time.perf_counter() - self.started, 1),
                "ok": all(s["status"] != "failed" for s in self.steps)}
        tmp = self.args.json.with_name(self.args.json.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.args.json)

    # ---- a CLI run in a subprocess
    def run(self, module: str, *argv, log: str, env: dict | None = None, cwd: Path | None = None) -> tuple[int, str, str, float | None]:
        """Run ``python -m module argv``; (exit status, stdout, stderr, peak GPU GB or None)."""
        peak_file = self.work / f"{log}.peak"
        command = [sys.executable, "-c", _CHILD, str(peak_file), module, *map(str, argv)]
        print("$ " + " ".join(["python", "-m", module, *map(str, argv)]), flush=True)
        try:
            done = subprocess.run(command, check=False, capture_output=True, text=True, env=env or self.cli_env(),
                                  cwd=cwd or ROOT, timeout=self.args.step_timeout)
        except subprocess.TimeoutExpired as exc:
            raise StepFailed(f"timed out after {exc.timeout:.0f} s") from None
        (self.work / f"{log}.out").write_text(done.stdout)
        (self.work / f"{log}.err").write_text(done.stderr)
        peak = peak_file.read_text().strip() if peak_file.is_file() else "none"
        if peak.startswith("error"):
            raise StepFailed(f"could not read the peak GPU memory: {peak}")
        return done.returncode, done.stdout, done.stderr, None if peak == "none" else round(int(peak) / 2**30, 2)

    def cli_env(self) -> dict:
        env = {**os.environ, "FACEFIX_HOME": str(self.work / "home"), "HF_HUB_CACHE": str(self.work / "hf"),
               "FACEFIX_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200"}
        env.pop("FACEFIX_MODEL_SET", None)
        return env

    def facefix(self, *argv, log: str) -> tuple[str, str, float | None]:
        code, out, err, peak = self.run("facefix", *argv, log=log)
        if code != 0:
            lines = [line for line in err.splitlines() if line.strip()]
            raise StepFailed(f"facefix {argv[0]} exited {code}: {lines[-1] if lines else '(no output)'}")
        return out, err, peak

    # ---- the steps
    def layout(self) -> dict:
        """Build the model set, lay it out as the hub does and pull it with the CLI, in this process."""
        import pytest
        from fake_hub import FakeHub, controlnet_like_guide, sd15_like_base

        from facefix.cli.main import main as cli_main
        from facefix.modelsets.registry import DEFAULT_MODEL_SET, REGISTRY

        model_set = REGISTRY[DEFAULT_MODEL_SET]
        folders = self.work / "modelset"
        base_dir, guide_dir = build_tiny_folders(folders) if self.args.tiny else build_real_folders(
            folders, device="cuda" if self.info["cuda"] else "cpu")
        hub = FakeHub()
        hub.add(model_set.base, sd15_like_base(base_dir), commit=BASE_COMMIT)
        # lllyasviel/control_v11f1e_sd15_tile today: the weights as a pickle only (pull converts them).
        hub.add(model_set.guide, controlnet_like_guide(guide_dir, safetensors=False, pickle=True), commit=GUIDE_COMMIT)
        shutil.rmtree(folders)  # what the CLI uses from now on is only what pull put in the cache
        with pytest.MonkeyPatch.context() as patch:
            for name, value in self.cli_env().items():
                patch.setenv(name, value)
            for name in ("FACEFIX_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
                patch.delenv(name, raising=False)
            hub.install(patch)
            code = cli_main(["models", "pull", DEFAULT_MODEL_SET])
        if code != 0:
            raise StepFailed(f"facefix models pull exited {code} (its error is printed above)")
        downloads = [c for c in hub.calls if c[0] == "snapshot_download"]
        pulled = sum(p.stat().st_size for p in (self.work / "hf").rglob("blobs/*"))
        return {"detail": f"{model_set.name}: {model_set.base} + {model_set.guide}, "
                          f"{'tiny' if self.args.tiny else 'real-size random'} weights, "
                          f"{len(downloads)} downloads, {pulled / 2**20:.1f} MiB in the cache"}

    def verify(self) -> dict:
        out, _, peak = self.facefix("models", "verify", "--offline", log="verify")
        lines = [line.split() for line in out.splitlines() if line.strip()]
        bad = [" ".join(line) for line in lines if line[0] != "ok"]
        if not lines or bad:
            raise StepFailed(f"verify exited 0 but reported {bad[:2] or 'no file'}")
        sources = sorted({line[-1] for line in lines})
        return {"peak_gpu_gb": peak, "_in_process": False,
                "detail": f"{len(lines)} files ok against the {'/'.join(sources)} hashes"}

    def enroll(self) -> dict:
        from facefix.photos import samples

        plan = self.plan
        refs, generic = self.work / "photos" / PERSON, self.work / "generic"
        samples.make_variants(samples.skimage_image("astronaut.png"), refs, count=plan.references, seed=3)
        generic.mkdir(parents=True, exist_ok=True)
        shutil.copy(samples.insightface_image("Tom_Hanks_54745.png"), generic / "face.png")  # an aligned crop
        _, err, peak = self.facefix(
            "enroll", PERSON, refs, "--engine", "diffusion", "--min-face", "20", "--budget", plan.fast_budget_min,
            "--generic-faces", generic, "--stage1-steps", plan.stage1_steps, "--stage2-steps", plan.stage2_steps,
            "--class-images", plan.class_images, "--generic-count", 1 + plan.painted_generic, log="enroll")
        said = " ".join(err.split())
        if f"stage 1 {plan.stage1_steps} steps" not in said or f"{PERSON} is enrolled" not in said:
            raise StepFailed(f"enroll did not report stage 1 {plan.stage1_steps} steps and the enrolment: ...{said[-200:]}")
        show, _, _ = self.facefix("profiles", "show", PERSON, "--json", log="profiles_show")
        artifacts = json.loads(show)["artifacts"]
        done = {kind.rsplit("/", 1)[-1]: art["settings"].get("steps_done") for kind, art in artifacts.items()
                if kind.startswith("diffusion/")}
        wanted = {"unet_lora": plan.stage1_steps, "guide": plan.stage2_steps}
        if done != wanted:
            raise StepFailed(f"the profile's diffusion adapters ran {done} steps, expected {wanted}")
        return {"peak_gpu_gb": peak, "_in_process": False,
                "detail": f"{plan.references} photos, fast --budget {plan.fast_budget_min} min, stage 1 "
                          f"{plan.stage1_steps} + stage 2 {plan.stage2_steps} steps, {plan.class_images} class "
                          f"images, generic faces 1 given + {plan.painted_generic} painted"}

    def restore(self) -> dict:
        from facefix.photos import samples

        out_dir = self.work / "restored"
        out, _, peak = self.facefix(
            "restore", samples.insightface_image("t1.jpg"), "--person", PERSON, "--engine", "diffusion",
            "--steps", self.plan.restore_steps, "--seed", "0", "--ext", "png", "--json", "-o", out_dir, log="restore")
        records = [r for r in map(json.loads, filter(str.strip, out.splitlines())) if r.get("restorer")]
        used = sorted(r["restorer"] for r in records)
        if len(records) < 2 or used.count(f"diffusion/{PERSON}") != 1:
            raise StepFailed(f"expected one of several faces restored by diffusion/{PERSON}, got {used}")
        written = list(out_dir.glob("*.png"))
        if len(written) != 1:
            raise StepFailed(f"expected one restored photo in {out_dir}, found {len(written)}")
        return {"peak_gpu_gb": peak, "_in_process": False,
                "detail": f"{len(records)} faces, {self.plan.restore_steps} steps: {', '.join(used)}"}

    def gpu_tests(self) -> dict:
        junit = self.work / "gpu_tests.xml"
        env = {**self.base_env, "COLUMNS": "200"}
        code, out, _, peak = self.run("pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                                      log="gpu_tests", env=env, cwd=ROOT)
        if not junit.is_file():
            raise StepFailed(f"pytest exited {code} without a report: {one_line(out[-300:])}")
        suite = ET.parse(junit).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        counts = f"{n['tests']} gpu tests: {n['tests'] - n['failures'] - n['errors'] - n['skipped']} passed, " \
                 f"{n['failures']} failed, {n['errors']} errors, {n['skipped']} skipped"
        if code != 0 or n["failures"] or n["errors"]:
            lines = [line for line in out.splitlines() if line.startswith(("FAILED", "ERROR"))]
            raise StepFailed(f"pytest exited {code}: {counts}; {'; '.join(lines[:3])}")
        if n["tests"] == 0:
            raise StepFailed("pytest -m gpu selected no test")
        if self.info["cuda"]:
            if n["skipped"]:
                raise StepFailed(f"{counts}: a CUDA machine must run them all")
            return {"peak_gpu_gb": peak, "_in_process": False, "detail": counts}
        if n["skipped"] != n["tests"]:
            raise StepFailed(f"{counts}: without CUDA every gpu test should be skipped")
        return {"status": "skipped", "_in_process": False, "detail": f"no CUDA device: {counts} by the suite"}

    def bench_args(self, only: str | None):
        plan, cuda = self.plan, self.info["cuda"]
        return argparse.Namespace(
            device="cuda" if cuda else "cpu", dtype="fp16" if cuda else "fp32", also_dtype=[], attention="sdpa",
            batch=max(plan.bench_batches), repeats=plan.bench_repeats, train_steps=plan.bench_train_steps,
            train_batch=None, only=only, size=plan.bench_size, skip_low_vram=True, full=True, tiny=self.args.tiny,
            json=None)

    def _bench_rows(self, fn) -> list[dict]:
        import bench_diffusion

        first = len(bench_diffusion.RESULTS)
        fn(bench_diffusion)
        rows = bench_diffusion.RESULTS[first:]
        self.bench_rows.extend(rows)
        failed = [r for r in rows if "error" in r]
        if failed:
            raise StepFailed(f"{failed[0]['what']}: {failed[0]['error']}")
        return rows

    def bench_restore(self) -> dict:
        """Seconds per face as ``facefix restore`` samples: adapters active (not fused), CUDA graphs."""
        plan = self.plan

        def measure(bench):
            from facefix.restorers.adapters import UNET_TARGETS
            from facefix.training.lora import add_lora

            args = self.bench_args("restore")

            def run():
                parts = bench.fresh_parts(args)
                add_lora(parts.unet, 16, 16, UNET_TARGETS)  # a person's LoRA
                parts.unet.requires_grad_(False)
                restorer = bench.make_restorer(args, parts, fuse_lora=False, cuda_graphs=True)
                for batch in plan.bench_batches:
                    bench.time_restore(args, restorer, plan.bench_restore_steps, batch, dtype=args.dtype, lora="active")
                bench.drop_graphs(restorer)
                bench.release(parts, restorer)

            bench.attempt(args, "restore", run)

        rows = self._bench_rows(measure)
        timed = [r for r in rows if "s_per_face" in r]
        if len(timed) != len(plan.bench_batches):
            raise StepFailed(f"expected {len(plan.bench_batches)} restore timings, got {len(timed)}")
        return {"peak_gpu_gb": max((r["peak_gb"] or 0) for r in timed) if self.info["cuda"] else None,
                "detail": ", ".join(f"batch {r['batch']}: {r['s_per_face']:.3f} s/face" for r in timed)
                + f" at {plan.bench_restore_steps} steps ({'graphs' if timed[0]['cuda_graphs'] else 'eager'})"}

    def bench_enroll(self) -> dict:
        """bench_diffusion's training part: stage 1/2 steps per second, painting, the enroll estimate."""
        rows = self._bench_rows(lambda bench: bench.run_full(self.bench_args("train")))
        estimate = [r for r in rows if r["what"] == "enroll estimate"]
        if not estimate:
            raise StepFailed("no enroll estimate (a stage or the painting measurement is missing)")
        e = estimate[0]
        rates = ", ".join(f"{r['what']} {'ckpt' if r['checkpointing'] else 'no ckpt'} {r['steps_per_s']:.2f}/s"
                          for r in rows if "steps_per_s" in r)
        peaks = [r["peak_gb"] for r in rows if r.get("peak_gb") is not None]
        return {"peak_gpu_gb": max(peaks) if peaks else None,
                "detail": f"{rates}; default enroll ~{e['s_training']:.0f} s training + "
                          f"{e['s_painting_once']:.0f} s painting once"}


def device_info() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    name = torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()}, " \
                                                     f"{os.cpu_count()} cores)"
    return {"name": name, "cuda": cuda, "torch": torch.__version__, "host": platform.node(),
            "threads": torch.get_num_threads()}


def build_tiny_folders(where: Path) -> tuple[Path, Path]:
    from tiny_diffusion import save_tiny_model_set

    save_tiny_model_set(where)
    return where / "base", where / "guide"


def build_real_folders(where: Path, device: str) -> tuple[Path, Path]:
    """SD 1.5's UNet, VAE, text encoder and the tile ControlNet at real size, random weights, saved in
    diffusers format (fp32, as the hub's main files are); the tokenizer is the real CLIPTokenizer class
    with the tests' character-level vocabulary (the real vocabulary needs a download)."""
    import torch
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from tiny_diffusion import write_tiny_tokenizer_files
    from transformers import CLIPTokenizer

    from facefix.modelsets.random_weights import (
        SD15_SCHEDULER_CONFIG,
        SD15_TEXT_CONFIG,
        build_random_sd15,
    )

    tokenizer = CLIPTokenizer.from_pretrained(write_tiny_tokenizer_files(
        where / "_tokenizer", max_length=SD15_TEXT_CONFIG.get("max_position_embeddings", 77)))
    torch.manual_seed(0)
    parts = build_random_sd15(device=device, dtype=torch.float32, tokenizer=tokenizer)
    pipe = StableDiffusionPipeline(vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=tokenizer,
                                   unet=parts.unet, scheduler=PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(where / "base")
    parts.guide.save_pretrained(where / "guide")
    del pipe, parts
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return where / "base", where / "guide"


def print_table(check: Check) -> None:
    info = check.info
    print(f"\nfacefix GPU check: {info['name']} (torch {info['torch']}), "
          f"{'tiny models' if check.args.tiny else 'real-size SD 1.5 + tile ControlNet, random weights'}")
    rows = [("step", "status", "seconds", "peak GPU GB", "detail / error")]
    for s in check.steps:
        peak = "-" if s["peak_gpu_gb"] is None else f"{s['peak_gpu_gb']:.2f}"
        rows.append((s["step"], s["status"], f"{s['seconds']:.1f}", peak, s["error"] or s["detail"] or ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[4])
    print(f"total {time.perf_counter() - check.started:.0f} s")


STEPS = ("layout", "verify", "enroll", "restore", "gpu_tests", "bench_restore", "bench_enroll")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny models instead of real size (any CPU)")
    parser.add_argument("--json", type=Path, help="write the results here (kept current after every step)")
    parser.add_argument("--skip", nargs="*", default=[], choices=STEPS, help="steps not to run (recorded as skipped)")
    parser.add_argument("--step-timeout", type=float, default=600, help="seconds a CLI step may take")
    parser.add_argument("--workdir", type=Path, help="where to make the work folder (default: the system's temp)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (weights, logs, restored photo)")
    args = parser.parse_args(argv)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="facefix-gpu-check-", dir=args.workdir))
    plan = TINY if args.tiny else REAL
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the tests: OpenMP spinning on a busy machine
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    check = Check(args, plan, work)
    print(json.dumps({"device": check.info, "plan": asdict(plan), "work": str(work)}), flush=True)
    try:
        for name in STEPS:
            if name in args.skip:
                check.steps.append({"step": name, "status": "skipped", "seconds": 0.0, "peak_gpu_gb": None,
                                    "detail": "--skip", "error": None})
                continue
            check.record(name, getattr(check, name))
    finally:
        check.write()
        print_table(check)
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    failed = [s["step"] for s in check.steps if s["status"] == "failed"]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
