"""`facefix models pull` → locate → verify → load, against a faithful fake hub (tests/fake_hub.py).

The repositories are laid out as the real ones are (every format the hub
holds, the files pull skips, real config and tokenizer formats), and the
download writes the real cache layout with huggingface_hub's file-list cache,
so locate meets the same completeness check it meets on a user's machine.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from fake_hub import FakeHub, controlnet_like_guide, http_response, sd15_like_base
from tiny_diffusion import save_tiny_model_set

from facefix.cli.main import main as cli_main
from facefix.errors import ModelError
from facefix.modelsets.hub import locate, pull
from facefix.modelsets.parts import load_parts
from facefix.modelsets.registry import ModelSet
from facefix.modelsets.verify import verify

BASE, BOTH, TILE = "org/tiny-sd15", "org/tiny-canny", "org/tiny-tile"


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> Path:
    return save_tiny_model_set(tmp_path_factory.mktemp("hub_tiny_set"))


@pytest.fixture(scope="module")
def repos(tiny_set) -> dict[str, dict[str, bytes]]:
    return {
        BASE: sd15_like_base(tiny_set / "base"),
        # lllyasviel/sd-controlnet-canny: the pickle and safetensors side by side.
        BOTH: controlnet_like_guide(tiny_set / "guide", safetensors=True, pickle=True),
        # lllyasviel/control_v11f1e_sd15_tile today: the pickle only.
        TILE: controlnet_like_guide(tiny_set / "guide", safetensors=False, pickle=True),
    }


@pytest.fixture
def hub(repos, tmp_path, monkeypatch) -> FakeHub:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("FACEFIX_HOME", str(tmp_path / "home"))
    for name in ("FACEFIX_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    fake = FakeHub()
    fake.add(BASE, repos[BASE], commit="1" * 40)
    fake.add(BOTH, repos[BOTH], commit="2" * 40)
    fake.add(TILE, repos[TILE], commit="3" * 40)
    return fake.install(monkeypatch)


def hub_set(guide: str) -> ModelSet:
    return ModelSet(name="hubtiny", base=BASE, guide=guide, variant="fp16")


def snapshot_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_a_guide_with_both_formats_locates_after_pull_offline(hub, monkeypatch):
    model_set = hub_set(BOTH)
    paths = pull(model_set)
    # One format of each weight file, nothing pull has no use for.
    assert snapshot_files(paths.guide_dir) == {"config.json", "diffusion_pytorch_model.safetensors"}
    base = snapshot_files(paths.base_dir)
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in base
    assert not any(f.endswith((".bin", ".ckpt")) or f.startswith(("safety_checker", "v1-5")) or "non_ema" in f for f in base)
    # The hub client's file-list cache is there, listing the .bin locate must not ask for.
    tree = Path(os.environ["HF_HUB_CACHE"]) / "models--org--tiny-canny" / "trees" / ("2" * 40 + ".json")
    assert "diffusion_pytorch_model.bin" in tree.read_text()
    # Offline now: locate, verify (against the recorded hub hashes) and load.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = locate(model_set)
    assert (again.base_revision, again.guide_revision) == ("1" * 40, "2" * 40)
    report = verify(model_set)
    assert report.ok, report
    assert {c.source for c in report.checks} == {"manifest"}
    import torch

    unpickled = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: unpickled.append(a) or pytest.fail("nothing is unpickled"))
    parts = load_parts(again)
    assert not unpickled
    assert parts.tokenizer.bos_token == "<|startoftext|>"  # the AddedToken dicts were read
    assert len(parts.tokenizer("a photo of sks person").input_ids) > 5


def test_pickle_only_guide_is_pulled_converted_and_verified_online(hub):
    model_set = hub_set(TILE)
    paths = pull(model_set)
    assert paths.guide_dir.parts[-4:-1] == ("models", "converted", "org--tiny-tile")
    assert snapshot_files(paths.guide_dir) == {"config.json", "diffusion_pytorch_model.safetensors"}
    report = verify(model_set, token="hf_user")
    assert report.ok, report
    assert ("model_info", BASE, "1" * 40, "hf_user") in hub.calls, "verify asked the hub, with the token"
    load_parts(paths)


def test_a_cut_short_download_says_so_and_pull_recovers(hub):
    model_set = hub_set(BOTH)
    paths = pull(model_set)
    (paths.base_dir / "vae" / "diffusion_pytorch_model.fp16.safetensors").unlink()
    with pytest.raises(ModelError, match=r"org/tiny-sd15.*download incomplete.*facefix models pull --base"):
        locate(model_set)
    assert pull(model_set).base_dir == paths.base_dir
    assert verify(model_set, online=False).ok


def test_the_cli_pull_checks_with_the_token_it_was_given(hub, capsys):
    code = cli_main(["models", "pull", "--base", BASE, "--guide", BOTH, "--token", "hf_secret"])
    assert code == 0, capsys.readouterr().err
    asked = [c for c in hub.calls if c[0] == "model_info"]
    assert asked and all(c[3] == "hf_secret" for c in asked), asked
    assert all(c[4] == "hf_secret" for c in hub.calls if c[0] == "snapshot_download")


def _one_line_error(capsys, *argv) -> str:
    code = cli_main(list(argv))
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err
    return " ".join(err.split())


def test_hub_failures_are_one_line_naming_cause_and_fix(hub, capsys):
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
    )

    pull_args = ("models", "pull", "--base", BASE, "--guide", BOTH)
    hub.fail(BASE, GatedRepoError("403 Client Error. Cannot access gated repo", response=http_response(403, BASE)))
    err = _one_line_error(capsys, *pull_args)
    assert "is gated" in err and f"https://huggingface.co/{BASE}" in err and "--token" in err
    assert "withdrawn" not in err

    hub.fail(BASE, RepositoryNotFoundError("401 Client Error. Repository Not Found", response=http_response(401, BASE)))
    err = _one_line_error(capsys, *pull_args)
    assert "private or gated" in err and "--token" in err and "withdrawn" not in err

    hub.fail(BASE, RepositoryNotFoundError("404 Client Error. Repository Not Found", response=http_response(404, BASE)))
    err = _one_line_error(capsys, *pull_args)
    assert "does not exist on the hub (withdrawn or misspelt)" in err and "--base ID --guide ID" in err

    hub.fail(BASE, HfHubHTTPError("503 Server Error", response=http_response(503, BASE)))
    err = _one_line_error(capsys, *pull_args)
    assert "HTTP 503" in err and "again later" in err

    from huggingface_hub.errors import HTTPError

    client = __import__(HTTPError.__module__.split(".")[0])
    hub.fail(BASE, client.ConnectError("[Errno -3] Temporary failure in name resolution"))
    err = _one_line_error(capsys, *pull_args)
    assert "ConnectError" in err and "check the network" in err


def test_online_verify_failure_is_one_line(hub, capsys):
    from huggingface_hub.errors import GatedRepoError

    assert cli_main(["models", "pull", "--base", BASE, "--guide", BOTH]) == 0
    capsys.readouterr()
    hub.fail(BOTH, GatedRepoError("403 Client Error. Cannot access gated repo", response=http_response(403, BOTH)))
    err = _one_line_error(capsys, "models", "verify", "--base", BASE, "--guide", BOTH)
    assert "is gated" in err and "--offline" in err
    # Offline, against the hashes recorded at pull, it needs no hub at all.
    assert cli_main(["models", "verify", "--base", BASE, "--guide", BOTH, "--offline"]) == 0


def test_transformers_offline_is_offline(hub, monkeypatch):
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    with pytest.raises(ModelError, match=r"offline mode is on \(TRANSFORMERS_OFFLINE\)"):
        pull(hub_set(BOTH))
    assert not [c for c in hub.calls if c[0] != "model_info"], "nothing was asked of the hub"
    assert verify(hub_set(BOTH)).problems, "verify does not go online either (and the set is not here)"
    assert not hub.calls


def test_pulled_set_restores_with_the_diffusion_restorer(hub, monkeypatch):
    from tiny_diffusion import BlurRestorer, smooth_faces

    from facefix.restorers.diffusion import DiffusionRestorer, SamplerSettings

    paths = pull(hub_set(BOTH))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    restorer = DiffusionRestorer(load_parts(locate(hub_set(BOTH))), precleaner=BlurRestorer(), prompt="",
                                 settings=SamplerSettings(steps=2), device="cpu")
    faces = smooth_faces(2, size=32)
    out = restorer.restore(faces)
    assert out.shape == faces.shape and np.isfinite(out).all()
    shutil.rmtree(paths.base_dir.parent.parent / "blobs")
    with pytest.raises(ModelError):
        load_parts(locate(hub_set(BOTH)))


def test_doctor_reports_each_model_set_on_disk_and_verified(hub, tmp_path, monkeypatch, capsys):
    import json

    from facefix.modelsets.registry import write_local_model_set

    pull(hub_set(BOTH))
    spec = write_local_model_set(tmp_path / "hubset", hub_set(BOTH)).parent
    monkeypatch.setenv("FACEFIX_MODEL_SET", str(spec))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def doctor_rows() -> dict[str, dict]:
        assert cli_main(["doctor", "--json"]) == 0
        return {row["name"]: row for row in json.loads(capsys.readouterr().out)["diffusion_weights"]}

    rows = doctor_rows()
    assert rows["sd15-tile"]["on_disk"] is False and "facefix models pull sd15-tile" in rows["sd15-tile"]["detail"]
    assert rows["hubtiny"] | {"detail": None} == rows["hubtiny"] | {
        "default": True, "on_disk": True, "verified": True, "detail": None}
    blob = (locate(hub_set(BOTH)).guide_dir / "diffusion_pytorch_model.safetensors").resolve()
    blob.write_bytes(blob.read_bytes()[:-1] + b"\0")
    rows = doctor_rows()
    assert rows["hubtiny"]["on_disk"] and rows["hubtiny"]["verified"] is False
    assert "diffusion_pytorch_model.safetensors" in rows["hubtiny"]["detail"]
    # The table says the same in words.
    assert cli_main(["doctor"]) == 0
    assert "NOT verified" in capsys.readouterr().out


def test_dependency_floors_cover_the_apis_the_code_calls():
    """pyproject's floors against what facefix calls (a user's older environment must not get a TypeError)."""
    import re
    import tomllib

    import huggingface_hub
    import transformers
    from packaging.version import Version

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    floors = {}
    for spec in project["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+).*", spec)
        if match:
            floors[match[1].lower().replace("-", "_")] = Version(match[2])
    # CLIPTextModel.from_pretrained(dtype=...): transformers >= 4.56 (before it, torch_dtype only).
    assert floors["transformers"] >= Version("4.56")
    # huggingface_hub.errors with GatedRepoError/DisabledRepoError/HTTPError, as facefix.modelsets.registry uses them;
    # transformers 4.56 itself needs huggingface_hub >= 0.34.
    assert floors["huggingface_hub"] >= Version("0.34")
    assert Version(transformers.__version__) >= floors["transformers"]
    assert Version(huggingface_hub.__version__) >= floors["huggingface_hub"]
