"""Review fixes: one UTF-8 check for file names (run record and JSON report); a hub base added by
``models add`` pulls the fp16 files where the repository lists them (tests/fake_hub.py); the classical
restorer and the face measures share one template face region."""

from __future__ import annotations

import base64
import os

import cv2
import numpy as np
import pytest
from fake_hub import FakeHub, controlnet_like_guide, sd15_like_base
from tiny_diffusion import save_tiny_model_set

from facefix.cli.main import main
from facefix.common.text import is_utf8
from facefix.modelsets.hub import is_available
from facefix.modelsets.registry import REGISTRY, add_model_set, resolve_model_set
from facefix.photos import samples
from facefix.quality.degrade import degrade_level, resize_like_alignment
from facefix.quality.metrics import TEMPLATE_FACE_ELLIPSE_512, psnr, template_face_mask, template_face_region
from facefix.restore.report import json_safe
from facefix.restorers import classical


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


# --------------------------------------------------------------------------- one template face region


def _old_classical_ellipse(size: int) -> np.ndarray:
    """The ellipse the classical restorer drew for itself before it used the measures' one."""
    mask = np.zeros((size, size), np.uint8)
    k = size / 512.0
    cv2.ellipse(mask, (round(256 * k), round(290 * k)), (round(140 * k), round(180 * k)), 0, 0, 360, 1, -1)
    return mask.astype(bool)


def test_the_classical_restorer_measures_blur_in_the_measures_template_face_region(monkeypatch):
    asked = []

    def region(size):
        asked.append(size)
        return template_face_region(size)

    monkeypatch.setattr(classical, "template_face_region", region)
    crop = np.random.default_rng(0).random((512, 512), np.float32)
    classical.estimate_blur(crop)
    assert asked == [512]
    (cx, cy), (ax, ay) = TEMPLATE_FACE_ELLIPSE_512
    inside = template_face_region(512)
    assert inside[round(cy), round(cx)] and inside[round(cy - ay) + 2, round(cx)] and inside[round(cy + ay) - 2, round(cx)]
    assert not inside[round(cy - ay) - 2, round(cx)] and not inside[round(cy), round(cx + ax) + 2]
    # The soft mask of the face measures is the same ellipse, feathered.
    soft = template_face_mask(512) >= 0.5
    assert (soft & inside).sum() / (soft | inside).sum() > 0.98


def test_the_shared_region_leaves_the_classical_restorers_output_as_good_as_before(monkeypatch):
    face = cv2.cvtColor(cv2.imread(str(samples.insightface_image("Tom_Hanks_54745.png"))), cv2.COLOR_BGR2RGB)
    clean = resize_like_alignment(face.astype(np.float32) / 255.0, 512, 512)
    restorer = classical.ClassicalRestorer()
    for level, seed in (("moderate", 0), ("moderate", 1), ("severe", 1)):
        bad = degrade_level(clean, level, seed=seed)
        now = restorer.restore_one(bad)
        with monkeypatch.context() as before:
            before.setattr(classical, "template_face_region", _old_classical_ellipse)
            then = restorer.restore_one(bad)
        # Not bit-identical (the old ellipse sat 8 px lower, 2 px narrower), but the same restoration:
        assert psnr(now, then) > 45.0, (level, seed)
        assert abs(psnr(now, clean) - psnr(then, clean)) < 0.1, (level, seed)
