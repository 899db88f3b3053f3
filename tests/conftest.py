"""Shared fixtures: real photos located in installed packages, an isolated home."""

from __future__ import annotations

import os
from pathlib import Path

# Before torch is imported: on a shared 2-core machine, OpenMP threads that
# spin-wait for a busy core make tiny training runs 100x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

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
