"""The generic restorer that is always there: classical filters on a fresh install,
and ``profiles rm`` taking away the generic model that learned from the person."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from clirun import facefix

from facefix.enroll.forget import generic_learned_from, remove_person
from facefix.photos import samples
from facefix.profiles import GenericStore, ProfileStore
from facefix.profiles.kinds import FAST_KIND
from facefix.providers.fast import FastRestorers
from facefix.quality.degrade import (
    degrade_fixed,
    degrade_level,
    resize_like_alignment,
    to_luma,
)
from facefix.quality.metrics import psnr
from facefix.restorers.base import Restorer
from facefix.restorers.classical import ClassicalRestorer, estimate_blur, estimate_noise


def _rgb(path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0


def _sharpness(img: np.ndarray) -> float:
    """Variance of the Laplacian of luma: what 'visibly sharper' is measured with."""
    return float(cv2.Laplacian(to_luma(img).astype(np.float64), cv2.CV_64F, ksize=1).var())


@pytest.fixture(scope="module")
def aligned_face() -> np.ndarray:
    """insightface's Tom Hanks sample: an aligned face, enlarged into the 512 template."""
    face = _rgb(samples.insightface_image("Tom_Hanks_54745.png"))
    return resize_like_alignment(face, 512, 512)


# --------------------------------------------------------------------------- the classical restorer


def test_classical_restorer_keeps_the_interface():
    restorer = ClassicalRestorer()
    assert isinstance(restorer, Restorer) and restorer.name == "classical/generic"
    crops = np.full((2, 512, 512, 3), 0.5, np.float32)
    out = restorer.restore(crops)
    assert out.shape == crops.shape and out.dtype == np.float32
    assert restorer.restore(np.zeros((0, 512, 512, 3), np.float32)).shape == (0, 512, 512, 3)


def test_classical_restorer_removes_noise(aligned_face):
    rng = np.random.default_rng(0)
    noisy = np.clip(aligned_face + rng.normal(0, 12 / 255, aligned_face.shape), 0, 1).astype(np.float32)
    out = ClassicalRestorer().restore(noisy[None])[0]
    assert estimate_noise(to_luma(out)) < 0.5 * estimate_noise(to_luma(noisy))
    assert psnr(out, aligned_face) > psnr(noisy, aligned_face) + 1.0


def test_classical_restorer_leaves_a_clean_sharp_face_nearly_alone():
    face = _rgb(samples.insightface_image("Tom_Hanks_54745.png"))  # 112 px: sharp at its own size
    sharp = cv2.resize(face, (512, 512), interpolation=cv2.INTER_NEAREST)  # hard edges, no noise
    out = ClassicalRestorer().restore(sharp[None])[0]
    assert psnr(out, sharp) > 35.0


def test_classical_restorer_deblurs_and_keeps_psnr(aligned_face):
    bad = degrade_level(aligned_face, "moderate", seed=1)
    out = ClassicalRestorer().restore(bad[None])[0]
    assert psnr(out, aligned_face) >= psnr(bad, aligned_face)
    assert _sharpness(out) > 1.3 * _sharpness(bad)
    assert estimate_blur(to_luma(out)) < estimate_blur(to_luma(bad))


def test_classical_restorer_keeps_gray_gray(aligned_face):
    gray = np.repeat(to_luma(degrade_level(aligned_face, "moderate", seed=2))[..., None], 3, axis=2)
    out = ClassicalRestorer().restore(gray[None])[0]
    assert np.abs(out[..., 0] - out[..., 1]).max() < 1.5 / 255
    assert np.abs(out[..., 1] - out[..., 2]).max() < 1.5 / 255


# --------------------------------------------------------------------------- always there


