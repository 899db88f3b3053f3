"""Forgetting a person (``facefix profiles rm``): every learned artifact records whose photos it learned from,
directly or through the model it was fine-tuned from, and removing a person removes every artifact that learned
from them (or cannot tell), each listed with how to rebuild it; the people left still restore."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from facefix.enroll.fast import train_person
from facefix.enroll.forget import remove_person
from facefix.profiles import GenericStore, ProfileStore
from facefix.profiles.adapted import AdaptedStore
from facefix.profiles.kinds import FAST_KIND, FUSION_KIND, guide_kind, unet_lora_kind
from facefix.profiles.provenance import KEY, Provenance, learned_from
from facefix.providers.fast import FastRestorers
from facefix.restorers.fast import TINY_CONFIG
from facefix.training.loop import TrainConfig

TINY_TRAIN = TrainConfig(patch=64, batch=2, warmup_steps=1)


def _enroll(store: ProfileStore, name: str, count: int = 2, seed: int = 0) -> None:
    """``count`` references of smooth random faces (training needs pixels, not a real face)."""
    rng = np.random.default_rng(seed)
    with store.edit(name, create=True) as editor:
        for i in range(count):
            crop = np.clip(rng.normal(128, 40, (64, 64, 3)), 0, 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)
            editor.add_reference(crop, source=f"/photos/{name}{i}.jpg",
                                 sha256=hashlib.sha256(f"{name}{i}".encode()).hexdigest(),
                                 embeddings={"dlib": rng.normal(size=128)}, box=(0, 0, 10, 10))


def _train(store, generic, name):
    train_person(name, store=store, generic=generic, budget_s=60, max_steps=2, device="cpu",
                 model_config=TINY_CONFIG, train_config=TINY_TRAIN)


def _weights():
    return {"w": torch.zeros(2)}


@pytest.fixture
def two_people():
    """alice enrolled and trained, then bob: the generic model went on with bob, bob's model was fine-tuned from it."""
    store, generic = ProfileStore(), GenericStore()
    _enroll(store, "alice", seed=1)
    _train(store, generic, "alice")
    _enroll(store, "bob", seed=2)
    _train(store, generic, "bob")
    return store, generic


def test_every_fast_model_records_whose_photos_it_learned_from(two_people):
    store, generic = two_people
    generic_record = Provenance.from_settings(generic.load().artifacts[FAST_KIND].settings)
    assert generic_record.people == ("alice", "bob") and generic_record.start == "the previous generic model"
    bob = store.load("bob").artifacts[FAST_KIND].settings[KEY]
    assert bob["people"] == ["alice", "bob"] and bob["direct"] == ["bob"] and bob["start"] == "a generic model"
    alice = store.load("alice").artifacts[FAST_KIND].settings[KEY]
    assert alice["people"] == ["alice"], "alice's model was fine-tuned before bob was enrolled"


def test_rm_removes_the_generic_model_the_other_persons_model_and_adapted_ones(two_people):
    store, generic = two_people
    adapted = AdaptedStore()
    start = Provenance.from_settings(generic.load().artifacts[FAST_KIND].settings)
    album = Provenance.of([], photos=["ab" * 32], folders=["/album"], matched=["alice", "bob"])
    adapted.commit("shoebox", _weights(), {"adaptation": {"album": "/album", "person": None},
                                           KEY: album.fine_tuned_from(start, "fast/generic").to_settings()})
    adapted.commit("old", _weights(), {"adaptation": {"album": "/old", "person": None}})  # keeps no record
    adapted.commit("bobs", _weights(), {"adaptation": {"album": "/b", "person": "bob"},
                                        KEY: Provenance.of(["bob"], folders=["/b"], matched=["alice", "bob"]).to_settings()})
    (store.work_dir("bob", FAST_KIND) / "fast_train.ckpt").write_bytes(b"weights that learned from alice")
    bob_fast = Provenance.from_settings(store.load("bob").artifacts[FAST_KIND].settings)
    store.commit_artifact("bob", FUSION_KIND, _weights(),
                          {KEY: Provenance.of(["bob"]).fine_tuned_from(bob_fast, "bob's fast model").to_settings()})

    removal = remove_person("alice", store=store, generic=generic, adapted=adapted)

    gone = {f.what: f for f in removal.forgotten}
    assert set(gone) == {"the generic model", "bob's fast model", "bob's reference fusion", "adapted restorer 'shoebox'",
                         "adapted restorer 'old'"}
    assert gone["bob's reference fusion"].rebuild == "run 'facefix enroll bob --resume' to rebuild it"
    assert gone["bob's fast model"].reason == "it was fine-tuned from a generic model that learned from alice's photos"
    assert gone["bob's fast model"].rebuild == "run 'facefix enroll bob --resume' to rebuild it"
    assert gone["adapted restorer 'old'"].reason == "it does not record whose photos it learned from, so it cannot tell"
    assert gone["adapted restorer 'shoebox'"].rebuild == "run 'facefix adapt /album --name shoebox' to rebuild it"
    assert store.names() == ["bob"] and not generic.path().exists()
    assert not store.load("bob").artifacts and len(store.load("bob").references) == 2
    assert not (store.path("bob") / "work" / FAST_KIND).exists(), "the resume checkpoint holds the same weights"
    assert adapted.names() == ["bobs"], "learned from bob's album only"
    # bob still restores, with the classical restorer now
    assert FastRestorers(store, generic, device="cpu").get("bob").name == "classical/generic"


