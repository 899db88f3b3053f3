"""train_person: which model trains at which learning rate."""

from __future__ import annotations

import pytest
from clirun import facefix

from facefix.enroll.fast import train_person
from facefix.photos import samples
from facefix.profiles import GenericStore, ProfileStore
from facefix.restorers.fast import TINY_CONFIG
from facefix.training import fast as fast_train
from facefix.training.loop import TrainConfig

pytestmark = pytest.mark.slow


def test_the_generic_model_keeps_its_rate_when_updated_and_a_person_fine_tunes_at_theirs(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("FACEFIX_HOME", str(home))
    samples.make_variants(samples.skimage_image("astronaut.png"), tmp_path / "astro", count=3, seed=3)
    assert facefix("enroll", "astro", tmp_path / "astro", "--min-face", "30", "--no-train", home=home).returncode == 0
    calls = []
    real = fast_train.train_fast
    monkeypatch.setattr(fast_train, "train_fast", lambda *a, **k: calls.append(k) or real(*a, **k))
    config = TrainConfig(patch=64, batch=2, warmup_steps=1, lr_scratch=2e-4, lr_finetune=5e-4)

    def train():
        calls.clear()
        train_person("astro", store=ProfileStore(), generic=GenericStore(), budget_s=300, max_steps=2,
                     model_config=TINY_CONFIG, train_config=config)
        return [(k["init"] is not None, k.get("lr")) for k in calls]

    # New generic model from scratch, then astro's from it.
    assert train() == [(False, 2e-4), (True, None)]
    # Someone else enrolls: the generic model is updated from its weights at the scratch rate.
    samples.make_variants(samples.skimage_image("astronaut.png"), tmp_path / "again", count=2, seed=9)
    assert facefix("enroll", "astro", tmp_path / "again", "--add", "--min-face", "30", "--no-train",
                   home=home).returncode == 0
    assert train() == [(True, 2e-4), (True, None)]
