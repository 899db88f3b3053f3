"""The diffusion restorer end to end on a tiny model set loaded from disk, and the colour fixes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_diffusion import BlurRestorer, save_tiny_model_set, smooth_faces

from facefix.errors import ModelError, ProfileError
from facefix.restorers.base import Restorer
from facefix.restorers.colorfix import (
    adain_color_fix,
    color_fix,
    wavelet_color_fix,
    wavelet_decompose,
)
from facefix.restorers.diffusion import DiffusionRestorer, SamplerSettings
from facefix.training.stage1 import Stage1Config, train_stage1
from facefix.training.stage2 import Stage2Config, train_stage2

FAST = SamplerSettings(steps=3, batch_size=2)


def degrade(face, rng):
    return np.clip(face + rng.normal(0, 0.08, face.shape), 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    return save_tiny_model_set(tmp_path_factory.mktemp("set"))


@pytest.fixture(scope="module")
def artifacts(tiny_set):
    """A person's two artifacts, trained briefly on the tiny set loaded from disk."""
    from facefix.modelsets.parts import load_model_set
    from facefix.modelsets.registry import resolve_model_set

    parts = load_model_set(resolve_model_set(str(tiny_set)))
    stage1 = train_stage1(parts, smooth_faces(3, 64), Stage1Config(steps=4, lr=1e-2))
    stage2 = train_stage2(
        parts, smooth_faces(3, 64, seed=2), degrade, pivot_prompt=stage1.settings["pivot_prompt"],
        unet_lora=stage1.tensors, config=Stage2Config(steps=3, lr=1e-2),
    )  # fmt: skip
    return (stage1.tensors, stage1.settings), (stage2.tensors, stage2.settings)


@pytest.fixture(scope="module")
def crops():
    return smooth_faces(3, 64, seed=5)


def test_restore_end_to_end_from_a_model_set_on_disk(tiny_set, artifacts, crops):
    unet_lora, guide = artifacts
    precleaner = BlurRestorer()
    restorer = DiffusionRestorer.load(
        str(tiny_set), unet_lora=unet_lora, guide_adapter=guide, precleaner=precleaner, settings=FAST, name="diffusion/alice"
    )
    assert isinstance(restorer, Restorer)
    assert restorer.prompt == "a photo of sks person"
    steps = []
    out = restorer.restore(crops, callback=lambda done, total: steps.append((done, total)))
    assert out.shape == crops.shape and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1
    assert precleaner.calls == 1
    assert steps[-1] == (6, 6)  # 2 batches x 3 steps, one count for the whole call
    # Colour is pinned to the pre-cleaned face (here a blur of the input): the wavelet low band matches.
    _, low_out = wavelet_decompose(torch.from_numpy(out).permute(0, 3, 1, 2))
    _, low_in = wavelet_decompose(torch.from_numpy(crops).permute(0, 3, 1, 2))
    assert (low_out - low_in).abs().mean() < 0.05


class TintRestorer:
    """A pre-cleaner that moves colour (as a pre-cleaner undoing a colour cast does)."""

    name = "tint"

    def restore(self, crops: np.ndarray) -> np.ndarray:
        return np.clip(crops + np.array([0.15, 0.0, -0.12], np.float32), 0, 1)


def test_wavelet_colours_come_from_the_pre_cleaned_face_not_the_degraded_input(tiny_set, crops):
    restorer = DiffusionRestorer.load(str(tiny_set), precleaner=TintRestorer(), settings=FAST)
    out = restorer.restore(crops)

    def low(images):
        return wavelet_decompose(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2))[1]

    pre = TintRestorer().restore(crops)
    to_pre = (low(out) - low(pre)).abs().mean().item()
    to_input = (low(out) - low(crops)).abs().mean().item()
    # DiffBIR and the official code take colours from the pre-cleaned face.
    assert to_pre < 0.05 and to_input > 2 * to_pre, (to_pre, to_input)


def test_personal_adapters_change_the_result(tiny_set, artifacts, crops):
    generic = DiffusionRestorer.load(str(tiny_set), settings=FAST).restore(crops)
    personal = DiffusionRestorer.load(str(tiny_set), unet_lora=artifacts[0], guide_adapter=artifacts[1], settings=FAST)
    assert not np.allclose(personal.restore(crops), generic, atol=1e-4)