def test_rm_empties_the_pseudo_target_cache_which_cannot_tell_whose_faces_it_holds():
    """Album adaptation caches restored copies of album faces; they record no one, so they all go."""
    from facefix.common import paths

    store = ProfileStore()
    _enroll(store, "alice", seed=1)
    cache = paths.pseudo_target_cache()
    for key in ("ab12", "cd34"):
        (cache / key[:2]).mkdir(parents=True, exist_ok=True)
        (cache / key[:2] / f"{key}.png").write_bytes(b"a restored album face")
    removal = remove_person("alice", store=store, generic=GenericStore(), adapted=AdaptedStore())
    (item,) = [f for f in removal.forgotten if f.where == "cache"]
    assert item.what == "album adaptation's pseudo-target cache (2 faces)"
    assert item.rebuild == "the next 'facefix adapt' makes them again"
    assert not cache.exists() and store.names() == []
    # nothing cached: nothing to report
    _enroll(store, "bob", seed=2)
    assert not remove_person("bob", store=store, generic=GenericStore(), adapted=AdaptedStore()).forgotten


def test_an_artifact_learned_from_someone_else_only_is_kept():
    store, generic = ProfileStore(), GenericStore()
    for name in ("alice", "bob", "carol"):
        _enroll(store, name, seed=len(name))
    with store.edit("bob", create=False) as editor:
        editor.save_artifact(FAST_KIND, _weights(), {KEY: Provenance.of(["bob", "carol"]).to_settings()})
        editor.save_artifact(unet_lora_kind("tiny"), _weights(), {KEY: Provenance.of(["bob"]).to_settings()})
        editor.save_artifact(guide_kind("tiny"), _weights(), {KEY: Provenance.of(["alice", "bob"]).to_settings()})
    (store.work_dir("bob", "diffusion/tiny") / "stage2.ckpt").write_bytes(b"guide checkpoint")
    removal = remove_person("alice", store=store, generic=generic)
    assert [(f.what, f.rebuild) for f in removal.forgotten] == [
        ("bob's diffusion guide (tiny)", "run 'facefix enroll bob --resume --engine diffusion' to rebuild it")]
    assert sorted(store.load("bob").artifacts) == sorted([FAST_KIND, unet_lora_kind("tiny")])
    assert not (store.path("bob") / "work" / "diffusion" / "tiny").exists()


def test_a_library_record_counts_who_its_faces_were_matched_against():
    record = Provenance.of(["bob"], photos=["cd" * 32], folders=["/lib"], matched=["alice", "bob"])
    everyone = ["alice", "bob", "dave"]
    assert learned_from(record, "alice", enrolled=everyone) is None, "matched against alice: none of hers"
    assert "matched before dave was enrolled" in learned_from(record, "dave", enrolled=everyone)
    assert "also alice's references" in learned_from(record, "alice", enrolled=everyone, reference_hashes=["cd" * 32])
    unmatched = Provenance.of([], folders=["/crops"], matched=None)
    assert "never matched" in learned_from(unmatched, "alice", enrolled=everyone)
    renamed = Provenance.of(["al"])
    assert "no longer enrolled" in learned_from(renamed, "alice", enrolled=everyone)


@pytest.mark.slow
def test_rm_through_the_cli_lists_each_removal_and_the_person_left_still_restores(enrolled_home, tmp_path, monkeypatch):
    """astro (the enrolled world) and tom, trained after astro: removing astro takes tom's model too."""
    import cv2
    from clirun import facefix

    from facefix.photos import samples
    from facefix.quality.degrade import degrade_fixed

    home = enrolled_home
    monkeypatch.setenv("FACEFIX_HOME", str(home))
    tom = tmp_path / "tom"
    samples.make_variants(samples.insightface_image("Tom_Hanks_54745.png"), tom, count=2, seed=1)
    assert facefix("enroll", "tom", tom, "--min-face", "20", "--no-train", home=home).returncode == 0
    _train(ProfileStore(), GenericStore(), "tom")

    rm = facefix("profiles", "rm", "astro", "--yes", home=home)

    assert rm.returncode == 0, rm.stderr
    text = " ".join(rm.stderr.split())
    assert "the generic model: removed, it learned from astro's photos" in text
    assert ("tom's fast model: removed, it was fine-tuned from a generic model that learned from astro's photos; "
            "run 'facefix enroll tom --resume' to rebuild it") in text
    photo = tmp_path / "tom_old.png"
    clean = cv2.imread(str(samples.insightface_image("Tom_Hanks_54745.png")))[..., ::-1].astype(np.float32) / 255
    cv2.imwrite(str(photo), np.rint(degrade_fixed(clean, 1.0, 2.0, 6.0, 70) * 255).astype(np.uint8)[..., ::-1])
    run = facefix("restore", photo, "-o", tmp_path / "out", "--person", "tom", "--json", home=home)
    assert run.returncode == 0, run.stderr
    assert "classical/generic" in run.stdout


