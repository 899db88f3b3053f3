"""Weights people already have (issue 14, item 8): single-file checkpoints loaded offline with the configs and
tokenizer shipped in the package, plain diffusers pipeline folders, ``pytorch_model.bin`` text encoders and
sharded weights, all named with ``facefix models add`` and used by name.

The tiny single files are the tiny model set (tests/tiny_diffusion.py) written in the original layouts
(SD 1.5's CompVis keys, ControlNet 1.1's ``control_model.`` keys). Their architecture is not SD 1.5's, and
diffusers cannot tell a tiny SD 1.x checkpoint from a real one (it infers the model type from key names, not
shapes), so these tests point ``facefix.modelsets.single_file.SD15_CONFIG_DIR`` at the tiny configs; the shipped
SD 1.5 folder itself is checked at real size on the meta device, and is what a tiny file meets by default.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
import torch
from clirun import facefix
from tiny_diffusion import save_tiny_model_set, save_tiny_single_files

from facefix.cli.main import main
from facefix.errors import ModelError, UsageError
from facefix.modelsets import single_file
from facefix.modelsets.hub import locate, pull_patterns
from facefix.modelsets.parts import load_parts
from facefix.modelsets.registry import add_model_set, resolve_model_set
from facefix.modelsets.verify import verify


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> Path:
    return save_tiny_model_set(tmp_path_factory.mktemp("tiny_set"))


@pytest.fixture(scope="module")
def single_files(tiny_set, tmp_path_factory) -> dict[str, Path]:
    return save_tiny_single_files(tmp_path_factory.mktemp("single"), tiny_set)


@pytest.fixture
def tiny_configs(single_files, monkeypatch) -> Path:
    monkeypatch.setattr(single_file, "SD15_CONFIG_DIR", single_files["configs"])
    return single_files["configs"]


@pytest.fixture
def no_network(monkeypatch, tmp_path) -> list:
    """Any connection or name lookup fails and is recorded; no offline switch is on, and the hub cache is empty,
    so a loader that wanted a config or tokenizer from the hub would try (and the test would see it)."""
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] if args and isinstance(args[0], socket.socket) else args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for name in ("FACEFIX_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    return attempts


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def _same_parts(parts, reference) -> None:
    for name in ("unet", "vae", "text_encoder", "guide"):
        _same_weights(getattr(parts, name), getattr(reference, name))
    prompt = "a photo of sks person"
    assert parts.tokenizer(prompt).input_ids == reference.tokenizer(prompt).input_ids
    assert parts.scheduler_config == reference.scheduler_config


# --------------------------------------------------------------------------- what the package ships


def test_shipped_tokenizer_is_clips():
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(single_file.SD15_CONFIG_DIR / "tokenizer", local_files_only=True)
    assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
    # CLIP's well-known ids: <|startoftext|> a photo of a cat <|endoftext|>
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    padded = tokenizer("sks person", padding="max_length", max_length=77).input_ids
    assert len(padded) == 77 and padded[-1] == 49407  # padded with <|endoftext|>, as SD 1.5's tokenizer pads
    assert (single_file.SD15_CONFIG_DIR / "LICENSE-clip-tokenizer.txt").is_file()


def test_shipped_configs_are_sd15_at_real_size_and_read_the_original_layout():
    """The shipped configs build SD 1.5 + its tile ControlNet (the same shapes as random_weights' real-size
    models), and diffusers' own readers map every key of a real-size original-layout file onto them."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        CHECKPOINT_KEY_NAMES,
        convert_controlnet_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        infer_diffusers_model_type,
    )
    from tiny_diffusion import controlnet_to_original, unet_to_ldm, vae_to_ldm
    from transformers import CLIPTextConfig, CLIPTextModel

    from facefix.modelsets.random_weights import build_random_sd15

    root = single_file.SD15_CONFIG_DIR
    reference = build_random_sd15(device="meta")
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(root / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(root / "vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(root / "text_encoder"))
        guide = ControlNetModel.from_config(ControlNetModel.load_config(root / "controlnet-tile"))
    for ours, theirs in ((unet, reference.unet), (vae, reference.vae), (text, reference.text_encoder),
                         (guide, reference.guide)):
        assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert vae.config.scaling_factor == 0.18215
    scheduler = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    assert (scheduler["beta_schedule"], scheduler["prediction_type"]) == ("scaled_linear", "epsilon")

    ldm_unet = unet_to_ldm(unet.state_dict(), unet.config)
    assert CHECKPOINT_KEY_NAMES["v1"] in ldm_unet and infer_diffusers_model_type(ldm_unet) == "v1"
    assert convert_ldm_unet_checkpoint(ldm_unet, dict(unet.config)).keys() == unet.state_dict().keys()
    assert convert_ldm_vae_checkpoint(vae_to_ldm(vae.state_dict(), vae.config), dict(vae.config)).keys() == \
        vae.state_dict().keys()
    original = controlnet_to_original(guide.state_dict(), guide.config)
    assert infer_diffusers_model_type(original) == "controlnet"
    assert convert_controlnet_checkpoint(original, dict(guide.config)).keys() == guide.state_dict().keys()


# --------------------------------------------------------------------------- single files


def test_single_file_checkpoints_load_offline_with_no_network(tiny_set, single_files, tiny_configs, no_network, capsys):
    """`models add NAME --base FILE --guide FILE` then load by name: the same weights as the diffusers folders,
    with the configs and tokenizer from the package's folder, and not one connection tried."""
    assert main(["models", "add", "mine", "--base", str(single_files["base"]), "--guide", str(single_files["guide"])]) == 0
    assert "its weights are here" in capsys.readouterr().err
    mine = resolve_model_set("mine")
    assert mine.base == str(single_files["base"].resolve())
    paths = locate(mine)
    assert paths.base_dir == single_files["base"].resolve() and paths.base_revision.startswith("local-")
    parts = load_parts(paths)
    reference = load_parts(locate(resolve_model_set(str(tiny_set))))
    _same_parts(parts, reference)
    assert parts.resolution == 32 and not any(p.requires_grad for p in parts.unet.parameters())
    # The guide as .safetensors too, and as `--guide FILE` on any command.
    other = resolve_model_set("mine", guide=str(single_files["guide_safetensors"]))
    _same_weights(load_parts(locate(other)).guide, reference.guide)
    assert verify(mine, online=False).ok
    assert main(["models", "path", "mine"]) == 0
    assert capsys.readouterr().out.split() == [str(single_files["base"].resolve()), str(single_files["guide"].resolve())]
    assert no_network == []


def test_a_base_file_alone_takes_the_default_guide_to_pull(tiny_set, single_files, tiny_configs, tmp_path, monkeypatch,
                                                           capsys):
    from fake_hub import FakeHub, controlnet_like_guide

    assert main(["models", "add", "only-base", "--base", str(single_files["base"])]) == 0
    assert "fetch it with `facefix models pull only-base`" in capsys.readouterr().err
    added = resolve_model_set("only-base")
    assert (added.base, added.guide) == (str(single_files["base"].resolve()), "lllyasviel/control_v11f1e_sd15_tile")
    # `models pull only-base` fetches the guide (a pickle on the hub, converted once) and leaves the file alone.
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    for name in ("FACEFIX_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    hub = FakeHub()
    hub.add(added.guide, controlnet_like_guide(tiny_set / "guide", safetensors=False, pickle=True), commit="f" * 40)
    hub.install(monkeypatch)
    assert main(["models", "pull", "only-base"]) == 0
    assert [c[1] for c in hub.calls if c[0] == "snapshot_download"] == [added.guide]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    parts, reference = load_parts(locate(added)), load_parts(locate(resolve_model_set(str(tiny_set))))
    for name in ("unet", "vae", "text_encoder"):
        _same_weights(getattr(parts, name), getattr(reference, name))
    for a, b in zip(parts.guide.state_dict().values(), reference.guide.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-3)  # the pulled pickle is kept as fp16 safetensors


def test_ckpt_pickles_and_training_checkpoints_with_ema(tiny_set, single_files, tiny_configs, tmp_path, no_network):
    """v1-5-pruned-emaonly.ckpt (a Lightning pickle, weights under "state_dict") and v1-5-pruned.ckpt (the
    training weights plus their EMA copy under flattened ``model_ema.`` keys: the EMA ones are used)."""
    from safetensors.torch import load_file

    state = load_file(str(single_files["base"]))
    reference = load_parts(locate(resolve_model_set(str(tiny_set))))
    torch.save({"state_dict": state, "global_step": 470000, "epoch": 6}, tmp_path / "emaonly.ckpt")
    unet, vae, text, tokenizer, _ = single_file.load_single_file_base(tmp_path / "emaonly.ckpt", torch.float32)
    for ours, theirs in ((unet, reference.unet), (vae, reference.vae), (text, reference.text_encoder)):
        _same_weights(ours, theirs)
    training = {k: torch.zeros_like(v) if k.startswith("model.diffusion_model.") else v for k, v in state.items()}
    training |= {"model_ema." + "".join(k.split(".")[1:]): v for k, v in state.items() if k.startswith("model.diffusion_model.")}
    training |= {"model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(1000)}
    torch.save({"state_dict": training}, tmp_path / "pruned.ckpt")
    _same_weights(single_file.load_single_file_base(tmp_path / "pruned.ckpt", torch.float32)[0], reference.unet)
    assert no_network == []


def test_a_single_files_revision_tells_fine_tunes_of_one_size_apart(single_files, tmp_path):
    from safetensors.torch import load_file, save_file

    state = load_file(str(single_files["base"]))
    tuned = tmp_path / "fine-tune.safetensors"  # every UNet weight moved a little, as a fine-tune moves them
    save_file({k: v + 1e-3 if k.startswith("model.diffusion_model.") else v for k, v in state.items()}, str(tuned))
    assert tuned.stat().st_size == single_files["base"].stat().st_size
    renamed = tmp_path / "renamed.safetensors"
    shutil.copy(single_files["base"], renamed)
    assert single_file.file_revision(renamed) == single_file.file_revision(single_files["base"])
    assert single_file.file_revision(tuned) != single_file.file_revision(single_files["base"])


def test_a_tiny_file_meets_the_shipped_sd15_configs_by_default(single_files, no_network):
    """Without the tests' tiny configs the loader reads SD 1.5's from the package (offline) and refuses a
    checkpoint of another architecture in one line naming the file and the fix."""
    with pytest.raises(ModelError) as info:
        single_file.load_single_file_base(single_files["base"], torch.float32)
    message = str(info.value)
    assert str(single_files["base"]) in message and "does not fit Stable Diffusion 1.5" in message
    assert "save_pretrained" in message
    assert no_network == []


def test_files_that_are_no_sd15_checkpoint_are_refused_clearly(single_files, tiny_configs, tmp_path):
    from safetensors.torch import save_file

    other = tmp_path / "sdxl-like.safetensors"
    save_file({"conditioner.embedders.1.model.ln_final.weight": torch.ones(4)}, str(other))
    with pytest.raises(ModelError, match=r"sdxl-like.safetensors: no UNet weights .*not a Stable Diffusion 1.x"):
        single_file.load_single_file_base(other, torch.float32)
    with pytest.raises(ModelError, match=r"not a ControlNet single file"):
        single_file.load_single_file_guide(other, torch.float32)
    # The UNet and VAE, but no text encoder.
    from safetensors.torch import load_file

    state = load_file(str(single_files["base"]))
    save_file({k: v for k, v in state.items() if not k.startswith("cond_stage_model.")}, str(tmp_path / "no-text.safetensors"))
    with pytest.raises(ModelError, match=r"no-text.safetensors: no text encoder weights"):
        single_file.load_single_file_base(tmp_path / "no-text.safetensors", torch.float32)
    # A part with a weight missing is said, not loaded with that weight left empty.
    save_file({k: v for k, v in state.items() if "final_layer_norm.weight" not in k}, str(tmp_path / "cut-text.safetensors"))
    with pytest.raises(ModelError, match=r"cut-text.safetensors: has no weights for the text encoder's .*final_layer_norm"):
        single_file.load_single_file_base(tmp_path / "cut-text.safetensors", torch.float32)
    broken = tmp_path / "cut.safetensors"
    broken.write_bytes(single_files["base"].read_bytes()[:1000])
    with pytest.raises(ModelError, match=r"cut.safetensors: not a readable checkpoint"):
        single_file.load_single_file_base(broken, torch.float32)
    notes = tmp_path / "notes.txt"
    notes.write_text("not weights")
    with pytest.raises(UsageError, match=r"--base .*notes.txt: a file must be a checkpoint"):
        add_model_set("x", base=str(notes), guide=str(single_files["guide"]))


# --------------------------------------------------------------------------- diffusers folders


def _as_bin_and_shards(tiny_set: Path, target: Path) -> Path:
    """The tiny set with a ``pytorch_model.bin`` text encoder and UNet, VAE and guide in shards."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from safetensors.torch import load_file

    shutil.copytree(tiny_set, target)
    text = target / "base" / "text_encoder"
    torch.save(load_file(str(text / "model.safetensors")), text / "pytorch_model.bin")
    (text / "model.safetensors").unlink()
    for folder, cls in ((target / "base" / "unet", UNet2DConditionModel), (target / "base" / "vae", AutoencoderKL),
                        (target / "guide", ControlNetModel)):
        model = cls.from_pretrained(folder)
        (folder / "diffusion_pytorch_model.safetensors").unlink()
        model.save_pretrained(folder, max_shard_size="20KB")
        assert (folder / "diffusion_pytorch_model.safetensors.index.json").is_file()
        assert len(list(folder.glob("diffusion_pytorch_model-*-of-*.safetensors"))) > 1
    return target


def test_pipeline_folders_with_a_pickled_text_encoder_and_sharded_weights(tiny_set, tmp_path, capsys):
    folders = _as_bin_and_shards(tiny_set, tmp_path / "set")
    assert main(["models", "add", "folders", "--base", str(folders / "base"), "--guide", str(folders / "guide")]) == 0
    assert "its weights are here" in capsys.readouterr().err
    _same_parts(load_parts(locate(resolve_model_set("folders"))), load_parts(locate(resolve_model_set(str(tiny_set)))))
    # A shard gone: named, not loaded half.
    shard = sorted((folders / "base" / "unet").glob("diffusion_pytorch_model-*-of-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(ModelError, match=rf"incomplete: missing unet/ shards of .*{shard.name}"):
        locate(resolve_model_set("folders"))


def test_a_hub_repo_with_shards_and_a_pickled_text_encoder_pulls_locates_and_loads(tiny_set, tmp_path, monkeypatch):
    """Through the faithful fake hub (its file-list cache included): the shard patterns pull every shard, and
    locate asks the cache for exactly those, so the offline check after the download passes."""
    from fake_hub import FakeHub, folder_files

    from facefix.modelsets.hub import pull
    from facefix.modelsets.registry import ModelSet

    folders = _as_bin_and_shards(tiny_set, tmp_path / "set")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    for name in ("FACEFIX_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    hub = FakeHub()
    hub.add("org/sharded-base", folder_files(folders / "base"), commit="d" * 40)
    hub.add("org/sharded-guide", folder_files(folders / "guide"), commit="e" * 40)
    hub.install(monkeypatch)
    model_set = ModelSet(name="sharded", base="org/sharded-base", guide="org/sharded-guide", variant="fp16")
    pull(model_set)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    paths = locate(model_set)
    assert (paths.base_dir / "text_encoder" / "pytorch_model.bin").is_file()
    assert len(list((paths.base_dir / "unet").glob("diffusion_pytorch_model-*-of-*.safetensors"))) > 1
    _same_parts(load_parts(paths), load_parts(locate(resolve_model_set(str(tiny_set)))))
    assert verify(model_set, online=False).ok


def test_pull_asks_the_hub_for_shards_and_pickled_text_encoders():
    files = ["model_index.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json", "unet/config.json",
             "unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.safetensors.index.json",
             "unet/diffusion_pytorch_model-00001-of-00002.safetensors", "vae/config.json",
             "vae/diffusion_pytorch_model.safetensors.index.fp16.json", "vae/diffusion_pytorch_model.safetensors",
             "text_encoder/config.json", "text_encoder/pytorch_model.bin"]
    patterns = pull_patterns("base", "fp16", files)
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in patterns  # the variant first
    assert {"vae/diffusion_pytorch_model.safetensors.index.fp16.json",
            "vae/diffusion_pytorch_model.fp16-*-of-*.safetensors"} <= set(patterns)
    assert "text_encoder/pytorch_model.bin" in patterns
    assert pull_patterns("base", None, files)[4:6] == ["unet/diffusion_pytorch_model.safetensors.index.json",
                                                      "unet/diffusion_pytorch_model-*-of-*.safetensors"]
    guide = ["config.json", "diffusion_pytorch_model.bin", "diffusion_pytorch_model.safetensors.index.json",
             "diffusion_pytorch_model-00001-of-00002.safetensors"]
    assert pull_patterns("guide", None, guide) == ["config.json", "diffusion_pytorch_model.safetensors.index.json",
                                                   "diffusion_pytorch_model-*-of-*.safetensors"]


# --------------------------------------------------------------------------- the CLI, by name


@pytest.mark.slow
def test_enroll_and_restore_with_a_single_file_set_by_name(single_files, tiny_configs, enrolled_home, portrait_photo,
                                                           tmp_path, no_network):
    """`models add` with single files, then `enroll --engine diffusion` and `restore --engine diffusion`
    naming the set: offline, no connection tried."""
    generic = tmp_path / "generic"
    generic.mkdir()
    from facefix.photos import samples

    shutil.copy(samples.insightface_image("Tom_Hanks_54745.png"), generic / "face.png")
    env = {"FACEFIX_OFFLINE": None, "HF_HUB_OFFLINE": None}
    added = facefix("models", "add", "a1111", "--base", single_files["base"], "--guide", single_files["guide"],
                    home=enrolled_home, env=env)
    assert added.returncode == 0, added.stderr
    tuning = ("--stage1-steps", "2", "--stage2-steps", "2", "--class-images", "0", "--generic-count", "2")
    enroll = facefix("enroll", "astro", "--resume", "--engine", "diffusion", "--model-set", "a1111",
                     "--generic-faces", generic, *tuning, home=enrolled_home, env=env)
    assert enroll.returncode == 0, enroll.stderr
    assert "diffusion (a1111)" in " ".join(enroll.stderr.split())
    out = tmp_path / "restored"
    restore = facefix("restore", portrait_photo, "--person", "astro", "--engine", "diffusion", "--model-set", "a1111",
                      "--steps", "2", "--device", "cpu", "--ext", "png", "--json", "-o", out, home=enrolled_home, env=env)
    assert restore.returncode == 0, restore.stderr
    (record,) = [r for r in map(json.loads, restore.stdout.splitlines()) if r.get("restorer")]
    assert record["restorer"] == "diffusion/astro"
    assert no_network == []
