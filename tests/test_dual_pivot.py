"""Dual-Pivot Tuning on tiny real components: stage 1 learns, adapters round-trip, stage 2 trains only the guide."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_diffusion import BlurRestorer, smooth_faces, tiny_parts

from facefix.restorers.adapters import (
    apply_guide_adapter,
    apply_unet_lora,
    save_unet_lora_file,
)
from facefix.training import diffusion_loop as common
from facefix.training.dual_pivot import (
    DualPivotConfig,
    guide_kind,
    run_dual_pivot,
    unet_lora_kind,
)
from facefix.training.generic_faces import cached_generic_faces, generic_prompts
from facefix.training.stage1 import Stage1Config, train_stage1
from facefix.training.stage2 import Stage2Config, train_stage2

FAST1 = Stage1Config(steps=40, lr=5e-3, batch_size=2, checkpoint_every=10, gradient_checkpointing=False)
FAST2 = Stage2Config(steps=12, lr=5e-3, batch_size=2, warmup=0, checkpoint_every=4)


def degrade(face: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(face + rng.normal(0, 0.08, face.shape), 0, 1).astype(np.float32)


@pytest.fixture
def parts(tmp_path):
    return tiny_parts(tmp_path)


@pytest.fixture(scope="module")
def references():
    return smooth_faces(3, 64, seed=0)


def fixed_loss(parts, images: np.ndarray, prompt: str) -> float:
    """Denoising loss on fixed noise and timesteps: comparable before and after training."""
    scheduler = parts.noise_scheduler()
    mean, _ = common.encode_distribution(parts, common.to_model_images(images, parts.resolution, "cpu"))
    gen = torch.Generator().manual_seed(123)
    losses = []
    with torch.no_grad():
        embeds = parts.encode_prompt([prompt]).expand(len(mean), -1, -1)
        for _ in range(8):
            noisy, noise, t = common.noised(scheduler, mean, gen)
            pred = parts.unet(noisy, t, encoder_hidden_states=embeds).sample
            losses.append(torch.mean((pred - noise) ** 2).item())
    return float(np.mean(losses))


def unet_output(parts, prompt="a photo of sks person") -> torch.Tensor:
    gen = torch.Generator().manual_seed(7)
    latents = torch.randn((1, 4, 16, 16), generator=gen)
    with torch.no_grad():
        return parts.unet(latents, torch.tensor([500]), encoder_hidden_states=parts.encode_prompt([prompt])).sample


def guide_output(parts) -> torch.Tensor:
    gen = torch.Generator().manual_seed(8)
    latents = torch.randn((1, 4, 16, 16), generator=gen)
    cond = torch.rand((1, 3, 32, 32), generator=gen)
    embeds = parts.encode_prompt(["a photo of sks person", ""])
    with torch.no_grad():
        return parts.predict_noise(latents, torch.tensor([500]), embeds[:1], embeds[1:], cond)


def test_stage1_loss_falls_and_the_lora_changes_the_output(parts, references, tmp_path):
    before_loss = fixed_loss(parts, references, FAST1.pivot_prompt)
    before_out = unet_output(parts)
    reports = []
    result = train_stage1(parts, references, FAST1, work_dir=tmp_path / "s1", progress=reports.append)
    after_loss = fixed_loss(parts, references, FAST1.pivot_prompt)
    assert after_loss < 0.95 * before_loss, (before_loss, after_loss)
    assert not torch.allclose(unet_output(parts), before_out, atol=1e-4)
    assert [r.step for r in reports] == list(range(1, FAST1.steps + 1))
    assert len(result.losses) == FAST1.steps
    assert all(k.startswith("unet.") and (".lora.down." in k or ".lora.up." in k) for k in result.tensors)
    assert all(v.dtype == torch.float32 for v in result.tensors.values())
    json.dumps(result.settings)  # the profile store writes it as JSON
    assert result.settings["pivot_prompt"] == "a photo of sks person"


def test_saved_adapters_reproduce_outputs_exactly(parts, references, tmp_path):
    result = train_stage1(parts, references, FAST1)
    expected = unet_output(parts)
    fresh = tiny_parts(tmp_path / "fresh")
    apply_unet_lora(fresh.unet, result.tensors, result.settings)
    assert torch.equal(unet_output(fresh), expected)

    # The file is the diffusers layout: StableDiffusionPipeline.load_lora_weights reads it.
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    save_unet_lora_file(tmp_path / "lora", result.tensors, result.settings)
    other = tiny_parts(tmp_path / "other")
    pipe = StableDiffusionPipeline(
        vae=other.vae, text_encoder=other.text_encoder, tokenizer=other.tokenizer, unet=other.unet,
        scheduler=DDIMScheduler.from_config(other.scheduler_config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.load_lora_weights(tmp_path / "lora")
    torch.testing.assert_close(unet_output(other), expected, rtol=0, atol=1e-6)


def test_stage1_resumes_from_the_last_checkpoint_after_ctrl_c(tmp_path, references):
    config = Stage1Config(steps=8, lr=5e-3, checkpoint_every=3, gradient_checkpointing=False)
    straight = train_stage1(tiny_parts(tmp_path / "a"), references, config)

    def interrupt(report):
        if report.step == 5:
            raise KeyboardInterrupt

    work = tmp_path / "work"
    with pytest.raises(KeyboardInterrupt):
        train_stage1(tiny_parts(tmp_path / "b"), references, config, work_dir=work, progress=interrupt)
    assert (work / common.CHECKPOINT).is_file()
    seen = []
    resumed = train_stage1(tiny_parts(tmp_path / "c"), references, config, work_dir=work, progress=seen.append)
    assert seen[0].step == 4 and seen[0].resumed_from == 3
    assert resumed.losses == straight.losses
    for key, value in straight.tensors.items():
        assert torch.equal(resumed.tensors[key], value), key


def test_stage1_with_prior_preservation_trains(parts, references):
    class_images = smooth_faces(2, 64, seed=9)
    result = train_stage1(parts, references, Stage1Config(steps=3, gradient_checkpointing=True), class_images=class_images)
    assert result.settings["class_images"] == 2 and len(result.losses) == 3


def test_stage2_trains_only_the_guide_and_leaves_the_unet_bit_for_bit(parts, references, tmp_path):
    stage1 = train_stage1(parts, references, FAST1)
    unet_before = {k: v.clone() for k, v in parts.unet.state_dict().items()}
    guide_before = guide_output(parts)
    precleaner = BlurRestorer()
    result = train_stage2(
        parts, smooth_faces(4, 64, seed=3), degrade, pivot_prompt=FAST1.pivot_prompt,
        unet_lora=stage1.tensors, precleaner=precleaner, config=FAST2, work_dir=tmp_path / "s2",
    )  # fmt: skip
    unet_after = parts.unet.state_dict()
    assert unet_before.keys() == unet_after.keys()
    for key, value in unet_before.items():
        assert torch.equal(value, unet_after[key]), key
    assert not any(p.requires_grad for p in parts.unet.parameters())
    assert precleaner.calls == FAST2.steps  # the guide saw pre-cleaned faces, as at inference
    assert not torch.allclose(guide_output(parts), guide_before, atol=1e-5)
    assert any(k.startswith("lora.") for k in result.tensors)
    assert any(k.startswith("full.controlnet_cond_embedding.") for k in result.tensors)
    assert result.settings["unet_lora_digest"]
    json.dumps(result.settings)

    # The adapter round-trips onto a fresh guide.
    fresh = tiny_parts(tmp_path / "fresh")
    apply_unet_lora(fresh.unet, stage1.tensors, stage1.settings)
    apply_guide_adapter(fresh.guide, result.tensors, result.settings)
    assert torch.equal(guide_output(fresh), guide_output(parts))


def test_generic_faces_are_painted_once_and_cached(parts, tmp_path):
    assert len(set(generic_prompts(50))) == 50
    first = cached_generic_faces(parts, 2, directory=tmp_path / "gen", steps=2, batch_size=2)
    assert first.shape == (2, 32, 32, 3) and first.dtype == np.float32
    assert len(list((tmp_path / "gen").glob("*.png"))) == 2
    calls = []
    again = cached_generic_faces(parts, 2, directory=tmp_path / "gen", progress=lambda *a: calls.append(a))
    assert calls == []  # nothing painted again
    np.testing.assert_allclose(again, first, atol=1 / 255)


def test_class_images_are_painted_from_the_class_prompt_stage1_trains_them_under(parts, references, tmp_path, monkeypatch):
    """DreamBooth prior preservation: class images are the base model's answer to the class prompt itself.

    Painting them from the portrait prompts (as generic faces are) and training
    them under the class prompt would shift the class prior, not preserve it.
    """
    from facefix.common.paths import cache_dir
    from facefix.training import dual_pivot, generic_faces

    painted, trained = [], []
    real_generate, real_train = generic_faces.generate_images, dual_pivot.train_stage1

    def generate_spy(parts, prompts, **kwargs):
        painted.append((list(prompts), kwargs))
        return real_generate(parts, prompts, **kwargs)

    def train_spy(parts, references, config, *, class_images=None, **kwargs):
        trained.append((config.class_prompt, None if class_images is None else len(class_images)))
        return real_train(parts, references, config, class_images=class_images, **kwargs)

    monkeypatch.setattr(generic_faces, "generate_images", generate_spy)
    monkeypatch.setattr(dual_pivot, "train_stage1", train_spy)
    config = DualPivotConfig(
        stage1=Stage1Config(class_noun="man", steps=1), stage2=Stage2Config(steps=1), class_images=3,
        generic_faces=3, generation_steps=2,
    )  # fmt: skip
    run_dual_pivot(
        parts, references, degrade=degrade, precleaner=BlurRestorer(), generic_faces=smooth_faces(3, 64, seed=4),
        config=config, work_dir=tmp_path / "work",
    )  # fmt: skip
    assert trained == [("a photo of a man", 3)]
    assert [prompt for prompts, _ in painted for prompt in prompts] == ["a photo of a man"] * 3
    # DreamBooth's reference script paints them with the pipeline's defaults: CFG 7.5, no negative prompt.
    assert all(kw.get("guidance_scale") == 7.5 and kw.get("negative_prompt") == "" for _, kw in painted)

    from facefix.training.generic_faces import cached_class_images, class_images_key

    # Cached apart from stage 2's generic faces ...
    folders = [p.parent for p in cache_dir().rglob("0000.png")]
    assert len(folders) == 1 and (cache_dir() / "generated" / "class-images") in folders[0].parents
    # ... read back, not painted again, for the same prompt and model set ...
    painted.clear()
    again = cached_class_images(parts, "a photo of a man", 3, steps=2)
    assert painted == [] and again.shape == (3, 32, 32, 3)
    assert not np.allclose(again[0], again[1])  # one prompt, different noise
    # ... and keyed by the class prompt and the model set: a change of either paints a new set.
    key = class_images_key(parts, "a photo of a man", steps=2)
    assert class_images_key(parts, "a photo of a woman", steps=2) != key
    other_set = type("Parts", (), {"provenance": {**parts.provenance, "base_revision": "other"}})()
    assert class_images_key(other_set, "a photo of a man", steps=2) != key
    cached_class_images(parts, "a photo of a woman", 1, steps=2)
    assert [prompts for prompts, _ in painted] == [["a photo of a woman"]]
    # A cache folder given by hand that holds another prompt's images is painted again.
    painted.clear()
    cached_class_images(parts, "a photo of a man", 1, steps=2, directory=tmp_path / "own")
    cached_class_images(parts, "a photo of a woman", 1, steps=2, directory=tmp_path / "own")
    assert [prompts for prompts, _ in painted] == [["a photo of a man"], ["a photo of a woman"]]


def test_topping_up_a_cache_paints_the_images_a_full_run_would(parts, tmp_path):
    """Noise comes from each image's index in the cache: one prompt, topped up, never repeats an image."""
    from facefix.training.generic_faces import cached_class_images

    cached_class_images(parts, "a photo of a person", 2, steps=2, directory=tmp_path / "topped")
    topped = cached_class_images(parts, "a photo of a person", 3, steps=2, directory=tmp_path / "topped")
    full = cached_class_images(parts, "a photo of a person", 3, steps=2, directory=tmp_path / "full")
    np.testing.assert_allclose(topped, full, atol=1 / 255)
    assert not np.allclose(topped[2], topped[0]) and not np.allclose(topped[2], topped[1])


