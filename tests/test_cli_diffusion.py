"""The diffusion engine wired into the CLI: enroll --engine diffusion, make_provider, engine choice.

Offline on the CPU with the tiny model set written to disk and named like any
user's local model set (``--model-set DIR``), so the real locate/load path runs.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from clirun import Result, using_env
from clirun import facefix as run_cli
from helpers_enrolled import copy_home
from PIL import Image
from tiny_diffusion import save_tiny_model_set

from facefix.enroll.diffusion import dual_pivot_config, tune_person
from facefix.enroll.fast import train_person
from facefix.errors import ModelError, ProfileError
from facefix.photos import samples
from facefix.profiles import GenericStore, ProfileStore
from facefix.providers.choose import choose_engine, make_provider
from facefix.providers.diffusion import DiffusionRestorers
from facefix.providers.fast import FastRestorers
from facefix.restorers.fast import TINY_CONFIG
from facefix.restorers.reference import GuidedRestorers
from facefix.training.diffusion_loop import TrainProgress
from facefix.training.loop import TrainConfig

pytestmark = pytest.mark.slow

# Tiny step counts through the hidden, documented enroll options (docs/diffusion.md).
TINY_TUNING = ("--stage1-steps", "4", "--stage2-steps", "3", "--class-images", "0", "--generic-count", "3")


def facefix(*args, home: Path, **env) -> Result:
    return run_cli(*args, home=home, env=env)


@pytest.fixture(scope="module")
def built_world(tmp_path_factory, portrait_photo):
    """'astro' enrolled with a tiny fast model, 'tom' with references only, a tiny model set on disk,
    and astro personalized through ``facefix enroll --engine diffusion``. Read-only: see ``world``."""
    root = tmp_path_factory.mktemp("diffusion_world")
    home = root / "home"
    samples.make_variants(portrait_photo, root / "astro", count=4, seed=3)
    tom = root / "tom_photo.png"
    with Image.open(samples.insightface_image("Tom_Hanks_54745.png")) as im:
        im.convert("RGB").resize((336, 336), Image.Resampling.BICUBIC).save(tom)
    samples.make_variants(tom, root / "tom", count=2, seed=1)
    for name in ("astro", "tom"):
        result = facefix("enroll", name, root / name, "--min-face", "20", "--no-train", home=home)
        assert result.returncode == 0, result.stderr
    # One aligned generic face for --generic-faces (insightface's sample is an aligned crop).
    (root / "generic").mkdir()
    shutil.copy(samples.insightface_image("Tom_Hanks_54745.png"), root / "generic" / "face.png")

    with using_env({"FACEFIX_HOME": str(home), "FACEFIX_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}):
        train_person("astro", store=ProfileStore(), generic=GenericStore(), budget_s=300, max_steps=10,
                     model_config=TINY_CONFIG, train_config=TrainConfig(patch=128, batch=4, warmup_steps=2))
    model_set = save_tiny_model_set(root / "set")
    enroll = facefix("enroll", "astro", "--resume", "--engine", "diffusion", "--model-set", model_set,
                     "--generic-faces", root / "generic", *TINY_TUNING, home=home)
    return {"root": root, "home": home, "set": model_set, "enroll": enroll}


@pytest.fixture
def world(built_world, tmp_path):
    """The built world with this test's own copy of the home, and this test's folder as its root."""
    root = tmp_path / "world"
    shutil.copytree(built_world["root"] / "generic", root / "generic")
    return {**built_world, "root": root, "home": copy_home(built_world["home"], root / "home")}


@pytest.fixture
def home(world, monkeypatch):
    monkeypatch.setenv("FACEFIX_HOME", str(world["home"]))
    return world["home"]


def show(world, name="astro") -> dict:
    result = facefix("profiles", "show", name, "--json", home=world["home"])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_enroll_with_the_diffusion_engine_stores_both_adapters(world, home):
    result = world["enroll"]
    assert result.returncode == 0, result.stderr
    err = " ".join(result.stderr.split())
    assert "fast restorer is trained; going on with the diffusion tuning" in err
    assert "diffusion (tiny): stage 1 4 steps" in err and "stage 2 3 steps" in err
    assert "astro is enrolled" in err
    artifacts = show(world)["artifacts"]
    unet, guide = artifacts["diffusion/tiny/unet_lora"], artifacts["diffusion/tiny/guide"]
    assert unet["settings"]["steps_done"] == 4 and unet["settings"]["model_set"] == "tiny"
    assert unet["settings"]["pivot_prompt"] == "a photo of sks person"
    # Stage 2's conditions come from the generic fast restorer: astro's would pull strangers toward astro.
    assert guide["settings"]["steps_done"] == 3 and guide["settings"]["precleaner"] == "fast/generic"
    # Stage 2's generic faces: tom's 2 references + the 1 face of --generic-faces, none of astro's.
    assert guide["settings"]["faces"] == 3
    profile_dir = ProfileStore().path("astro")
    sizes = [(profile_dir / art["file"]).stat().st_size for art in (unet, guide)]
    assert all(0 < size < 5_000_000 for size in sizes), sizes  # tens of MB at real size (docs/diffusion.md)
    assert not any((profile_dir / "work" / "diffusion" / "tiny").glob("**/*.safetensors")), "checkpoints cleared"


def test_personalized_restorer_differs_from_the_fast_one_and_switching_is_exact(world, home, monkeypatch):
    import facefix.modelsets.parts as diffusion_parts

    loads = []
    real_load = diffusion_parts.load_parts
    monkeypatch.setattr(diffusion_parts, "load_parts", lambda *a, **k: loads.append(1) or real_load(*a, **k))
    store = ProfileStore()
    provider = make_provider("diffusion", store=store, generic=GenericStore(), model_set=str(world["set"]),
                             steps=2, seed=1, device="cpu")
    assert isinstance(provider, DiffusionRestorers) and provider.engine == "diffusion"
    crop = store.load_crops(store.load("astro"))[:1].astype(np.float32) / 255
    alice, stranger = provider.get("astro"), provider.get(None)
    # Nobody's face: the fast generic restorer, not an untuned ControlNet with an empty prompt.
    assert (alice.name, stranger.name) == ("diffusion/astro", "fast/generic")
    personal = alice.restore(crop)
    plain = stranger.restore(crop)
    assert personal.shape == crop.shape and np.isfinite(personal).all()
    assert np.abs(personal - plain).max() > 1e-3, "the diffusion restorer is not the fast one"
    # Back and forth gives the same pixels, and the base loaded once.
    np.testing.assert_array_equal(alice.restore(crop), personal)
    np.testing.assert_array_equal(stranger.restore(crop), plain)
    np.testing.assert_array_equal(alice.restore(crop), personal)
    assert len(loads) == 1
    # tom has no adapters: his fast restorer (the generic one: he has no trained model), no diffusion.
    assert provider.get("tom").name == "fast/generic"


def test_restore_through_the_cli_with_the_diffusion_engine(world, portrait_photo):
    out = world["root"] / "restored"
    args = ("restore", portrait_photo, "--person", "astro", "--engine", "diffusion", "--model-set", world["set"],
            "--steps", "2", "--seed", "3", "--device", "cpu", "--ext", "png", "--json")
    result = facefix(*args, "-o", out, home=world["home"])
    assert result.returncode == 0, result.stderr
    (record,) = [r for r in map(json.loads, result.stdout.splitlines()) if r.get("restorer")]
    assert record["restorer"] == "diffusion/astro"
    again = facefix(*args, "-o", world["root"] / "again", home=world["home"])
    assert again.returncode == 0, again.stderr
    first, second = (np.asarray(Image.open(next(d.glob("*.png")))) for d in (out, world["root"] / "again"))
    np.testing.assert_array_equal(first, second)  # --seed reproduces


def test_auto_on_this_cpu_machine_picks_fast_and_says_why(world, home, monkeypatch, caplog):
    # A machine without CUDA, whatever this one has.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    engine, why = choose_engine("auto", str(world["set"]))
    assert engine == "fast" and "no CUDA GPU" in why
    with caplog.at_level(logging.WARNING, logger="facefix"):
        provider = make_provider("auto", store=ProfileStore(), generic=GenericStore(), model_set=str(world["set"]))
    # the fast engine, its people's faces guided by their references
    assert isinstance(provider, GuidedRestorers) and isinstance(provider.inner, FastRestorers)
    assert provider.engine == "fast"
    # the photo's own eyes and mouth are kept unless asked otherwise
    assert provider.fidelity.sigma > 0
    assert make_provider("fast", store=ProfileStore(), generic=GenericStore(),
                         keep_expression=False).fidelity.sigma == 0
    assert "no CUDA GPU" in caplog.text and "astro" in caplog.text, "astro's adapters go unused: say so"
    # With a GPU, auto is diffusion exactly when the weights are on disk.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_engine("auto", str(world["set"])) == ("diffusion", None)
    monkeypatch.setenv("HF_HUB_CACHE", str(world["root"] / "empty_cache"))
    engine, why = choose_engine("auto", None)
    assert engine == "fast" and "facefix models pull sd15-tile" in why
    assert choose_engine("auto", str(world["set"]), device="cpu")[0] == "fast"


def test_enroll_auto_on_cpu_trains_fast_only_and_says_why(world, monkeypatch):
    # A machine without CUDA (the machine this test means), whatever this one has.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = facefix("enroll", "astro", "--resume", "--engine", "auto", "--model-set", world["set"],
                     "--budget", "0.02", home=world["home"], CUDA_VISIBLE_DEVICES="")
    assert result.returncode == 0, result.stderr
    err = " ".join(result.stderr.split())
    assert "using the fast engine: no CUDA GPU found" in err and "training the fast restorer only" in err
    assert "diffusion stage" not in err


def test_diffusion_without_weights_names_the_id_and_the_pull_command(world, home, monkeypatch):
    cache = world["root"] / "empty_cache"
    result = facefix("enroll", "astro", "--resume", "--engine", "diffusion", home=world["home"],
                     HF_HUB_CACHE=str(cache), FACEFIX_MODEL_SET="")
    assert result.returncode == 1
    err = " ".join(result.stderr.split())
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in err and "facefix models pull sd15-tile" in err
    assert str(cache) in err, "where it looked"
    assert "training" not in err.lower(), "it failed before any training"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("FACEFIX_MODEL_SET", raising=False)
    with pytest.raises(ModelError, match=r"facefix models pull sd15-tile"):
        make_provider("diffusion", store=ProfileStore(), generic=GenericStore())


def test_adapters_of_one_model_set_are_refused_by_another(world, home, caplog):
    store, generic = ProfileStore(), GenericStore()
    # Same name, another guide: the artifacts' kinds match but their provenance does not.
    clash = save_tiny_model_set(world["root"] / "clash", condition="latent", name="tiny")
    provider = make_provider("diffusion", store=store, generic=generic, model_set=str(clash), steps=2)
    with pytest.raises(ProfileError, match=r"made for model set 'tiny' \(guide .*\), not 'tiny'"):
        provider.get("astro")
    # Another set altogether: astro gets the generic diffusion restorer, and a warning naming both sets.
    other = save_tiny_model_set(world["root"] / "other", name="other")
    with caplog.at_level(logging.WARNING, logger="facefix"):
        restorer = make_provider("diffusion", store=store, generic=generic, model_set=str(other)).get("astro")
    assert restorer.name == "fast/astro"
    assert "made for model set 'tiny', not 'other'" in caplog.text and "--model-set other" in caplog.text
    # The same set copied elsewhere (same content) is the same set.
    moved = world["root"] / "moved_set"
    shutil.copytree(world["set"], moved)
    assert make_provider("diffusion", store=store, generic=generic, model_set=str(moved)).get("astro").name == "diffusion/astro"


def test_ctrl_c_keeps_the_checkpoint_and_resume_ends_with_the_same_adapter(world, home):
    store, generic = ProfileStore(), GenericStore()
    config = dual_pivot_config(stage1_steps=4, stage2_steps=3, class_images=0, generic_faces=3)
    config = type(config)(**{**config.__dict__, "stage1": type(config.stage1)(
        **{**config.stage1.__dict__, "checkpoint_every": 2})})
    before = store.load("astro").artifacts["diffusion/tiny/unet_lora"]
    previous = store.load_artifact("astro", "diffusion/tiny/unet_lora")[0]

    def interrupt(report):
        if isinstance(report, TrainProgress) and report.stage == "stage1" and report.step == 3:
            raise KeyboardInterrupt

    kwargs = dict(store=store, generic=generic, model_set=str(world["set"]), device="cpu", config=config,
                  generic_folder=world["root"] / "generic")
    stopped = tune_person("astro", on_progress=interrupt, **kwargs)
    assert stopped.interrupted and stopped.stage1_steps == 2 and not stopped.kinds
    assert store.load("astro").artifacts["diffusion/tiny/unet_lora"] == before, "nothing committed"
    seen = []
    done = tune_person("astro", resume=True, on_progress=seen.append, **kwargs)
    assert not done.interrupted and done.stage1_steps == 4
    first = [r for r in seen if isinstance(r, TrainProgress)][0]
    assert (first.stage, first.step, first.resumed_from) == ("stage1", 3, 2)
    # The resumed run ends with exactly the LoRA the uninterrupted CLI run made.
    resumed = store.load_artifact("astro", "diffusion/tiny/unet_lora")[0]
    assert resumed.keys() == previous.keys()
    assert all(torch.equal(resumed[k], previous[k]) for k in previous)


def test_tuning_needs_the_fast_model_first(world, home):
    with pytest.raises(ProfileError, match=r"no fast restorer yet.*--engine fast"):
        tune_person("tom", store=ProfileStore(), generic=GenericStore(), model_set=str(world["set"]), device="cpu")


def test_pulled_from_the_hub_then_enroll_and_restore_offline(world, portrait_photo, tmp_path, monkeypatch):
    """`models pull` through the faithful fake hub (a guide with both .bin and .safetensors, the base
    with every format), then `enroll --engine diffusion` and `restore --engine diffusion`, offline."""
    from fake_hub import FakeHub, controlnet_like_guide, sd15_like_base

    from facefix.cli.main import main as cli_main
    from facefix.modelsets.registry import ModelSet, write_local_model_set

    cache, home = tmp_path / "hf", tmp_path / "home"
    shutil.copytree(world["home"], home)  # astro with a fast model; the world's own profile untouched
    for name in ("FACEFIX_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("FACEFIX_HOME", str(home))
    hub = FakeHub()
    hub.add("org/tiny-sd15", sd15_like_base(world["set"] / "base"), commit="1" * 40)
    hub.add("org/tiny-canny", controlnet_like_guide(world["set"] / "guide", safetensors=True, pickle=True),
            commit="2" * 40)
    hub.install(monkeypatch)
    assert cli_main(["models", "pull", "--base", "org/tiny-sd15", "--guide", "org/tiny-canny"]) == 0
    # A model-set directory naming the two hub ids, as a user would keep one.
    spec = write_local_model_set(tmp_path / "hubset", ModelSet(
        name="hubtiny", base="org/tiny-sd15", guide="org/tiny-canny", variant="fp16")).parent
    env = {"HF_HUB_CACHE": str(cache)}
    enroll = facefix("enroll", "astro", "--resume", "--engine", "diffusion", "--model-set", spec,
                     "--generic-faces", world["root"] / "generic", *TINY_TUNING, home=home, **env)
    assert enroll.returncode == 0, enroll.stderr
    assert "diffusion (hubtiny): stage 1 4 steps" in " ".join(enroll.stderr.split())
    out = tmp_path / "restored"
    restore = facefix("restore", portrait_photo, "--person", "astro", "--engine", "diffusion", "--model-set", spec,
                      "--steps", "2", "--device", "cpu", "--ext", "png", "--json", "-o", out, home=home, **env)
    assert restore.returncode == 0, restore.stderr
    (record,) = [r for r in map(json.loads, restore.stdout.splitlines()) if r.get("restorer")]
    assert record["restorer"] == "diffusion/astro"
    checked = facefix("models", "verify", spec, "--offline", home=home, **env)
    assert checked.returncode == 0, checked.stderr
