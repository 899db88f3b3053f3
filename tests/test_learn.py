"""``facefix learn DIR``: the generic restorer trained on a library's own sharpest faces (public sample photos
here), with whose photos it learned from; a library without enough sharp faces gets one line and no model."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from clirun import facefix
from PIL import Image

from facefix.common.files import file_sha256
from facefix.learn.degradation import match_degradation
from facefix.learn.library import ScoredFace, split_by_photo
from facefix.photos import read_photo, samples
from facefix.profiles import GenericStore
from facefix.profiles.kinds import FAST_KIND
from facefix.profiles.provenance import KEY
from facefix.quality.degrade import RECIPES, degrade_fixed


def _library(folder):
    """Public sample photos: astronaut and Tom Hanks variants (sharp, 35-45 px faces), two old copies."""
    astro = samples.make_variants(samples.skimage_image("astronaut.png"), folder / "astro", count=4, seed=1)
    tom = samples.make_variants(samples.insightface_image("Tom_Hanks_54745.png"), folder / "tom", count=3, seed=2)
    rgb = read_photo(samples.skimage_image("astronaut.png")).rgb_float()
    old = (degrade_fixed(rgb, 2, 2, 8, 50, seed=0) * 255 + 0.5).astype(np.uint8)
    Image.fromarray(old).save(folder / "old.jpg", quality=70)
    return astro, tom


# Sample faces are 35-45 px from eyes to mouth: a library of them needs a lower --min-face and a looser blur line.
SMALL_LIBRARY = ("--min-face", "30", "--max-blur", "1.8", "--min-targets", "4", "--max-steps", "2", "--budget", "1")


@pytest.mark.slow
def test_learn_stores_a_generic_restorer_with_provenance_that_restore_uses(enrolled_home, tmp_path, monkeypatch):
    home = enrolled_home  # astro is enrolled: the astronaut's faces in the library are astro's
    monkeypatch.setenv("FACEFIX_HOME", str(home))
    library = tmp_path / "library"
    astro, tom = _library(library)

    run = facefix("learn", library, *SMALL_LIBRARY, home=home)

    assert run.returncode == 0, run.stderr
    text = " ".join(run.stderr.split())
    # 9 faces (one astronaut variant shows a second, small one): 8 sharp, the old copy's is degraded
    assert "8 photo(s), 9 face(s): " in text and "1 too blurry" in text, "the old copy is a degraded face, not a target"
    assert "degradation matched to 1 degraded face(s)" in text and "JPEG q" in text
    assert "faces of astro among them" in text and "validation (" in text and "saved as the generic restorer" in text
    settings = GenericStore().load().artifacts[FAST_KIND].settings
    record = settings[KEY]
    assert record["folders"] == [str(library.resolve())] and record["matched"] == ["astro"]
    assert "astro" in record["direct"], "the astronaut's faces matched the enrolled astro"
    assert settings["library"]["targets"] + settings["library"]["validation"] == 8
    assert 0 < len(record["photos"]) < 7 and set(record["photos"]) <= {file_sha256(p) for p in astro + tom}
    assert settings["library"]["started_from"] == "fast/generic", "it went on from the enrolled generic model"

    stranger = tmp_path / "stranger.png"
    rgb = read_photo(samples.insightface_image("Tom_Hanks_54745.png")).rgb_float()
    Image.fromarray((degrade_fixed(rgb, 1.0, 2.0, 6.0, 70) * 255 + 0.5).astype(np.uint8)).save(stranger)
    restored = facefix("restore", stranger, "-o", tmp_path / "out", "--json", home=home)
    assert restored.returncode == 0, restored.stderr
    assert [json.loads(line)["restorer"] for line in restored.stdout.splitlines()] == ["fast/generic"]
    assert GenericStore().load().artifacts[FAST_KIND].settings["library"]["folder"] == str(library.resolve())

    rm = facefix("profiles", "rm", "astro", "--yes", home=home)
    assert rm.returncode == 0, rm.stderr
    assert "the generic model: removed, it learned from astro's photos" in " ".join(rm.stderr.split())
    assert f"'facefix learn {library.resolve()}'" in " ".join(rm.stderr.split())
    assert not GenericStore().exists()


def test_too_few_sharp_faces_is_one_line_and_no_model(tmp_path):
    library = tmp_path / "library"
    _library(library)
    home = tmp_path / "home"
    run = facefix("learn", library, "--budget", "1", home=home)
    assert run.returncode == 2  # a usage error: the library, not facefix
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: only 0 of the "), run.stderr
    assert "too small" in lines[0] and "needs 20" in lines[0] and "--min-face" in lines[0]
    assert not (home / "data" / "generic").exists()


def _scored(enlarge, blur, noise):
    return ScoredFace(None, enlarge, 1.0, noise, blur)


def test_the_degradation_is_drawn_from_the_degraded_faces_ranges():
    degraded = [_scored(4.0, 3.0, 6.0), _scored(3.0, 2.5, 5.0), _scored(1.0, 4.0, 8.0), _scored(5.0, 2.0, 4.0)]
    matched = match_degradation(degraded, 1.0, [40, 50, None, 45], default=RECIPES["default"],
                                default_enlarge=(0.15, 8.0))
    assert matched.faces == 4 and matched.enlarge_prob == 0.75
    assert 3.0 <= matched.enlarge_max <= 5.0
    assert 0.3 <= matched.recipe.sigma[0] < matched.recipe.sigma[1] <= 3.9  # blur beyond a sharp face's, own px
    assert 4.0 <= matched.recipe.noise[0] < matched.recipe.noise[1] <= 8.0
    assert 40 <= matched.recipe.jpeg[0] < matched.recipe.jpeg[1] <= 55
    nothing = match_degradation([], 1.0, [], default=RECIPES["default"], default_enlarge=(0.15, 8.0))
    assert nothing.recipe == RECIPES["default"] and "default" in nothing.describe()


def test_validation_holds_out_whole_photos():
    class Face:
        def __init__(self, source):
            self.source = source

    targets = [ScoredFace(Face(f"p{i // 3}"), 1.0, 1.0, 0.0, 1.0) for i in range(30)]  # 10 photos, 3 faces each
    digests = {f"p{i}": f"{i:064x}" for i in range(10)}
    train, held = split_by_photo(targets, digests, share=0.1, limit=16)
    assert len(held) == 3 and len(train) == 27
    assert not {t.face.source for t in train} & {t.face.source for t in held}
    one_photo = [ScoredFace(Face("p0"), 1.0, 1.0, 0.0, 1.0)] * 5
    assert split_by_photo(one_photo, digests, share=0.5, limit=16) == (one_photo, [])


@pytest.mark.slow
def test_learn_resumes_from_its_checkpoint(tmp_path):
    from facefix.learn.api import LearnOptions, learn
    from facefix.restorers.fast import TINY_CONFIG
    from facefix.training.loop import TrainConfig

    library = tmp_path / "library"
    _library(library)
    options = LearnOptions(budget_minutes=1, min_face=30, max_blur=1.8, min_targets=4, max_steps=2,
                           model_config=TINY_CONFIG, train_config=TrainConfig(patch=64, batch=2, warmup_steps=1))
    first = learn(library, options)
    assert first.steps == 2 and first.started_from == "classical/generic"
    again = learn(library, replace(options, resume=True, max_steps=4))
    assert again.steps == 4, "two more steps from the checkpoint, not four from the start"
    assert again.started_from == "fast/generic"
    assert GenericStore().load().artifacts[FAST_KIND].settings["training"]["steps"] == 4
