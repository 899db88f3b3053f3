"""The fast restorer and its training: tiny real networks on real photo crops."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from facefix.errors import ModelError, UsageError
from facefix.quality.degrade import DegradationRecipe
from facefix.restorers.base import Restorer
from facefix.restorers.fast import TINY_CONFIG, FastRestorer
from facefix.training.fast import train_fast
from facefix.training.loop import (
    CHECKPOINT_NAME,
    PairSampler,
    TrainConfig,
    restoration_loss,
)

# Small windows, few steps: each training test runs in about a second.
TINY_TRAIN = TrainConfig(patch=32, batch=2, warmup_steps=1, checkpoint_every_s=0.0, precision="fp32",
                         recipe=DegradationRecipe(sigma=(0.5, 2.0), scale=(1.0, 2.0), noise=(0, 5), jpeg=(80, 100)))


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a busy 2-core machine two threads spin-wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def faces(portrait_photo, group_photo) -> np.ndarray:
    """Four real 64x64 uint8 face windows from the sample photos."""
    astro = Image.open(portrait_photo).convert("RGB").resize((256, 256))
    group = Image.open(group_photo).convert("RGB")
    crops = [np.asarray(astro)[20:148, 64:192]]
    w, h = group.size
    for x0 in (0.12, 0.42, 0.72):  # three of the six faces in the top half
        box = (int(x0 * w), 0, int(x0 * w) + h // 2, h // 2)
        crops.append(np.asarray(group.crop(box).resize((128, 128))))
    small = [np.asarray(Image.fromarray(c).resize((64, 64), Image.LANCZOS)) for c in crops]
    return np.stack(small)


def _noisy_restorer(seed: int = 0) -> FastRestorer:
    """A tiny restorer whose output really differs from its input."""
    r = FastRestorer.build(TINY_CONFIG, precision="fp32")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in r.net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return r


def test_implements_restorer_and_starts_as_identity(faces):
    r = FastRestorer.build(TINY_CONFIG, name="fast/test")
    assert isinstance(r, Restorer) and r.name == "fast/test"
    crops = faces.astype(np.float32) / 255.0
    out = r.restore(crops)
    assert out.shape == crops.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, crops, atol=1e-5)


def test_save_load_reproduces_outputs_exactly(tmp_path, faces):
    r = _noisy_restorer()
    crops = faces.astype(np.float32) / 255.0
    before = r.restore(crops)
    path = tmp_path / "fast.safetensors"
    r.save(path)
    again = FastRestorer.from_file(path, precision="fp32")
    assert np.array_equal(again.restore(crops), before)
    tensors, settings = r.state()
    assert np.array_equal(FastRestorer.load(tensors, settings, precision="fp32").restore(crops), before)
    assert not np.allclose(before, crops, atol=1e-3)


def test_bad_weights_are_model_errors(tmp_path):
    with pytest.raises(ModelError, match="enroll"):
        FastRestorer.from_file(tmp_path / "missing.safetensors")
    tensors, settings = _noisy_restorer().state()
    with pytest.raises(ModelError, match="settings"):
        FastRestorer.load(tensors, {**settings, "format": "something-else"})
    with pytest.raises(ModelError, match="do not match"):
        FastRestorer.load({k: v for k, v in list(tensors.items())[1:]}, settings)


def test_grayscale_in_grayscale_out(faces):
    gray = faces.astype(np.float32).mean(axis=3, keepdims=True).repeat(3, axis=3) / 255.0
    out = _noisy_restorer().restore(gray)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


@pytest.mark.parametrize("colour", [(0.8, 0.4, 0.3), (0.2, 0.5, 0.7)])
def test_flat_colour_is_kept(colour):
    flat = np.broadcast_to(np.array(colour, np.float32), (1, 64, 64, 3)).copy()
    out = _noisy_restorer(1).restore(flat)
    assert np.abs(out.mean(axis=(0, 1, 2)) - np.array(colour)).max() < 1.0 / 255.0


def test_natural_image_mean_colour_is_kept(faces):
    crops = faces.astype(np.float32) / 255.0
    out = _noisy_restorer(2).restore(crops)
    shift = np.abs(out.mean(axis=(1, 2)) - crops.mean(axis=(1, 2))).max()
    assert shift < 2.0 / 255.0
    assert np.abs(out - crops).mean() > 2.0 / 255.0  # while the detail did change


def test_wrong_crop_size_is_a_usage_error():
    with pytest.raises(UsageError, match="multiple of 16"):
        FastRestorer.build(TINY_CONFIG).restore(np.zeros((1, 40, 40, 3), np.float32))


def test_training_lowers_the_loss_and_changes_the_output(faces):
    big = TrainConfig(**{**TINY_TRAIN.__dict__, "batch": 16})
    clean, bad, box = PairSampler(faces, big, np.random.default_rng(123)).batch()  # fixed held-out pairs
    result = train_fast(faces, budget_s=300, max_steps=100, seed=0, config=TINY_TRAIN, model_config=TINY_CONFIG)
    assert result.steps == 100 and not result.interrupted and len(result.loss_history) == 100
    assert result.settings["training"]["steps"] == 100
    restorer = result.restorer(precision="fp32")
    with torch.no_grad():
        trained = restoration_loss(restorer.net(bad, box), clean, TINY_TRAIN)
    untrained = restoration_loss(bad, clean, TINY_TRAIN)  # the fresh model is the identity
    assert trained < untrained
    out = restorer.restore(bad.permute(0, 2, 3, 1).numpy())
    assert np.abs(out - bad.permute(0, 2, 3, 1).numpy()).mean() > 1e-3


def test_on_step_reports_progress(faces):
    seen = []
    train_fast(faces, budget_s=60, max_steps=3, config=TINY_TRAIN, model_config=TINY_CONFIG, on_step=seen.append)
    assert [s.step for s in seen] == [1, 2, 3]
    assert all(s.total_steps == 3 and s.eta_s >= 0 and s.loss > 0 for s in seen)


def test_resume_continues_the_step_count(tmp_path, faces):
    first = train_fast(faces, max_steps=4, checkpoint_dir=tmp_path, config=TINY_TRAIN, model_config=TINY_CONFIG)
    assert first.steps == 4 and (tmp_path / CHECKPOINT_NAME).is_file()
    second = train_fast(faces, max_steps=7, checkpoint_dir=tmp_path, resume=True,
                        config=TINY_TRAIN, model_config=TINY_CONFIG)
    assert second.steps == 7 and len(second.loss_history) == 7
    assert second.loss_history[:4] == pytest.approx(first.loss_history)


def test_interrupt_keeps_the_last_good_weights_and_checkpoint(tmp_path, faces):
    seen = []

    def stop_at_three(info):
        seen.append(info.step)
        if info.step == 3:
            raise KeyboardInterrupt

    result = train_fast(faces, max_steps=50, checkpoint_dir=tmp_path, on_step=stop_at_three,
                        config=TINY_TRAIN, model_config=TINY_CONFIG)
    assert result.interrupted and result.steps == 3 and seen == [1, 2, 3]
    restorer = result.restorer(precision="fp32")
    crops = faces.astype(np.float32) / 255.0
    assert np.isfinite(restorer.restore(crops)).all()
    resumed = train_fast(faces, max_steps=5, checkpoint_dir=tmp_path, resume=True,
                         config=TINY_TRAIN, model_config=TINY_CONFIG)
    assert resumed.steps == 5 and not resumed.interrupted
    for name, tensor in result.tensors.items():  # the interrupted run's weights were saved
        assert tensor.shape == resumed.tensors[name].shape


def test_fine_tune_starts_from_init(faces):
    generic = train_fast(faces, max_steps=5, config=TINY_TRAIN, model_config=TINY_CONFIG)
    person = train_fast(faces[:2], init=generic.tensors, max_steps=0, config=TINY_TRAIN, model_config=TINY_CONFIG)
    assert person.settings["training"]["from"] == "init"
    for name, tensor in generic.tensors.items():
        assert torch.equal(tensor, person.tensors[name])


def test_bad_inputs_name_the_fix(faces):
    with pytest.raises(UsageError, match="uint8"):
        train_fast(faces.astype(np.float32), max_steps=1, config=TINY_TRAIN, model_config=TINY_CONFIG)
    with pytest.raises(UsageError, match="patch"):
        train_fast(faces[:, :16, :16], max_steps=1, config=TINY_TRAIN, model_config=TINY_CONFIG)
    with pytest.raises(ModelError, match="FastConfig"):
        train_fast(faces, init={"nope": torch.zeros(1)}, max_steps=1, config=TINY_TRAIN, model_config=TINY_CONFIG)


def test_divergence_rolls_back_then_says_how_to_fix_it(faces, caplog):
    # spike_factor < 1 makes every step after warm-up look like a blow-up.
    jumpy = TrainConfig(**{**TINY_TRAIN.__dict__, "spike_factor": 0.5, "warmup_steps": 2, "snapshot_every": 2})
    with pytest.raises(ModelError, match="lr_scratch"):
        train_fast(faces, max_steps=50, config=jumpy, model_config=TINY_CONFIG)
    assert "learning rate halved" in caplog.text


def test_learning_rate_is_the_scratch_or_finetune_rate_unless_given(faces):
    config = TrainConfig(patch=64, batch=2, warmup_steps=1, lr_scratch=2e-4, lr_finetune=5e-4)

    def first_lr(**kwargs) -> float:
        seen = []
        train_fast(faces, budget_s=600, max_steps=2, config=config, model_config=TINY_CONFIG, on_step=seen.append,
                   **kwargs)
        return seen[0].lr

    scratch = train_fast(faces, budget_s=600, max_steps=2, config=config, model_config=TINY_CONFIG)
    assert first_lr() == pytest.approx(2e-4, rel=0.01)
    assert first_lr(init=scratch.tensors) == pytest.approx(5e-4, rel=0.01)
    # The generic model updated from its previous weights keeps the scratch rate.
    assert first_lr(init=scratch.tensors, lr=2e-4) == pytest.approx(2e-4, rel=0.01)


def test_batches_made_ahead_in_threads_are_the_batches_made_one_by_one(faces):
    from facefix.training.loop import BatchPrefetcher

    def make_all(workers: int) -> list:
        sampler = PairSampler(faces, TINY_TRAIN, np.random.default_rng(7))
        prefetcher = BatchPrefetcher(sampler.batch_from, sampler.rng, workers)
        try:
            return [prefetcher() for _ in range(6)]
        finally:
            prefetcher.close()

    one_by_one, ahead = make_all(0), make_all(3)
    for batch_a, batch_b in zip(one_by_one, ahead, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(batch_a, batch_b, strict=True))
    assert not torch.equal(one_by_one[0][1], one_by_one[1][1])  # fresh pairs each batch
    # Training sees the same data either way: the same losses, step by step.
    runs = [train_fast(faces, max_steps=4, budget_s=600, config=replace(TINY_TRAIN, data_workers=w),
                       model_config=TINY_CONFIG).loss_history for w in (0, 2)]
    assert runs[0] == runs[1]


def test_position_map_reads_a_window_where_the_whole_face_reads_it():
    from facefix.restorers.fast import sample_position

    table = torch.randn(1, 5, 8, 8)
    whole = sample_position(table, None, torch.Size((2, 5, 8, 8)))
    assert torch.equal(whole, table.expand(2, -1, -1, -1))
    box = torch.tensor([[0.25, 0.5, 0.75, 1.0]])  # columns 2..5, rows 4..7 of the 8x8 grid
    part = sample_position(table, box, torch.Size((1, 5, 4, 4)))
    assert torch.allclose(part, table[:, :, 4:8, 2:6], atol=1e-6)


def test_a_position_aware_model_restores_what_belongs_where():
    """Detail the input has lost entirely comes back from where the window is in the face:
    vertical stripes in the top half, horizontal ones in the bottom half, from flat gray."""
    from facefix.restorers.fast import FastConfig, FastNet

    size, win = 128, 64
    yy, xx = np.mgrid[0:size, 0:size]
    face = np.where(yy < size // 2, (xx // 2) % 2, (yy // 2) % 2).astype(np.float32) * 0.5 + 0.25
    target = torch.from_numpy(face)[None, None].expand(1, 3, size, size)
    flat = torch.full((1, 3, size, size), 0.5)

    def train(position: int) -> torch.Tensor:
        torch.manual_seed(0)
        net = FastNet(FastConfig(channels=(8, 8, 8, 8), blocks=(1, 1, 1, 1), mid_blocks=1, position=position))
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        rng = np.random.default_rng(0)
        for _ in range(300):
            r0, c0 = (int(v) * 16 for v in rng.integers(0, (size - win) // 16 + 1, size=2))
            box = torch.tensor([[c0 / size, r0 / size, (c0 + win) / size, (r0 + win) / size]])
            pred = net(flat[..., r0 : r0 + win, c0 : c0 + win], box)
            loss = F.l1_loss(pred, target[..., r0 : r0 + win, c0 : c0 + win])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            return F.l1_loss(net(flat), target)  # the whole face, no box

    before = F.l1_loss(flat, target)
    aware, blind = train(8), train(0)
    assert aware < 0.25 * before  # it knows which stripes go where
    assert blind > 2 * aware  # without the map it can only guess from the window's edges


def test_weights_from_before_the_position_map_still_load():
    from facefix.restorers.fast import FastConfig

    old = FastRestorer.build(replace(TINY_CONFIG, position=0), precision="fp32")
    tensors, settings = old.state()
    settings["config"].pop("position")  # as written by facefix before the map existed
    loaded = FastRestorer.load(tensors, settings, precision="fp32")
    assert loaded.config.position == 0 and FastConfig.from_dict(settings["config"]).position == 0


def test_some_training_windows_are_small_faces_enlarged_into_the_template(faces):
    """With enlarge_prob 1 every window is a face shrunk, degraded at that size and enlarged
    back: its input has lost more detail than the template-scale recipe takes; the window
    and its place in the face are unchanged by the margin the degradation works on."""
    big = np.stack([np.asarray(Image.fromarray(f).resize((512, 512), Image.LANCZOS)) for f in faces])
    mild = DegradationRecipe(sigma=(0.5, 1.0), scale=(1.0, 1.5), noise=(0, 2), jpeg=(90, 100))
    batches = {p: PairSampler(big, replace(TINY_TRAIN, patch=128, batch=8, recipe=mild, enlarge_prob=p),
                              np.random.default_rng(0)).batch() for p in (0.0, 1.0)}
    detail = lambda t: (t[..., :, 1:] - t[..., :, :-1]).abs().mean()
    for clean, bad, box in batches.values():
        assert clean.shape == bad.shape == (8, 3, 128, 128)
        assert torch.allclose(box[:, 2] - box[:, 0], torch.full((8,), 0.25))  # 128 of 512
    lost = {p: detail(clean) - detail(bad) for p, (clean, bad, _) in batches.items()}
    assert lost[1.0] > 2 * lost[0.0]
    again = PairSampler(big, replace(TINY_TRAIN, patch=128, batch=8, recipe=mild, enlarge_prob=1.0),
                        np.random.default_rng(0)).batch()
    assert all(torch.equal(a, b) for a, b in zip(again, batches[1.0]))  # deterministic
