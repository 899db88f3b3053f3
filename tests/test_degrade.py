"""The synthetic degradation model: kernel, determinism, levels, recipes, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facefix.errors import UsageError
from facefix.quality import degrade as D
from facefix.quality.metrics import psnr


@pytest.fixture(scope="module")
def face(portrait_photo) -> np.ndarray:
    """A real 256x256 crop around the astronaut's face, float32 in [0, 1]."""
    img = np.asarray(Image.open(portrait_photo).convert("RGB"), dtype=np.float32) / 255.0
    return np.ascontiguousarray(img[0:256, 128:384])


def test_kernel_is_41px_normalised_and_anisotropic_when_asked():
    k = D.gaussian_kernel(3.0)
    assert k.shape == (D.KERNEL_SIZE, D.KERNEL_SIZE) == (41, 41)
    assert k.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(k, k.T) and np.unravel_index(k.argmax(), k.shape) == (20, 20)
    aniso = D.gaussian_kernel(1.0, 6.0, theta=0.0)
    # Wider along y than along x: more weight down the centre column than across the centre row.
    assert aniso[:, 20].sum() > 2 * aniso[20, :].sum()


def test_same_seed_same_result_other_seed_other_result(face):
    a = D.degrade(face, 3)
    b = D.degrade(face, np.random.default_rng(3))
    c = D.degrade(face, 4)
    assert a.shape == face.shape and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert 0.0 <= a.min() and a.max() <= 1.0


def test_batches_are_degraded_image_by_image(face):
    batch = np.stack([face, face[:, ::-1]])
    out = D.degrade(batch, 0)
    assert out.shape == batch.shape
    assert not np.array_equal(out[0], out[1][:, ::-1])  # each image gets its own draw


def test_fixed_levels_get_worse_in_order(face):
    mild = D.degrade_fixed(face, sigma=1.0, scale=2.0, noise=2.0, jpeg=90, seed=0)
    moderate = D.degrade_level(face, "moderate", seed=0)
    severe = D.degrade_level(face, "severe", seed=0)
    scores = [psnr(x, face) for x in (mild, moderate, severe)]
    assert scores[0] > scores[1] > scores[2] > 10.0
    assert np.array_equal(moderate, D.degrade_level(face, "moderate", seed=0))


def test_recipes_match_the_field_table():
    assert D.get_recipe("default") == D.DegradationRecipe()
    assert D.DegradationRecipe().sigma == (0.1, 10.0) and D.DegradationRecipe().scale == (0.8, 8.0)
    assert D.DegradationRecipe().noise == (0.0, 20.0) and D.DegradationRecipe().jpeg == (60, 100)
    assert D.get_recipe("codeformer").scale == (1.0, 12.0)
    assert D.get_recipe("kuai").scale == (0.8, 32.0) and D.get_recipe("kuai").jpeg == (30, 100)
    rng = np.random.default_rng(0)
    draws = [D.sample_degradation(D.get_recipe("default"), rng) for _ in range(200)]
    assert all(0.1 <= d.sigma_x <= 10 and 0.8 <= d.scale <= 8 and 60 <= d.jpeg <= 100 for d in draws)
    assert any(d.sigma_x != d.sigma_y for d in draws) and any(d.sigma_x == d.sigma_y for d in draws)


def test_unknown_names_say_what_exists(face):
    with pytest.raises(UsageError, match="codeformer"):
        D.get_recipe("gfpgan-v9")
    with pytest.raises(UsageError, match="moderate"):
        D.degrade_level(face, "awful")


def test_augmentation_is_seeded_and_can_make_gray(face):
    a = D.augment(face, 1, out_size=128)
    assert a.shape == (128, 128, 3)
    assert np.array_equal(a, D.augment(face, 1, out_size=128))
    gray = D.augment(face, 2, D.Augmentation(gray_prob=1.0))
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    still = D.augment(face, 5, D.Augmentation(flip_prob=0, shift=0, scale=(1, 1), rotate=0, brightness=0,
                                              contrast=0, saturation=0, hue=0, gray_prob=0))
    assert np.abs(still - face).max() < 1e-4


