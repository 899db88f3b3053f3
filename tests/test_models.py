"""Model sets: registry, offline errors, the HF-cache and local-directory paths, verify, meta-size checks."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from clirun import facefix
from fake_hub import FakeHub, controlnet_like_guide, sd15_like_base
from tiny_diffusion import save_tiny_model_set

from facefix.errors import ModelError, UsageError
from facefix.modelsets.hub import convert_guide, locate, pull, record_manifest
from facefix.modelsets.parts import load_parts
from facefix.modelsets.random_weights import build_random_sd15
from facefix.modelsets.registry import (
    DEFAULT_MODEL_SET,
    REGISTRY,
    ModelSet,
    resolve_model_set,
)
from facefix.modelsets.verify import verify
from facefix.restorers.adapters import UNET_TARGETS
from facefix.training.lora import guide_zero_convs, matching_targets


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> Path:
    return save_tiny_model_set(tmp_path_factory.mktemp("tiny_set"))


def _online_fake_hub(tiny_set, tmp_path, monkeypatch, guide_repo: str, *, commit: str, **formats) -> FakeHub:
    """The tiny base and a guide in the given formats on the faithful fake hub, reachable (pull needs it)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("FACEFIX_HOME", str(tmp_path / "home"))
    for name in ("FACEFIX_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    hub = FakeHub()
    hub.add("org/tiny-base", sd15_like_base(tiny_set / "base"), commit="a" * 40)
    hub.add(guide_repo, controlnet_like_guide(tiny_set / "guide", **formats), commit=commit)
    hub.install(monkeypatch)
    return hub


@pytest.fixture
def hub_set(tiny_set, tmp_path, monkeypatch) -> ModelSet:
    """The tiny set pulled from the faithful fake hub (tests/fake_hub.py): real cache layout and file-list cache."""
    _online_fake_hub(tiny_set, tmp_path, monkeypatch, "org/tiny-guide", commit="b" * 40, safetensors=True, pickle=False)
    model_set = ModelSet(name="hubtiny", base="org/tiny-base", guide="org/tiny-guide", variant="fp16")
    pull(model_set)
    # From here on nothing may touch the network.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return model_set


def test_default_set_is_registered_and_live_on_the_hub():
    default = REGISTRY[DEFAULT_MODEL_SET]
    # SD 2.x repositories were withdrawn in 2025; the default must name live ids.
    assert default.base == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert default.guide == "lllyasviel/control_v11f1e_sd15_tile"
    assert default.condition == "image"
    assert resolve_model_set(None) == default


def test_unknown_set_names_the_choices():
    with pytest.raises(UsageError, match="sd15-tile"):
        resolve_model_set("no-such-set")


def test_offline_and_missing_weights_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(ModelError) as info:
        locate(resolve_model_set("sd15-tile"))
    message = str(info.value)
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in message
    assert str(tmp_path / "empty") in message
    assert "facefix models pull sd15-tile" in message


def test_pull_refuses_offline_naming_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(ModelError, match="offline.*facefix models pull sd15-tile"):
        pull(resolve_model_set("sd15-tile"))


def test_tiny_set_loads_through_the_real_loader(tiny_set, monkeypatch):
    monkeypatch.setenv("FACEFIX_MODEL_SET", str(tiny_set))
    model_set = resolve_model_set(None)
    assert model_set.name == "tiny" and model_set.condition == "image"
    paths = locate(model_set)
    assert paths.base_revision.startswith("local-")
    parts = load_parts(paths)
    assert parts.resolution == 32
    assert parts.provenance["model_set"] == "tiny"
    assert not any(p.requires_grad for p in parts.unet.parameters())
    ids = parts.tokenizer("a photo of sks person").input_ids
    assert len(ids) > 5


def test_hub_snapshot_is_found_offline_and_verified(hub_set):
    paths = locate(hub_set)
    assert paths.base_revision == "a" * 40 and paths.guide_revision == "b" * 40
    load_parts(paths)  # same loader as a local directory
    report = verify(hub_set, online=False)
    assert report.ok, report
    assert {c.source for c in report.checks} == {"manifest"}  # the hub's hashes, recorded at pull
    assert any(c.path == "base/unet/diffusion_pytorch_model.fp16.safetensors" for c in report.checks)
    # Without the manifest, the cache's blob names (the hub's hashes) still check every file.
    for manifest in (Path(os.environ["FACEFIX_HOME"]) / "cache" / "models" / "manifests").glob("*.json"):
        manifest.unlink()
    report = verify(hub_set, online=False)
    assert report.ok and {c.source for c in report.checks} == {"cache-blob"}, report


def test_verify_catches_a_corrupt_blob(hub_set):
    paths = locate(hub_set)
    weights = (paths.base_dir / "unet" / "diffusion_pytorch_model.fp16.safetensors").resolve()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    report = verify(hub_set, online=False)
    assert not report.ok
    bad = [c.path for c in report.checks if not c.ok]
    assert bad == ["base/unet/diffusion_pytorch_model.fp16.safetensors"]


def test_verify_of_a_local_set_uses_its_recorded_manifest(tiny_set, tmp_path):
    copy = shutil.copytree(tiny_set, tmp_path / "set")
    record_manifest(copy / "base")
    model_set = resolve_model_set(str(copy))
    assert verify(model_set, online=False).ok
    (copy / "base" / "vae" / "config.json").write_text(json.dumps({"tampered": True}))
    report = verify(model_set, online=False)
    assert [c.path for c in report.checks if not c.ok] == ["base/vae/config.json"]


def test_pickle_only_guide_is_converted_once_to_safetensors(tiny_set, tmp_path, monkeypatch):
    from diffusers import ControlNetModel

    # As lllyasviel/control_v11f1e_sd15_tile is today: a pickle, no safetensors.
    _online_fake_hub(tiny_set, tmp_path, monkeypatch, "org/pickled-guide", commit="c" * 40, safetensors=False,
                     pickle=True)
    model_set = ModelSet(name="pickled", base="org/tiny-base", guide="org/pickled-guide", variant="fp16")
    paths = pull(model_set, convert=False)
    assert (paths.guide_dir / "diffusion_pytorch_model.bin").exists()
    unpickled = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: unpickled.append(k.get("weights_only")) or real_load(*a, **k))
    converted = convert_guide(paths, dtype="float32")
    assert unpickled == [True], "the pickle is read only with torch.load(weights_only=True)"
    assert (converted / "diffusion_pytorch_model.safetensors").is_file()
    again = locate(model_set)
    assert again.guide_dir == converted
    guide = ControlNetModel.from_pretrained(tiny_set / "guide")
    loaded = load_parts(again).guide
    for (name, a), b in zip(guide.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert verify(model_set, online=False).ok


def test_real_size_default_configs_accept_the_lora_targets():
    parts = build_random_sd15(device="meta")
    unet_targets = matching_targets(parts.unet, UNET_TARGETS)
    # SD 1.5: 16 transformer blocks x (self + cross attention) x (q, k, v, out).
    assert len(unet_targets) == 16 * 2 * 4
    guide_targets = matching_targets(parts.guide, UNET_TARGETS)
    assert len(guide_targets) == 7 * 2 * 4  # 6 down + 1 mid transformer blocks
    assert len(guide_zero_convs(parts.guide)) == 13
    from peft import LoraConfig

    parts.unet.add_adapter(LoraConfig(r=16, lora_alpha=16, target_modules=list(UNET_TARGETS)))
    lora = sum(p.numel() for n, p in parts.unet.named_parameters() if "lora_" in n)
    assert 2_000_000 < lora < 4_000_000  # ~3.2 M parameters: ~13 MB in fp32
    parts.guide.add_adapter(LoraConfig(r=32, lora_alpha=32, target_modules=[*UNET_TARGETS, *guide_zero_convs(parts.guide)]))
    assert any("lora_" in n for n, _ in parts.guide.named_parameters())


def _cli(*args, env_extra: dict):
    return facefix(*args, env=env_extra)


def test_cli_models_commands(tiny_set, tmp_path):
    env = {"HF_HUB_CACHE": str(tmp_path / "empty"), "FACEFIX_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    pulled = _cli("models", "pull", env_extra=env)
    assert pulled.returncode == 1
    assert "facefix models pull sd15-tile" in pulled.stderr and "offline" in pulled.stderr
    missing = _cli("models", "path", env_extra=env)
    assert missing.returncode == 1 and str(tmp_path / "empty") in missing.stderr
    listed = _cli("models", "list", "--json", env_extra=env)
    assert listed.returncode == 0
    rows = json.loads(listed.stdout)
    assert rows[0]["name"] == "sd15-tile" and rows[0]["available"] is False
    found = _cli("models", "path", str(tiny_set), env_extra=env)
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == [str(tiny_set / "base"), str(tiny_set / "guide")]
    checked = _cli("models", "verify", str(tiny_set), "--offline", env_extra=env)
    assert checked.returncode == 0, checked.stderr
