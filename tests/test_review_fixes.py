"""Review fixes: one UTF-8 check for file names (run record and JSON report); a hub base added by
``models add`` pulls the fp16 files where the repository lists them (tests/fake_hub.py)."""

from __future__ import annotations

import base64
import os

import pytest
from fake_hub import FakeHub, controlnet_like_guide, sd15_like_base
from tiny_diffusion import save_tiny_model_set

from facefix.cli.main import main
from facefix.common.text import is_utf8
from facefix.modelsets.hub import is_available
from facefix.modelsets.registry import REGISTRY, add_model_set, resolve_model_set
from facefix.restore.report import json_safe


def test_one_utf8_check_tells_non_utf8_file_names_apart():
    latin1 = os.fsdecode(b"caf\xe9.jpg")  # a Latin-1 name on a Linux file system: surrogate-escaped
    assert is_utf8("photo.jpg") and is_utf8("café 東京.jpg") and is_utf8("")
    assert not is_utf8(latin1)
    # The report keeps the raw bytes of exactly the names the check calls non-UTF-8.
    for name in ("photo.jpg", "café.jpg", latin1):
        record = json_safe({"file": name, "output": name, "faces": 1})
        assert ("file_bytes" in record) == (not is_utf8(name)) == ("output_bytes" in record)
    assert base64.b64decode(json_safe({"file": latin1})["file_bytes"]) == b"caf\xe9.jpg"


# --------------------------------------------------------------------------- models add: the variant


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    return save_tiny_model_set(tmp_path_factory.mktemp("tiny_set"))


@pytest.fixture
def hub(tiny_set, tmp_path, monkeypatch) -> FakeHub:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    for name in ("FACEFIX_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    fake = FakeHub()
    fake.add("org/with-fp16", sd15_like_base(tiny_set / "base"), commit="a" * 40)  # *.fp16.safetensors beside fp32
    plain = {k: v for k, v in sd15_like_base(tiny_set / "base").items() if ".fp16." not in k}
    fake.add("org/fp32-only", plain, commit="c" * 40)
    fake.add("org/tiny-guide", controlnet_like_guide(tiny_set / "guide", safetensors=True, pickle=False), commit="b" * 40)
    return fake.install(monkeypatch)


def _pulled_base_weights(hub: FakeHub, ref: str) -> list[str]:
    """The base's weight files ``models pull`` asked the hub for."""
    patterns = next(c[3] for c in hub.calls if c[0] == "snapshot_download" and c[1] == ref)
    return sorted(p for p in patterns if p.endswith(".safetensors") and p.startswith(("unet/", "vae/", "text_encoder/")))


def test_an_added_hub_base_pulls_the_fp16_files_the_repository_lists(hub, capsys):
    assert main(["models", "add", "mine", "--base", "org/with-fp16", "--guide", "org/tiny-guide"]) == 0
    assert resolve_model_set("mine").variant == REGISTRY["sd15-tile"].variant == "fp16"
    assert main(["models", "pull", "mine"]) == 0, capsys.readouterr().err
    assert _pulled_base_weights(hub, "org/with-fp16") == [
        "text_encoder/model.fp16.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/diffusion_pytorch_model.fp16.safetensors"]
    assert is_available(resolve_model_set("mine"))


def test_a_hub_base_without_fp16_files_pulls_its_fp32_ones_and_none_asks_for_fp32(hub, tiny_set, capsys):
    assert main(["models", "add", "plain", "--base", "org/fp32-only", "--guide", "org/tiny-guide"]) == 0
    assert main(["models", "pull", "plain"]) == 0, capsys.readouterr().err
    fp32 = ["text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.safetensors"]
    assert _pulled_base_weights(hub, "org/fp32-only") == fp32 and is_available(resolve_model_set("plain"))
    hub.calls.clear()
    assert main(["models", "add", "full", "--base", "org/with-fp16", "--guide", "org/tiny-guide", "--variant", "none"]) == 0
    assert resolve_model_set("full").variant is None
    assert main(["models", "pull", "full"]) == 0, capsys.readouterr().err
    assert _pulled_base_weights(hub, "org/with-fp16") == fp32
    # A local base is read as it is: no variant unless one is named.
    assert add_model_set("local", base=str(tiny_set / "base"), guide=str(tiny_set / "guide")).variant is None
