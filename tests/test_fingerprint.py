"""A local model folder's revision tells same-size fine-tunes apart (sampled content, as a single file's),
and adapters made when it was the folder's sizes only are recognised with a clear message."""

from __future__ import annotations

import hashlib
import logging
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_diffusion import save_tiny_model_set

from facefix.errors import ProfileError
from facefix.modelsets import single_file
from facefix.modelsets.hub import folder_revision, locate, size_revision
from facefix.modelsets.registry import ModelSet
from facefix.restorers.diffusion import check_artifact


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    return save_tiny_model_set(tmp_path_factory.mktemp("tiny_set"))


def fine_tune(base, target):
    """A copy of ``base`` whose UNet weights all moved a little: same files, same sizes, other weights."""
    shutil.copytree(base, target)
    unet = target / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(unet)
    generator = torch.Generator().manual_seed(1)
    save_file({k: v + 1e-3 * torch.randn(v.shape, generator=generator, dtype=v.dtype) if v.is_floating_point() else v
               for k, v in state.items()}, unet, metadata={"format": "pt"})
    assert unet.stat().st_size == (base / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size
    return target


def model_set(tiny_set, base, name="mine"):
    return ModelSet(name=name, base=str(base), guide=str(tiny_set / "guide"), variant=None)


def test_same_size_fine_tunes_in_folders_have_different_revisions(tiny_set, tmp_path):
    tuned = fine_tune(tiny_set / "base", tmp_path / "tuned")
    copied = shutil.copytree(tiny_set / "base", tmp_path / "copied")
    assert size_revision(tuned) == size_revision(tiny_set / "base")  # what the revision was: blind to the weights
    assert folder_revision(tuned) != folder_revision(tiny_set / "base")
    assert folder_revision(copied) == folder_revision(tiny_set / "base")  # a copy or a move is the same model
    original, other = locate(model_set(tiny_set, tiny_set / "base")), locate(model_set(tiny_set, tuned))
    assert original.base_revision != other.base_revision and original.base_revision.startswith("local-")
    # Config JSONs count by content.
    config = copied / "unet" / "config.json"
    config.write_text(config.read_text() + " ")
    assert folder_revision(copied) != folder_revision(tiny_set / "base")


def test_adapters_made_on_one_fine_tune_are_refused_by_another_of_the_same_size(tiny_set, tmp_path):
    tuned = fine_tune(tiny_set / "base", tmp_path / "tuned")
    made = locate(model_set(tiny_set, tiny_set / "base")).provenance()  # an artifact's settings carry these
    with pytest.raises(ProfileError, match="made for model set 'mine'"):
        check_artifact(made, locate(model_set(tiny_set, tuned)).provenance(), "UNet LoRA")
    moved = shutil.copytree(tiny_set / "base", tmp_path / "moved")
    check_artifact(made, locate(model_set(tiny_set, moved)).provenance(), "UNet LoRA")  # same content: used


def test_an_artifact_made_with_the_sizes_only_revision_is_named_as_such(tiny_set, tmp_path, caplog):
    folder = shutil.copytree(tiny_set / "base", tmp_path / "base")
    now = locate(model_set(tiny_set, folder)).provenance()
    old = {**now, "base_revision": size_revision(folder), "guide_revision": size_revision(tiny_set / "guide")}
    old = {k: v for k, v in old.items() if not k.endswith("_size_revision")}  # older facefix recorded none
    assert old["base_revision"] != now["base_revision"]
    # At its own path: used, with one warning naming both parts, what happened and to re-enroll.
    with caplog.at_level(logging.WARNING, logger="facefix"):
        check_artifact(old, now, "UNet LoRA")
    text = " ".join(r.getMessage() for r in caplog.records)
    assert len(caplog.records) == 1 and text.count("fingerprinted a local") == 2 and "results may differ" not in text
    assert f"by its files' sizes only ({old['base_revision']})" in text and now["base_revision"] in text
    assert "re-run `facefix enroll NAME DIR --engine diffusion`" in text
    # A same-size folder elsewhere: refused, saying why (the sizes match, the content cannot be compared).
    tuned = fine_tune(tiny_set / "base", tmp_path / "tuned")
    with pytest.raises(ProfileError, match=r"sizes only .*cannot tell whether.*re-run `facefix enroll"):
        check_artifact(old, locate(model_set(tiny_set, tuned)).provenance(), "UNet LoRA")


def test_only_a_local_folder_adds_its_sizes_only_revision_to_the_provenance(tiny_set):
    paths = locate(model_set(tiny_set, tiny_set / "base"))
    assert paths.provenance()["base_size_revision"] == size_revision(tiny_set / "base")
    assert paths.provenance()["guide_size_revision"] == size_revision(tiny_set / "guide")
    # Hub parts and single files (no size revision) keep the provenance they had.
    hub_like = type(paths)(paths.model_set, paths.base_dir, paths.guide_dir, "a" * 40, "b" * 40)
    assert not any(k.endswith("_size_revision") for k in hub_like.provenance())


def test_a_single_files_revision_is_what_it_was(tmp_path):
    """One sampler for files and folders; a single file's revision did not change with it."""
    path = tmp_path / "model.safetensors"
    path.write_bytes(bytes(range(256)) * 20_000)  # 5 MB: sampled, not read whole
    size, chunk, samples = path.stat().st_size, 1 << 16, 16
    data = path.read_bytes()
    digest = hashlib.sha256(str(size).encode())
    for i in range(samples):
        start = max(0, (size - chunk) * i // (samples - 1))
        digest.update(data[start:start + chunk])
    assert single_file.file_revision(path) == "local-" + digest.hexdigest()[:16]
