"""A facefix home with one enrolled person and tiny trained models, for folder-run tests.

Enrolls 'astro' (scikit-image's astronaut, varied) through the real CLI with
``--no-train``, then trains a tiny fast restorer in-process for a few steps
(~10-20 s on 2 CPU cores), as tests/test_cli_enroll_restore.py does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from facefix.photos import samples


def facefix(*args, home: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess with this home, offline."""
    full = {**os.environ, "FACEFIX_HOME": str(home), "FACEFIX_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
            "COLUMNS": "250", **(env or {})}
    return subprocess.run([sys.executable, "-m", "facefix", *map(str, args)], capture_output=True,
                          text=True, env=full, timeout=timeout)


def make_enrolled_home(root: Path) -> Path:
    """Enroll 'astro' and train tiny generic + personal fast restorers under ``root/home``."""
    from facefix.enroll.fast import train_person
    from facefix.profiles import GenericStore, ProfileStore
    from facefix.restorers.fast import TINY_CONFIG
    from facefix.training.loop import TrainConfig

    refs = root / "refs"
    samples.make_variants(samples.skimage_image("astronaut.png"), refs, count=5, seed=3)
    home = root / "home"
    enroll = facefix("enroll", "astro", refs, "--min-face", "30", "--no-train", home=home)
    assert enroll.returncode == 0, enroll.stderr
    saved = os.environ.get("FACEFIX_HOME")
    os.environ["FACEFIX_HOME"] = str(home)
    try:
        train_person("astro", store=ProfileStore(), generic=GenericStore(), budget_s=300, max_steps=20,
                     model_config=TINY_CONFIG, train_config=TrainConfig(patch=128, batch=4, warmup_steps=2))
    finally:
        if saved is None:
            del os.environ["FACEFIX_HOME"]
        else:
            os.environ["FACEFIX_HOME"] = saved
    return home


def small_photos(folder: Path, count: int, *, size: int = 256, seed: int = 0) -> list[Path]:
    """``count`` small real photos with a face (astronaut variants, downscaled), as JPEG."""
    folder.mkdir(parents=True, exist_ok=True)
    made = samples.make_variants(samples.skimage_image("astronaut.png"), folder, count=count, seed=seed)
    for path in made:
        with Image.open(path) as im:
            small = im.resize((size, size))
        small.save(path, quality=90)
    return made


def is_valid_image(path: Path) -> bool:
    """The file decodes completely."""
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im).size > 0
    except Exception:  # noqa: BLE001 - any failure means not valid
        return False


_HOMES: dict[str, Path] = {}


def shared_enrolled_home(tmp_path_factory) -> Path:
    """One enrolled home per pytest process, shared by every test module that asks.

    (A module-global memo: conftest.py is not ours to add a session fixture to.)
    """
    if "home" not in _HOMES:
        _HOMES["home"] = make_enrolled_home(tmp_path_factory.mktemp("enrolled"))
    return _HOMES["home"]