def test_run_dual_pivot_returns_both_artifacts(parts, references, tmp_path):
    config = DualPivotConfig(stage1=Stage1Config(steps=3), stage2=Stage2Config(steps=3), class_images=0, generic_faces=3)
    reports = []
    artifacts = run_dual_pivot(
        parts, references, degrade=degrade, precleaner=BlurRestorer(),
        generic_faces=smooth_faces(3, 64, seed=4), config=config, work_dir=tmp_path, progress=reports.append,
    )  # fmt: skip
    assert set(artifacts) == {unet_lora_kind("tiny"), guide_kind("tiny")}
    assert [r.stage for r in reports] == ["stage1"] * 3 + ["stage2"] * 3
    assert (tmp_path / "stage1" / common.CHECKPOINT).is_file()
    assert (tmp_path / "stage2" / common.CHECKPOINT).is_file()


def test_gradient_checkpointing_auto_is_off_where_memory_is_not_short():
    from facefix.training.diffusion_loop import checkpointing_for

    assert checkpointing_for("auto", torch.device("cpu")) is False
    assert checkpointing_for(True, torch.device("cpu")) is True
    assert checkpointing_for(False, torch.device("cpu")) is False
    with pytest.raises(ValueError, match="gradient_checkpointing"):
        checkpointing_for("sometimes", torch.device("cpu"))


def test_no_surviving_painted_face_still_stacks_with_the_references():
    """Alignment can drop every painted face; the empty set must take the references' size."""
    from facefix.training.dual_pivot import _resize

    empty = _resize(np.zeros((0, 32, 32, 3), np.float32), 512)
    assert empty.shape == (0, 512, 512, 3)
    assert np.concatenate([np.zeros((2, 512, 512, 3), np.float32), empty]).shape == (2, 512, 512, 3)