def test_random_crop_keeps_pixel_scale(face):
    crop = D.random_crop(face, 64, 0)
    assert crop.shape == (64, 64, 3)
    with pytest.raises(UsageError, match="larger"):
        D.random_crop(face, 512, 0)


def test_augment_can_cut_a_window_directly(face):
    window = D.augment(face, 7, crop=64)
    assert window.shape == (64, 64, 3) and window.dtype == np.float32
    as_u8 = D.augment((face * 255).round().astype(np.uint8), 7, crop=64)
    assert np.abs(as_u8 - window).max() < 3 / 255  # uint8 in: same draw, same window


def test_augment_says_where_its_window_lies_in_the_face(face):
    still = D.Augmentation(flip_prob=0, shift=0, scale=(1, 1), rotate=0, brightness=0, contrast=0,
                           saturation=0, hue=0, gray_prob=0)
    h, w = face.shape[:2]
    for seed in range(3):
        window, (x0, y0, x1, y1) = D.augment(face, seed, still, crop=64, with_box=True)
        c0, r0 = round(x0 * w), round(y0 * h)
        assert (round(x1 * w) - c0, round(y1 * h) - r0) == (64, 64)
        assert np.abs(window - face[r0 : r0 + 64, c0 : c0 + 64]).max() < 1e-5


def test_log_scale_draws_each_doubling_of_the_downscale_equally_often():
    recipe = D.DegradationRecipe(scale=(1.0, 16.0), log_scale=True)
    rng = np.random.default_rng(0)
    scales = np.array([D.sample_degradation(recipe, rng).scale for _ in range(4000)])
    assert 1.0 <= scales.min() and scales.max() <= 16.0
    shares = [np.mean((scales >= 2.0**k) & (scales < 2.0 ** (k + 1))) for k in range(4)]
    assert np.allclose(shares, 0.25, atol=0.03)  # uniform draws would put 7/15 in the top doubling


def test_a_small_face_is_degraded_at_its_own_size_then_enlarged(face):
    """Noise and JPEG of a 128-px face come out as 4-px blobs in the template, not pixel
    grain; the same recipe costs a smaller face more; the caps bound the total loss."""
    from facefix.quality.degrade import Degradation, degrade_enlarged

    flat = np.full((256, 256, 3), 0.5, np.float32)
    noisy = Degradation(0.1, 0.1, 0.0, 1.0, 20.0, None)
    grain = degrade_enlarged(flat, noisy, np.random.default_rng(0), 1.0) - 0.5
    blobs = degrade_enlarged(flat, noisy, np.random.default_rng(0), 4.0) - 0.5
    assert blobs.shape == flat.shape and blobs.dtype == np.float32
    step = lambda n: np.abs(np.diff(n, axis=1)).mean() / n.std()
    assert step(blobs) < 0.5 * step(grain)  # neighbouring pixels agree: the noise was enlarged

    img = face.astype(np.float32)
    mild = Degradation(1.0, 1.0, 0.0, 2.0, 0.0, None)
    at_1 = degrade_enlarged(img, mild, np.random.default_rng(0), 1.0)
    at_3 = degrade_enlarged(img, mild, np.random.default_rng(0), 3.0)  # 256 / 3: an 85-px face
    assert np.abs(at_3 - img).mean() > 1.5 * np.abs(at_1 - img).mean()  # same recipe, smaller face: more lost
    wild = Degradation(10.0, 10.0, 0.0, 8.0, 0.0, None)
    capped = degrade_enlarged(img, wild, np.random.default_rng(0), 8.0)
    assert np.isfinite(capped).all() and capped.std() > 0.01  # capped at x16 overall: something is left