def test_fresh_install_gets_the_classical_restorer(caplog):
    provider = FastRestorers(ProfileStore(), GenericStore(), device="cpu")
    with caplog.at_level("INFO", logger="facefix"):
        restorer = provider.get(None)
        assert provider.get(None) is restorer  # loaded once, said once
    assert restorer.name == "classical/generic"
    assert sum("classical" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.slow
def test_fresh_install_restores_every_face_of_a_degraded_photo(tmp_path):
    clean = _rgb(samples.insightface_image("t1.jpg"))
    bad = degrade_fixed(clean, 1.5, 2.0, 8.0, 60, seed=0)
    src = tmp_path / "group.png"
    cv2.imwrite(str(src), np.rint(bad * 255).astype(np.uint8)[..., ::-1])
    home = tmp_path / "home"
    run = facefix("restore", src, "-o", tmp_path / "out", "--report", tmp_path / "r.jsonl", home=home)
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    faces = [r for r in records if r["record"] == "face"]
    assert len(faces) >= 4  # t1.jpg has six people; detection on the degraded copy finds most
    assert all(f["skipped"] is None and f["error"] is None and f["restorer"] == "classical/generic" for f in faces)
    out = _rgb(tmp_path / "out" / "group_restored.png")
    for face in faces:
        x0, y0, x1, y1 = (int(round(v)) for v in face["box"])
        region = np.s_[max(0, y0):y1, max(0, x0):x1]
        assert psnr(out[region], clean[region]) >= psnr(bad[region], clean[region]), face
        assert _sharpness(out[region]) >= 1.3 * _sharpness(bad[region]), face


# --------------------------------------------------------------------------- biometric hygiene


def _profile(store: ProfileStore, name: str) -> None:
    with store.edit(name, create=True):
        pass


def _generic_from(generic: GenericStore, people) -> None:
    settings = {"name": "generic", **({} if people is None else {"people": people})}
    generic.commit_artifact(FAST_KIND, {"w": torch.zeros(2)}, settings)
    (generic.work_dir(FAST_KIND) / "train.ckpt").write_bytes(b"weights learned from them")


def test_removing_a_person_removes_the_generic_model_that_learned_from_them():
    store, generic = ProfileStore(), GenericStore()
    for name in ("ann", "bob"):
        _profile(store, name)
    _generic_from(generic, ["ann", "bob"])
    removal = remove_person("bob", store=store, generic=generic)
    assert removal.generic_removed and "bob" in removal.generic_reason
    assert store.names() == ["ann"]
    assert not generic.path().exists(), "the artifact and the resume checkpoints must go"
    assert FastRestorers(store, generic, device="cpu").get(None).name == "classical/generic"


def test_removing_someone_the_generic_model_never_saw_keeps_it():
    store, generic = ProfileStore(), GenericStore()
    for name in ("ann", "bob"):
        _profile(store, name)
    _generic_from(generic, ["ann"])
    assert generic_learned_from("bob", store=store, generic=generic) is None
    assert not remove_person("bob", store=store, generic=generic).generic_removed
    assert FAST_KIND in generic.load().artifacts


@pytest.mark.parametrize("people", [None, ["old-name"]], ids=["unrecorded", "renamed"])
def test_a_generic_model_that_cannot_tell_counts_as_having_learned(people):
    store, generic = ProfileStore(), GenericStore()
    _profile(store, "bob")
    _generic_from(generic, people)
    assert generic_learned_from("bob", store=store, generic=generic) is not None
    assert remove_person("bob", store=store, generic=generic).generic_removed


@pytest.mark.slow
def test_profiles_rm_forgets_the_generic_model_and_restore_still_works(enrolled_home, tmp_path, monkeypatch):
    home = enrolled_home
    monkeypatch.setenv("FACEFIX_HOME", str(home))
    assert GenericStore().exists()
    rm = facefix("profiles", "rm", "astro", "--yes", home=home)
    assert rm.returncode == 0, rm.stderr
    assert "generic model" in rm.stderr and "classical" in rm.stderr
    assert not GenericStore().exists() and not GenericStore().path().exists()
    photo = tmp_path / "photo.png"
    clean = _rgb(samples.skimage_image("astronaut.png"))
    cv2.imwrite(str(photo), np.rint(degrade_fixed(clean, 1.0, 2.0, 6.0, 70) * 255).astype(np.uint8)[..., ::-1])
    run = facefix("restore", photo, "-o", tmp_path / "out", "--json", home=home)
    assert run.returncode == 0, run.stderr
    assert "classical/generic" in run.stdout
