"""The enrolled world many CLI tests start from, and small helpers for folder runs.

:func:`make_enrolled_world` enrolls 'astro' (scikit-image's astronaut, varied,
from a folder that also holds three bad references) through the CLI with
``--no-train``, then trains tiny generic + personal fast restorers in-process
(200 steps, so the restorers have learned something). tests/conftest.py builds
it once per session (``enrolled_world``) and hands each test its own copy of the
home (``enrolled_home``): no test changes what another one sees.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from clirun import Result, facefix, using_env
from PIL import Image

from facefix.photos import samples


@dataclass(frozen=True)
class EnrolledWorld:
    """A home with 'astro' enrolled and trained, and the files it was made from (read-only: copy to change)."""

    root: Path
    home: Path
    refs: Path  #: 5 astronaut variants + someone_else.png, no_face.png, tiny.jpg
    enroll: Result  #: the ``facefix enroll astro REFS`` run
    trained: tuple  #: train_person's (generic, person) results
    old: Path  #: an old photo of astro (degraded, with EXIF)
    old_gray: Path  #: a gray scan of it


def make_enrolled_world(root: Path) -> EnrolledWorld:
    """Enroll 'astro' from a folder with bad references and train tiny generic + personal fast restorers."""
    from facefix.enroll.fast import train_person
    from facefix.photos import read_photo
    from facefix.profiles import GenericStore, ProfileStore
    from facefix.quality.degrade import degrade_fixed
    from facefix.restorers.fast import TINY_CONFIG
    from facefix.training.loop import TrainConfig

    portrait = samples.skimage_image("astronaut.png")
    refs = root / "refs"
    samples.make_variants(portrait, refs, count=5, seed=3)
    shutil.copy(samples.insightface_image("Tom_Hanks_54745.png"), refs / "someone_else.png")
    shutil.copy(samples.skimage_image("coffee.png"), refs / "no_face.png")
    with Image.open(portrait) as im:
        im.convert("RGB").resize((280, 280)).save(refs / "tiny.jpg")
    home = root / "home"
    enroll = facefix("enroll", "astro", refs, "--min-face", "30", "--no-train", home=home)
    assert enroll.returncode == 0, enroll.stderr
    # Train for real, but a tiny network for seconds, so the restore tests
    # see a restorer that has learned something. One torch thread, as the
    # training tests use: on a shared 2-core machine two threads fight the
    # neighbours (measured: 200+200 steps in 62 s with two, 28 s with one).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with using_env({"FACEFIX_HOME": str(home), "FACEFIX_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}):
            trained = train_person("astro", store=ProfileStore(), generic=GenericStore(), budget_s=300,
                                   max_steps=200, model_config=TINY_CONFIG,
                                   train_config=TrainConfig(patch=128, batch=4, warmup_steps=2,
                                                            lr_scratch=1e-3, lr_finetune=1e-3))
    finally:
        torch.set_num_threads(threads)
    # An old photo of the same person, with EXIF, and a gray scan of it.
    old8 = (degrade_fixed(read_photo(portrait).rgb_float(), 2, 2, 8, 50, seed=0) * 255 + 0.5).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0132] = "1987:06:05 10:00:00"  # DateTime
    exif[0x010F] = "Grandpa's camera"  # Make
    Image.fromarray(old8).save(root / "old.jpg", quality=85, exif=exif)
    Image.fromarray(old8).convert("L").save(root / "old_gray.jpg", quality=85)
    return EnrolledWorld(root=root, home=home, refs=refs, enroll=enroll, trained=trained,
                         old=root / "old.jpg", old_gray=root / "old_gray.jpg")


def copy_home(home: Path, to: Path) -> Path:
    """A private copy of ``home`` at ``to`` (which must not exist yet)."""
    shutil.copytree(home, to, symlinks=True)
    return to


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


def kill_part_way(proc: subprocess.Popen, ready: Callable[[], bool], timeout_s: float = 600.0) -> None:
    """SIGKILL a running ``facefix`` process as soon as ``ready()`` holds; fail if it ended first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
