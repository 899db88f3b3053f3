"""Enroll learns a person's reference fusion after their fast model, and restore uses it for blurred faces."""

from __future__ import annotations

import numpy as np

from facefix.enroll.api import EnrollOptions, enroll
from facefix.enroll.fusion import can_learn_fusion, train_person_fusion
from facefix.profiles import GenericStore, ProfileStore
from facefix.profiles.kinds import FAST_KIND, FUSION_KIND
from facefix.providers.choose import make_provider
from facefix.quality.degrade import degrade_fixed, degrade_level, resize_like_alignment
from facefix.restorers.reference import LEARNED_FROM, ReferenceRestorer


def test_enroll_learns_the_fusion_and_restore_uses_it_for_blurred_faces(enrolled_home, monkeypatch):
    monkeypatch.setenv("FACEFIX_HOME", str(enrolled_home))
    store, generic = ProfileStore(), GenericStore()
    assert FUSION_KIND not in store.load("astro").artifacts  # the world trains the fast models only
    result = enroll("astro", None, EnrollOptions(resume=True, budget_minutes=1.5, device="cpu"))
    stages = [s.stage for s in result.training]
    assert stages[-1] == "reference fusion" and result.training[-1].steps > 0, stages
    profile = store.load("astro")
    art = profile.artifacts[FUSION_KIND]
    # it records what it learned from: astro's references, through astro's fast model
    assert art.settings["fast_file"] == profile.artifacts[FAST_KIND].file
    assert "astro" in art.settings["learned_from"]["people"]
    assert art.settings["learned_from"]["start"] == "astro's fast model"

    restorer = make_provider("fast", store=store, generic=generic, device="cpu").get("astro")
    assert isinstance(restorer, ReferenceRestorer) and restorer.fusion is not None
    assert restorer.learned_from == LEARNED_FROM and restorer.name.endswith("+learned")
    crops = store.load_crops(profile)
    clean = crops[0].astype(np.float32) / 255.0
    # eval's severe level on a 256-px face, enlarged into the template as restore does (blur estimated 14)
    small = resize_like_alignment(clean, 256, 256)
    blurred = resize_like_alignment(degrade_level(small, "severe", seed=0), 512, 512).astype(np.float32)
    soft = degrade_fixed(clean, sigma=3.0, scale=2.0, noise=3.0, jpeg=None, seed=0).astype(np.float32)
    # routed as restore routes: on the blurrier of the face as the photo holds it and its pre-cleaned copy
    out, info = restorer.restore_one(restorer.base.restore(blurred[None])[0], original=blurred)
    assert max(info["blur"], info["original_blur"]) >= LEARNED_FROM and info.get("learned") is True and info["gates"] is None  # gates: off
    assert out.shape == clean.shape and np.isfinite(out).all()
    _, info = restorer.restore_one(restorer.base.restore(soft[None])[0], original=soft)
    assert info["blur"] < LEARNED_FROM and "learned" not in info  # the hand-made fusion below


def test_no_fusion_without_two_distinct_photos(enrolled_home, monkeypatch):
    monkeypatch.setenv("FACEFIX_HOME", str(enrolled_home))
    store = ProfileStore()
    crops = store.load_crops(store.load("astro"))
    assert can_learn_fusion(crops)  # five re-framed, re-lit copies count as distinct photos
    assert not can_learn_fusion(crops[:1]) and not can_learn_fusion(np.stack([crops[0], crops[0]]))
    assert train_person_fusion("astro", store=store, generic=GenericStore(), budget_s=1) is not None


def test_no_fusion_option_trains_the_fast_model_only(enrolled_home, monkeypatch):
    monkeypatch.setenv("FACEFIX_HOME", str(enrolled_home))
    result = enroll("astro", None, EnrollOptions(resume=True, budget_minutes=0.1, device="cpu", fusion=False))
    assert "reference fusion" not in [s.stage for s in result.training]
    assert FUSION_KIND not in ProfileStore().load("astro").artifacts
