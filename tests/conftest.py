"""Shared fixtures: real photos located in installed packages, an isolated home, an enrolled home.

Tests run in random order (pytest-randomly; the seed is printed at the end of the
run): no fixture a test can change is shared. The costly enrolled home is built
once per session and every test that asks for it gets its own copy.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
from pathlib import Path

# Before torch is imported: on a shared 2-core machine, OpenMP threads that
# spin-wait for a busy core make tiny training runs 100x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
from helpers_enrolled import EnrolledWorld, copy_home, make_enrolled_world

from facefix.photos import samples


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests are skipped where there is no CUDA device (and run where there is)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (pyproject.toml's addopts): two workers, each a file at a time, on this
    2-core machine (the tests run one torch thread each, see ``one_torch_thread``).
    None for a ``-m gpu`` run: one CUDA device, and benchmarks/gpu_check.py measures
    the peak GPU memory of the pytest process itself."""
    if "gpu" in (config.option.markexpr or "").replace("not gpu", ""):
        return 0
    return min(2, os.cpu_count() or 1)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say which random order this run used (``-q`` hides pytest-randomly's own header line)."""
    if config.pluginmanager.hasplugin("randomly") and config.getoption("randomly_reorganize", True):
        seed = config.getoption("randomly_seed")
        terminalreporter.write_line(f"random order: rerun it with -p randomly --randomly-seed={seed}")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One torch thread for the whole run. The suite's networks are tiny and this
    2-core machine is shared: two threads fight the neighbours (measured on the
    in-process CLI tests: 208 s with two threads, 144 s with one; the enrolled
    world's training 62 s vs 28 s). Processes the tests start keep torch's default
    (but benchmarks/gpu_check.py's, see tests/test_gpu_check.py)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def facefix_logger():
    """The ``facefix`` logger as it was: a command run in this process sets its handlers
    (and stops propagation, which would hide its records from ``caplog``)."""
    logger = logging.getLogger("facefix")
    saved = list(logger.handlers), logger.level, logger.propagate, logger.disabled
    yield logger
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate, logger.disabled = saved[2], saved[3]


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own FACEFIX_HOME and never touches the network."""
    home = tmp_path_factory.mktemp("facefix_home")
    monkeypatch.setenv("FACEFIX_HOME", str(home))
    monkeypatch.setenv("FACEFIX_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


@pytest.fixture(scope="session")
def group_photo() -> Path:
    """insightface's t1.jpg: a real group photo with six faces."""
    return samples.insightface_image("t1.jpg")


@pytest.fixture(scope="session")
def portrait_photo() -> Path:
    """scikit-image's astronaut: a real portrait with one face."""
    return samples.skimage_image("astronaut.png")


@pytest.fixture(scope="session")
def enrolled_world(tmp_path_factory) -> EnrolledWorld:
    """'astro' enrolled (through the CLI, from references with three bad ones) and trained
    (tiny fast restorers, 200 steps), once per run. Read-only: see ``enrolled_home``.

    Under pytest-xdist the first worker that asks builds it in the run's shared temp
    folder and the others read it, so it is built once, not once per worker."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return make_enrolled_world(tmp_path_factory.mktemp("enrolled"))
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent  # this run's, shared by its workers
    root, made = shared / "enrolled_world", shared / "enrolled_world.pickle"
    with FileLock(str(shared / "enrolled_world.lock")):
        if not made.is_file():
            shutil.rmtree(root, ignore_errors=True)  # a build that failed half-way
            root.mkdir()
            made.write_bytes(pickle.dumps(make_enrolled_world(root)))
        return pickle.loads(made.read_bytes())


@pytest.fixture
def enrolled_home(enrolled_world, tmp_path_factory) -> Path:
    """This test's own copy of the enrolled home: change it at will."""
    return copy_home(enrolled_world.home, tmp_path_factory.mktemp("enrolled_copy") / "home")