def test_seed_reproduces_and_batching_does_not_change_a_face(tiny_set, crops):
    def run(**kw):
        return DiffusionRestorer.load(str(tiny_set), settings=SamplerSettings(steps=3, **kw)).restore(crops)

    first = run(seed=3, batch_size=3)
    np.testing.assert_array_equal(first, run(seed=3, batch_size=3))
    np.testing.assert_allclose(first, run(seed=3, batch_size=1), atol=1e-4)
    assert not np.allclose(first, run(seed=4, batch_size=3), atol=1e-4)


def test_grayscale_faces_stay_grayscale(tiny_set, crops):
    gray = np.repeat(crops.mean(axis=-1, keepdims=True), 3, axis=-1)
    out = DiffusionRestorer.load(str(tiny_set), settings=FAST).restore(gray)
    assert np.allclose(out[..., 0], out[..., 1]) and np.allclose(out[..., 1], out[..., 2])


@pytest.mark.parametrize(
    "settings",
    [
        SamplerSettings(steps=4, strength=0.5, color_fix="adain"),
        SamplerSettings(steps=2, guidance_scale=3.0, sampler="unipc", color_fix="none"),
        SamplerSettings(steps=2, low_vram=True, sampler="ddim"),
    ],
    ids=["strength", "cfg", "low-vram"],
)
def test_sampler_options_run(tiny_set, crops, settings):
    out = DiffusionRestorer.load(str(tiny_set), settings=settings).restore(crops[:2])
    assert out.shape == (2, 64, 64, 3) and np.isfinite(out).all()


def test_latent_conditioned_guide(tmp_path, crops):
    model_set = save_tiny_model_set(tmp_path / "latent", condition="latent")
    restorer = DiffusionRestorer.load(str(model_set), settings=FAST, precleaner=BlurRestorer())
    assert restorer.parts.condition == "latent"
    assert restorer.restore(crops[:1]).shape == (1, 64, 64, 3)


def test_an_adapter_for_another_model_set_is_refused(tiny_set, artifacts, tmp_path):
    other = save_tiny_model_set(tmp_path / "other", condition="latent", name="other")
    with pytest.raises(ProfileError, match="made for model set 'tiny'"):
        DiffusionRestorer.load(str(other), unet_lora=artifacts[0], settings=FAST)


def test_a_guide_without_its_unet_lora_is_refused(tiny_set, artifacts):
    with pytest.raises(ProfileError, match="another UNet LoRA"):
        DiffusionRestorer.load(str(tiny_set), guide_adapter=artifacts[1], settings=FAST)


def test_missing_weights_offline_name_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "nothing"))
    with pytest.raises(ModelError, match="facefix models pull sd15-tile"):
        DiffusionRestorer.load(None)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="strength"):
        SamplerSettings(strength=0)
    with pytest.raises(ValueError, match="steps"):
        SamplerSettings(steps=0)


# --------------------------------------------------------------------------- colour fixes


def test_wavelet_fix_takes_low_frequencies_from_the_reference():
    rng = np.random.default_rng(0)
    detail = rng.uniform(0, 1, (64, 64, 3)).astype(np.float32)
    tinted = np.clip(detail * 0.5 + np.array([0.4, 0.1, 0.0], np.float32), 0, 1)  # a colour cast
    reference = np.clip(detail * 0.5 + 0.25, 0, 1)
    fixed = wavelet_color_fix(tinted, reference)
    assert fixed.shape == tinted.shape and fixed.dtype == np.float32
    assert np.abs(fixed.mean(axis=(0, 1)) - reference.mean(axis=(0, 1))).max() < 0.02
    high_before, _ = wavelet_decompose(torch.from_numpy(tinted).permute(2, 0, 1)[None])
    high_after, _ = wavelet_decompose(torch.from_numpy(fixed).permute(2, 0, 1)[None])
    assert torch.corrcoef(torch.stack([high_before.flatten(), high_after.flatten()]))[0, 1] > 0.95


def test_adain_fix_matches_channel_statistics_on_tensors():
    content = torch.rand(2, 3, 32, 32) * 0.3
    style = torch.rand(2, 3, 16, 16) * 0.5 + 0.4  # other size: resized
    fixed = adain_color_fix(content, style, clip=False)
    assert isinstance(fixed, torch.Tensor) and fixed.shape == content.shape
    resized = torch.nn.functional.interpolate(style, size=(32, 32), mode="bilinear", antialias=True)
    torch.testing.assert_close(fixed.mean(dim=(2, 3)), resized.mean(dim=(2, 3)), atol=1e-4, rtol=0)
    assert color_fix(content, style, "none") is content
    with pytest.raises(ValueError, match="unknown colour fix"):
        color_fix(content, style, "magic")
