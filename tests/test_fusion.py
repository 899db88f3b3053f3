"""The learned reference fusion: its network, weight file, training pairs and training.

Tiny sizes: the network at a 16-cell grid on 64-px faces for the training
loop; the pairs are made from real aligned faces (scikit-image's astronaut and
re-framed, re-lit copies of her photo) because they need landmarks and warps.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facefix.errors import ModelError, UsageError
from facefix.photos import read_photo, samples
from facefix.restorers.fusion_net import (
    TINY_FUSION,
    FusionConfig,
    FusionNet,
    apply_fusion,
    detail_bands,
    fusion_from_bytes,
    fusion_from_file,
    fusion_to_bytes,
    save_fusion,
)
from facefix.restorers.guides import GuideSet
from facefix.restorers.reference import FusionSettings, ReferenceRestorer
from facefix.training.fusion_train import (
    FusionTrainConfig,
    Pairs,
    build_pairs,
    degradation_plan,
    detail_energy_loss,
    fit_fusion,
    train_fusion,
)


class Identity:
    name = "identity"

    def restore(self, crops):
        return np.asarray(crops, np.float32).copy()


def _texture(size: int, seed: int) -> np.ndarray:
    """A random, face-like-scale texture: fine detail on a smooth base."""
    import cv2

    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.random((size, size, 3)).astype(np.float32), (0, 0), size / 16)
    fine = cv2.GaussianBlur(rng.random((size, size, 1)).astype(np.float32), (0, 0), 0.8)
    return np.clip(0.2 + 0.6 * base + 0.5 * (fine[..., None] - 0.5), 0, 1).astype(np.float32)


def _synthetic_pairs(count: int = 8, size: int = 64, k: int = 2) -> Pairs:
    """Targets with fine detail; the face is the target blurred; guide 0 is the target itself
    (a perfectly warped reference), guide 1 another texture (a reference that disagrees)."""
    import cv2

    targets = [_texture(size, i) for i in range(count)]
    faces = [cv2.GaussianBlur(t, (0, 0), 2.0) for t in targets]
    others = [_texture(size, 100 + i) for i in range(count)]
    chw = lambda a: np.transpose(a, (2, 0, 1)).astype(np.float16)  # noqa: E731
    return Pairs(face=np.stack([chw(f) for f in faces]),
                 guides=np.stack([np.stack([chw(t), chw(o)][:k]) for t, o in zip(targets, others)]),
                 target=np.stack([chw(t) for t in targets]), blur=np.full(count, 8.0, np.float32),
                 distance=np.tile(np.array([0.1, 0.5], np.float32)[:k], (count, 1)),
                 photo=np.arange(count), levels=["synthetic"] * count)


def test_detail_energy_forgives_a_shift_and_not_a_blur():
    """The energy term asks for detail where the truth has it, not for its exact place: a texture
    moved by one pixel costs it little, the same texture blurred costs it much (a pixel loss
    says the opposite, which is why the fusion learned to take little of guides a pixel off)."""
    truth = torch.from_numpy(_texture(64, 0)).permute(2, 0, 1)[None]
    shifted = torch.roll(truth, 1, dims=-1)
    blurred = torch.nn.functional.avg_pool2d(truth, 5, 1, 2, count_include_pad=False)
    assert float(detail_energy_loss(truth, truth, 2.0)) == 0.0
    shift_cost, blur_cost = (float(detail_energy_loss(x, truth, 2.0)) for x in (shifted, blurred))
    assert shift_cost < 0.25 * blur_cost
    l1 = lambda x: float(torch.nn.functional.l1_loss(x, truth))  # noqa: E731
    assert l1(shifted) > 0.8 * l1(blurred)


def test_an_untrained_network_returns_the_face():
    torch.manual_seed(0)
    net = FusionNet(TINY_FUSION).eval()
    face = _texture(64, 1)
    out = apply_fusion(net, face, [_texture(64, 2), _texture(64, 3)], blur=4.0, distance=np.array([0.1, 0.2]))
    np.testing.assert_allclose(out, face, atol=1e-6)


def test_bands_add_up_to_the_detail_above_the_last_edge():
    import cv2

    img = _texture(64, 5)
    bands = detail_bands(img, (1.5, 4.0))
    low = cv2.GaussianBlur(img, (0, 0), 4.0 * 64 / 512, borderType=cv2.BORDER_REFLECT)
    np.testing.assert_allclose(bands.sum(0), np.transpose(img - low, (2, 0, 1)), atol=1e-5)


def test_training_learns_to_take_the_agreeing_guide():
    pairs = _synthetic_pairs()
    config = FusionTrainConfig(size=64, window=32, batch=4, lr=5e-3, warmup_steps=5)
    net, steps, history = fit_fusion(pairs, fusion=TINY_FUSION, config=config, budget_s=60, max_steps=50, seed=0)
    assert steps == 50
    assert np.mean(history[-10:]) < 0.8 * np.mean(history[:10])
    # a new face: it takes the agreeing guide's detail and not the stranger's
    target = _texture(64, 50)
    import cv2

    face = cv2.GaussianBlur(target, (0, 0), 2.0)
    out = apply_fusion(net, face, [target, _texture(64, 51)], blur=8.0, distance=np.array([0.1, 0.5]))
    err = lambda a: float(np.abs(a - target).mean())  # noqa: E731
    assert err(out) < 0.8 * err(face)
    swapped = apply_fusion(net, face, [_texture(64, 51), _texture(64, 52)], blur=8.0, distance=np.array([0.1, 0.5]))
    assert err(swapped) < err(face) * 1.1  # strangers' detail is not pasted in wholesale


def test_weight_file_round_trip_and_errors(tmp_path):
    torch.manual_seed(0)
    net = FusionNet(TINY_FUSION)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))  # not the zero start: the test must see the weights
    net.eval()
    face, guides = _texture(64, 1), [_texture(64, 2), _texture(64, 3)]
    want = apply_fusion(net, face, guides, 4.0, np.array([0.1, 0.2]))
    assert np.abs(want - face).max() > 1e-3
    again = fusion_from_bytes(fusion_to_bytes(net, training={"steps": 3}))
    np.testing.assert_allclose(apply_fusion(again, face, guides, 4.0, np.array([0.1, 0.2])), want, atol=1e-6)
    assert again.settings["training"]["steps"] == 3
    save_fusion(net, tmp_path / "fusion.safetensors")
    loaded = fusion_from_file(tmp_path / "fusion.safetensors")
    np.testing.assert_allclose(apply_fusion(loaded, face, guides, 4.0, np.array([0.1, 0.2])), want, atol=1e-6)
    with pytest.raises(ModelError, match="no reference-fusion weights"):
        fusion_from_file(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a weight file at all")
    with pytest.raises(ModelError, match="not a facefix reference-fusion file"):
        fusion_from_file(tmp_path / "junk.safetensors")
    with pytest.raises(ModelError, match="unknown keys"):
        FusionConfig.from_dict({**TINY_FUSION.to_dict(), "wings": 2})


def test_degradation_plan_has_evals_levels_and_random_ones():
    plan = degradation_plan(3, FusionTrainConfig(random_per_reference=2), seed=0)
    assert len(plan) == 3 and all(len(rows) == 4 for rows in plan)
    assert [r[0] for r in plan[0][:2]] == ["moderate", "severe"]
    sizes = [r[1] for rows in plan for r in rows[2:]]
    assert all(128 <= s <= 400 for s in sizes) and len(set(sizes)) > 1


@pytest.fixture(scope="module")
def astronaut_refs(tmp_path_factory):
    """Five aligned re-framed, re-lit copies of her photo (uint8)."""
    from facefix.faces import estimate_alignment, get_analyzer, warp_face

    analyzer = get_analyzer("dlib")
    folder = tmp_path_factory.mktemp("astro_fusion")
    out = []
    for path in samples.make_variants(samples.skimage_image("astronaut.png"), folder, count=5, seed=1):
        rgb = read_photo(path).rgb_float()
        face = analyzer.detect((rgb * 255).astype(np.uint8), embed=False)[0]
        out.append((np.clip(warp_face(rgb, estimate_alignment(face.landmarks, 512)), 0, 1) * 255 + 0.5)
                   .astype(np.uint8))
    return np.stack(out)


def test_pairs_and_train_fusion_from_real_references(astronaut_refs, tmp_path):
    refs = astronaut_refs[:3]
    config = FusionTrainConfig(random_per_reference=0, batch=2)
    fusion = FusionConfig(guides=2, channels=(8, 8, 8))
    settings = FusionSettings(guides=2, candidates=2)
    pairs = build_pairs(refs, Identity(), fusion=fusion, settings=settings, config=config)
    assert len(pairs) >= 3  # the severe level at least is blurred enough for every reference
    assert pairs.face.shape[1:] == (3, 256, 256) and pairs.guides.shape[1:] == (2, 3, 256, 256)
    # a target is never guided by itself: no guide equals its target
    for guides, target in zip(pairs.guides.astype(np.float32), pairs.target.astype(np.float32)):
        assert all(np.abs(g - target).mean() > 0.01 for g in guides)
    progress = []
    result = train_fusion(refs, Identity(), budget_s=60, max_steps=3, fusion=fusion, settings=settings,
                          config=config, cache_dir=tmp_path, on_progress=lambda f, m: progress.append(f))
    assert result.steps == 3 and list(tmp_path.glob("fusion-pairs-*.npz"))
    assert progress and all(0 <= f <= 1 for f in progress)
    # the artifact is what the restorer takes, as bytes or as a file
    face = astronaut_refs[3].astype(np.float32) / 255
    restorer = ReferenceRestorer(Identity(), GuideSet.from_crops(refs), settings, fusion=result.weights)
    out, info = restorer.restore_one(face)
    assert out.shape == face.shape and info.get("learned")
    path = tmp_path / "fusion.safetensors"
    path.write_bytes(result.weights)
    again = ReferenceRestorer(Identity(), GuideSet.from_crops(refs), settings, fusion=path)
    np.testing.assert_allclose(again.restore_one(face)[0], out, atol=1e-6)


def test_train_fusion_refuses_a_single_reference(astronaut_refs):
    with pytest.raises(UsageError, match="at least two references"):
        train_fusion(astronaut_refs[:1], Identity(), budget_s=1)


def test_hybrid_keeps_the_hand_made_fusion_below_its_blur(astronaut_refs):
    from facefix.quality.degrade import degrade_fixed

    guides = GuideSet.from_crops(astronaut_refs[:4])
    face = degrade_fixed(astronaut_refs[4].astype(np.float32) / 255, sigma=4.0, scale=2.0, noise=0.0, jpeg=None)
    torch.manual_seed(0)
    net = FusionNet(FusionConfig(guides=3, channels=(8, 8, 8))).eval()
    hand, hand_info = ReferenceRestorer(Identity(), guides).restore_one(face)
    assert hand_info["guides"]  # the hand-made fusion did act on this face
    hybrid, info = ReferenceRestorer(Identity(), guides, fusion=net, learned_from=100.0).restore_one(face)
    np.testing.assert_array_equal(hybrid, hand)
    # from its blur on, the learned one: an untrained network takes nothing
    learned, info = ReferenceRestorer(Identity(), guides, fusion=net, learned_from=1.0).restore_one(face)
    assert info["learned"] and info["guides"]
    np.testing.assert_allclose(learned, face, atol=1e-5)
    gray = np.repeat((face @ np.array([0.299, 0.587, 0.114], np.float32))[..., None], 3, -1)
    out, _ = ReferenceRestorer(Identity(), guides, fusion=net).restore_one(gray)
    assert np.abs(out[..., 0] - out[..., 1]).max() < 1e-6 and np.abs(out[..., 1] - out[..., 2]).max() < 1e-6


def test_guided_restorers_use_a_profiles_learned_fusion(astronaut_refs, tmp_path):
    from facefix.profiles import ProfileStore
    from facefix.restorers.fusion_net import fusion_state
    from facefix.restorers.reference import GuidedRestorers

    class Provider:
        engine = "fast"

        def get(self, person):
            return Identity()

    store = ProfileStore(tmp_path / "profiles")
    for who in ("ann", "bob"):
        with store.edit(who, create=True) as editor:
            for i, crop in enumerate(astronaut_refs[:3]):
                editor.add_reference(crop, source=tmp_path / f"{who}{i}.png", sha256=f"{ord(who[0]):x}{i}".ljust(64, "0"),
                                     embeddings={"dlib": np.ones(4, np.float32)}, box=(0, 0, 10, 10))
    torch.manual_seed(0)
    net = FusionNet(FusionConfig(channels=(8, 8, 8)))
    store.commit_artifact("ann", "fusion", *fusion_state(net))
    provider = GuidedRestorers(Provider(), store, fusion_kind="fusion")
    ann, bob = provider.get("ann"), provider.get("bob")
    assert ann.fusion is not None and ann.name == "identity+learned"
    assert bob.fusion is None and bob.name == "identity+refs"  # no artifact: the hand-made fusion
    assert GuidedRestorers(Provider(), store).get("ann").fusion is None  # off unless asked for


def test_the_restorer_names_a_fusion_it_cannot_use():
    none = GuideSet(np.zeros((0, 512, 512, 3), np.uint8), np.zeros((0, 68, 2), np.float32))
    with pytest.raises(UsageError, match="weight file's path or its bytes"):
        ReferenceRestorer(Identity(), none, fusion=3)
    with pytest.raises(ModelError, match="not a facefix reference-fusion file"):
        ReferenceRestorer(Identity(), none, fusion=b"junk bytes here")
