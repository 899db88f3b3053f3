"""`benchmarks/gpu_check.py --tiny` on this machine, so the GPU check cannot rot between GPU runs.

The same command a GPU machine runs at real size, with the tests' tiny model set
laid out as the faithful fake hub does: pull, verify, enroll and restore through
the CLI, `pytest -m gpu`, and bench_diffusion's timings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["layout", "verify", "enroll", "restore", "gpu_tests", "bench_restore", "bench_enroll"]


def run_check(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "check.json"
    # The suite's isolation (FACEFIX_HOME, offline) must not leak into the check: it makes its own.
    env = {k: v for k, v in os.environ.items() if k not in ("FACEFIX_HOME", "FACEFIX_MODEL_SET")}
    # One OpenMP/torch thread in the check and its children, as the suite runs (tests/conftest.py):
    # tiny models on a shared 2-core machine run faster without threads fighting (measured 56 s vs 69 s).
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--tiny", "--json", str(out),
                           "--workdir", str(tmp_path / "work"), *extra],
                          check=False, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert out.is_file(), done.stdout[-2000:] + done.stderr[-2000:]
    return done, json.loads(out.read_text())


def test_gpu_check_runs_every_step_with_the_tiny_models(tmp_path):
    done, report = run_check(tmp_path)
    steps = {s["step"]: s for s in report["steps"]}
    assert list(steps) == STEPS
    failed = {name: s["error"] for name, s in steps.items() if s["status"] == "failed"}
    assert done.returncode == 0 and not failed, (failed, done.stdout[-3000:], done.stderr[-3000:])
    cuda = torch.cuda.is_available()
    for name, step in steps.items():
        if name == "gpu_tests" and not cuda:
            # No CUDA here: the suite skips its gpu tests, and the check says so instead of "passed".
            assert step["status"] == "skipped" and "no CUDA device" in step["detail"], step
            assert " 0 failed" in step["detail"] and " 0 passed" in step["detail"], step
        else:
            assert step["status"] == "passed", step
        assert step["seconds"] >= 0
        if not cuda:
            assert step["peak_gpu_gb"] is None, step  # no made-up memory numbers without CUDA
    assert report["ok"] is True and report["size"] == "tiny"
    assert report["device"]["cuda"] == cuda and report["device"]["name"]
    # What each step checked is in its detail: the cut step counts, the faces and their restorers.
    plan = report["plan"]
    assert f"stage 1 {plan['stage1_steps']} + stage 2 {plan['stage2_steps']} steps" in steps["enroll"]["detail"]
    assert steps["restore"]["detail"].count("diffusion/astro") == 1 and "fast/generic" in steps["restore"]["detail"]
    # bench_diffusion's own rows: a restore timing per batch and the enroll estimate.
    whats = [row["what"] for row in report["benchmarks"]]
    assert whats.count("restore") == len(plan["bench_batches"]) and "enroll estimate" in whats
    assert not any("error" in row for row in report["benchmarks"])
    # The table was printed, and the work folder (weights, home) removed.
    assert "step" in done.stdout and "bench_enroll" in done.stdout.splitlines()[-2]
    assert not any((tmp_path / "work").iterdir())


def test_a_failing_step_is_recorded_in_one_line_and_the_rest_still_run(tmp_path):
    # Without the layout step there is no model set: verify, enroll and restore fail, each with its own
    # one-line error, the gpu tests and benchmarks still run, and the exit status is 1.
    done, report = run_check(tmp_path, "--skip", "layout", "bench_enroll")
    steps = {s["step"]: s for s in report["steps"]}
    assert done.returncode == 1 and report["ok"] is False
    assert steps["layout"]["status"] == steps["bench_enroll"]["status"] == "skipped"
    for name in ("verify", "enroll", "restore"):
        assert steps[name]["status"] == "failed", steps[name]
        assert "\n" not in steps[name]["error"] and len(steps[name]["error"]) <= 600
    assert "facefix models pull sd15-tile" in steps["enroll"]["error"], steps["enroll"]["error"]
    assert steps["bench_restore"]["status"] == "passed"
    assert "FAILED: verify, enroll, restore" in done.stderr