@pytest.mark.slow
def test_a_diffusion_guide_records_the_people_whose_references_were_its_generic_faces(tmp_path):
    from tiny_diffusion import save_tiny_model_set

    from facefix.enroll.diffusion import dual_pivot_config, tune_person

    store, generic = ProfileStore(), GenericStore()
    _enroll(store, "alice", seed=1)
    _enroll(store, "bob", seed=2)
    _train(store, generic, "bob")
    model_set = save_tiny_model_set(tmp_path / "set")
    config = dual_pivot_config(stage1_steps=2, stage2_steps=2, class_images=0, generic_faces=2)
    assert not tune_person("bob", store=store, generic=generic, model_set=str(model_set), device="cpu",
                           config=config).interrupted
    artifacts = store.load("bob").artifacts
    lora, guide = artifacts[unet_lora_kind("tiny")].settings[KEY], artifacts[guide_kind("tiny")].settings[KEY]
    assert lora["people"] == ["bob"], "stage 1 learns from bob's references (and the base model's paintings)"
    assert guide["direct"] == ["alice", "bob"] and guide["start"] == "the generic fast model (its pre-cleaner)"
    removal = remove_person("alice", store=store, generic=generic)
    gone = {f.what: f.reason for f in removal.forgotten}
    assert gone["bob's diffusion guide (tiny)"] == "it learned from alice's photos"
    assert "bob's diffusion generator (tiny)" not in gone and unet_lora_kind("tiny") in store.load("bob").artifacts


def test_enroll_going_on_from_a_library_learned_generic_model_keeps_its_record():
    from facefix.training.fast import train_fast

    store, generic = ProfileStore(), GenericStore()
    crops = np.full((2, 512, 512, 3), 128, np.uint8)
    learned = train_fast(crops, budget_s=30, max_steps=1, model_config=TINY_CONFIG, config=TINY_TRAIN)
    library = Provenance.of(["dave"], photos=["ef" * 32], folders=["/lib"], matched=["dave"])
    generic.commit_artifact(FAST_KIND, learned.tensors, {**learned.settings, "name": "generic", KEY: library.to_settings()})
    _enroll(store, "alice", seed=1)
    _train(store, generic, "alice")
    record = Provenance.from_settings(generic.load().artifacts[FAST_KIND].settings)
    assert record.people == ("alice", "dave") and record.photos == ("ef" * 32,) and record.folders == ("/lib",)
    assert record.matched == ("dave",), "alice was not enrolled when the library's faces were matched"
    alice = Provenance.from_settings(store.load("alice").artifacts[FAST_KIND].settings)
    assert alice.folders == ("/lib",) and "dave" in alice.people


@pytest.mark.slow
def test_an_album_adapted_restorer_records_the_albums_people_and_goes_with_them(enrolled_home, tmp_path, monkeypatch):
    from clirun import facefix
    from PIL import Image
    from tiny_diffusion import save_tiny_model_set

    from facefix.common import paths
    from facefix.common.files import file_sha256
    from facefix.photos import read_photo, samples
    from facefix.quality.degrade import degrade_fixed

    home = enrolled_home
    monkeypatch.setenv("FACEFIX_HOME", str(home))
    album = tmp_path / "album"
    album.mkdir()
    rgb = read_photo(samples.skimage_image("astronaut.png")).rgb_float()
    old = (degrade_fixed(rgb, 2, 2, 8, 50, seed=0) * 255 + 0.5).astype(np.uint8)
    Image.fromarray(old).save(album / "old.jpg", quality=80)
    model_set = save_tiny_model_set(tmp_path / "tiny_set")
    made = facefix("adapt", album, "--model-set", model_set, "--budget", "0.5", "--max-steps", "2", "--name", "shoebox",
                   home=home)
    assert made.returncode == 0, made.stderr
    record = AdaptedStore().slot("shoebox").load().artifacts[FAST_KIND].settings[KEY]
    assert record["direct"] == ["astro"], "the album's face is astro's"
    assert record["photos"] == [file_sha256(album / "old.jpg")] and record["folders"] == [str(album.resolve())]
    assert record["matched"] == ["astro"] and record["start"] == "fast/generic"
    rm = facefix("profiles", "rm", "astro", "--yes", home=home)
    assert rm.returncode == 0, rm.stderr
    assert (f"adapted restorer 'shoebox': removed, it learned from astro's photos; run 'facefix adapt {album.resolve()} "
            "--name shoebox' to rebuild it") in " ".join(rm.stderr.split())
    assert AdaptedStore().names() == []
    # ... and the restored copies of the album's faces adapt cached
    assert "album adaptation's pseudo-target cache (1 face): removed" in " ".join(rm.stderr.split())
    assert not paths.pseudo_target_cache().exists()
