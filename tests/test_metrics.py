"""PSNR, SSIM and identity similarity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from facefix.errors import UsageError
from facefix.quality.metrics import embedding_distance, identity_similarity, psnr, ssim


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.random((8, 8, 3)).astype(np.float32)
    return np.kron(base, np.ones((8, 8, 1), np.float32))  # 64x64 blocky image


def test_psnr_known_values(image):
    assert psnr(image, image) == math.inf
    shifted = np.clip(image, 0.1, 0.9) + 0.1
    assert psnr(np.clip(image, 0.1, 0.9), shifted) == pytest.approx(20.0, abs=1e-4)
    batch = np.stack([image, image])
    assert psnr(batch, batch + 0.01) == pytest.approx(40.0, abs=1e-3)


def test_ssim_is_one_for_identical_and_drops_with_noise(image):
    assert ssim(image, image) == pytest.approx(1.0)
    noisy = np.clip(image + np.random.default_rng(1).normal(0, 0.1, image.shape), 0, 1)
    very = np.clip(image + np.random.default_rng(1).normal(0, 0.3, image.shape), 0, 1)
    assert 1.0 > ssim(image, noisy) > ssim(image, very)
    assert 1.0 > ssim(image, noisy, channel="rgb") > ssim(image, very, channel="rgb")


def test_ssim_agrees_with_scikit_image(image):
    metrics = pytest.importorskip("skimage.metrics")
    noisy = np.clip(image + np.random.default_rng(2).normal(0, 0.1, image.shape), 0, 1)
    ours = ssim(image, noisy, channel="rgb")
    theirs = metrics.structural_similarity(image, noisy, channel_axis=2, data_range=1.0,
                                           gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ours == pytest.approx(theirs, abs=0.01)


def test_shape_mismatch_is_an_error(image):
    with pytest.raises(UsageError, match="shape"):
        psnr(image, image[:32])


def test_identity_similarity_is_cosine():
    a = np.array([1.0, 0.0, 0.0])
    assert identity_similarity(a, a * 3) == pytest.approx(1.0)
    assert identity_similarity(a, np.array([0.0, 2.0, 0.0])) == pytest.approx(0.0)
    rows = identity_similarity(np.eye(3), np.array([[1.0, 0, 0], [1.0, 0, 0], [-1.0, 0, 0]]))
    assert rows.shape == (3,) and rows.tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert embedding_distance(a, np.array([0.0, 1.0, 0.0])) == pytest.approx(math.sqrt(2))
    with pytest.raises(UsageError, match="embedding sizes"):
        identity_similarity(np.ones(128), np.ones(512))
