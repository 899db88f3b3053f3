"""CUDA-graph replay of the denoiser: same numbers as eager, fresh inputs each step, safe fallback."""

import pytest
import torch

from facefix.restorers.graphs import GraphedDenoiser

cuda = pytest.mark.gpu  # skipped without CUDA by conftest's collection hook


def _model(device):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(4, 8, 3, padding=1),
        torch.nn.SiLU(),
        torch.nn.Conv2d(8, 4, 3, padding=1),
    ).to(device)


def _denoise(net):
    def denoise(latents, t, unet_embeds, guide_embeds, condition):
        return (
            net(latents) * t.float()
            + unet_embeds.mean()
            - guide_embeds.mean()
            + condition.mean()
        )

    return denoise


def _inputs(device, seed):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(2, 4, 16, 16, generator=g).to(device),
        torch.tensor(seed % 7 + 1, device=device),
        torch.randn(2, 5, 8, generator=g).to(device),
        torch.randn(2, 5, 8, generator=g).to(device),
        torch.rand(2, 3, 32, 32, generator=g).to(device),
    )


def test_cpu_tensors_run_eagerly_and_capture_nothing():
    denoise = _denoise(_model("cpu"))
    graphed = GraphedDenoiser(denoise)
    inputs = _inputs("cpu", 1)
    with torch.no_grad():
        assert torch.equal(graphed(*inputs), denoise(*inputs))
    assert graphed._graphs == {} and not graphed.failed


@cuda
def test_replay_matches_eager_and_follows_new_inputs():
    denoise = _denoise(_model("cuda"))
    graphed = GraphedDenoiser(denoise)
    with torch.no_grad():
        outputs = []
        for seed in (1, 2, 3):
            inputs = _inputs("cuda", seed)
            got = graphed(*inputs)
            torch.testing.assert_close(got, denoise(*inputs), rtol=1e-5, atol=1e-5)
            outputs.append(got)
    assert len(graphed._graphs) == 1 and not graphed.failed
    # Each call's result is its own tensor: a later replay does not overwrite an earlier result.
    assert not torch.equal(outputs[0], outputs[1])
    torch.testing.assert_close(
        outputs[0], denoise(*_inputs("cuda", 1)), rtol=1e-5, atol=1e-5
    )


@cuda
def test_a_setting_change_captures_a_new_graph():
    graphed = GraphedDenoiser(_denoise(_model("cuda")))
    inputs = _inputs("cuda", 1)
    with torch.no_grad():
        graphed(*inputs, tag=1.0)
        graphed(*inputs, tag=0.5)
    assert len(graphed._graphs) == 2


@cuda
def test_an_uncapturable_call_falls_back_to_eager(caplog):
    net = _model("cuda")

    def syncing(latents, t, *rest):
        scale = float(t.item())  # a host sync: cannot be captured
        return net(latents) * scale

    graphed = GraphedDenoiser(syncing)
    inputs = _inputs("cuda", 4)
    with torch.no_grad():
        got = graphed(*inputs)
        torch.testing.assert_close(got, syncing(*inputs))
    assert graphed.failed
    assert "CUDA graph capture failed" in caplog.text


@cuda
def test_people_switching_on_shared_parts_gives_the_eager_pixels(tmp_path):
    """`facefix restore` on a GPU: several people's adapters on one model set, each with its own graphs."""
    import numpy as np
    from tiny_diffusion import save_tiny_model_set, smooth_faces

    from facefix.modelsets.parts import load_model_set
    from facefix.modelsets.registry import resolve_model_set
    from facefix.providers.diffusion import _AdapterBank, _Switched
    from facefix.restorers.diffusion import DiffusionRestorer, SamplerSettings
    from facefix.training.stage1 import Stage1Config, train_stage1
    from facefix.training.stage2 import Stage2Config, train_stage2

    def noisy(face, rng):
        return np.clip(face + rng.normal(0, 0.08, face.shape), 0, 1).astype(np.float32)

    model_set = resolve_model_set(str(save_tiny_model_set(tmp_path / "set")))
    people = {}
    for person, seed in (("ann", 1), ("bob", 2)):
        parts = load_model_set(model_set)
        s1 = train_stage1(
            parts,
            smooth_faces(3, 64, seed=seed),
            Stage1Config(steps=4, lr=1e-2, seed=seed),
        )
        s2 = train_stage2(
            parts,
            smooth_faces(3, 64, seed=seed + 10),
            noisy,
            pivot_prompt=s1.settings["pivot_prompt"],
            unet_lora=s1.tensors,
            config=Stage2Config(steps=3, lr=1e-2, seed=seed),
        )
        people[person] = ((s1.tensors, s1.settings), (s2.tensors, s2.settings))
    crops = smooth_faces(2, 64, seed=5)

    def run(graphs: bool) -> list:
        parts = load_model_set(model_set).to(device="cuda")
        bank = _AdapterBank(parts)
        settings = SamplerSettings(
            steps=4, batch_size=2, fuse_lora=False, cuda_graphs=graphs
        )
        restorers = {}
        for person in (None, "ann", "bob"):
            key = bank.add(person, *people[person]) if person else None
            prompt = people[person][0][1]["pivot_prompt"] if person else ""
            inner = DiffusionRestorer(
                parts, prompt=prompt, settings=settings, device="cuda"
            )
            restorers[person] = _Switched(inner, bank, key)
        order = ["ann", "bob", None, "ann", None, "bob"]
        return [restorers[p].restore(crops) for p in order]

    graphed, eager = run(True), run(False)
    for got, want in zip(graphed, eager, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(graphed[0] - graphed[1]).max() > 1e-3, (
        "ann's and bob's adapters give different faces"
    )
    np.testing.assert_array_equal(graphed[0], graphed[3])
