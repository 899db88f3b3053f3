"""Model sets a user names (``facefix models add``, ``models pull --base/--guide``) are usable by name (issue 14, item 8)."""

from __future__ import annotations

import json

import pytest
from fake_hub import FakeHub, controlnet_like_guide, sd15_like_base
from tiny_diffusion import save_tiny_model_set

from facefix.cli.main import main
from facefix.errors import UsageError
from facefix.modelsets.hub import is_available, locate
from facefix.modelsets.registry import REGISTRY, add_model_set, resolve_model_set, user_model_sets


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    return save_tiny_model_set(tmp_path_factory.mktemp("tiny_set"))


def test_an_added_set_is_found_by_name_listed_and_located(tiny_set, capsys):
    assert main(["models", "add", "mine", "--base", str(tiny_set / "base"), "--guide", str(tiny_set / "guide")]) == 0
    assert "added model set mine" in capsys.readouterr().err
    mine = resolve_model_set("mine")
    assert mine.base == str((tiny_set / "base").resolve()) and mine.guide == str((tiny_set / "guide").resolve())
    assert is_available(mine) and locate(mine).base_dir == (tiny_set / "base").resolve()
    assert main(["models", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["mine"]["available"] is True and "sd15-tile" in rows
    assert main(["models", "path", "mine"]) == 0
    assert capsys.readouterr().out.split() == [str((tiny_set / "base").resolve()), str((tiny_set / "guide").resolve())]


def test_bad_names_are_usage_errors_and_nothing_is_saved(tiny_set, capsys):
    for name in ("sd15-tile", "../x", ""):
        with pytest.raises(UsageError):
            add_model_set(name, base=str(tiny_set / "base"), guide=str(tiny_set / "guide"))
    assert main(["models", "add", "a/b", "--base", "x", "--guide", "y"]) == 2
    assert "model set name 'a/b'" in capsys.readouterr().err
    assert user_model_sets() == {}
    with pytest.raises(UsageError, match="unknown model set 'nothere'.*models add"):
        resolve_model_set("nothere")


def test_an_added_hub_set_names_its_own_pull_command():
    added = add_model_set("canny", base="org/base", guide="org/canny", variant="fp16")
    assert added.pull_command == "facefix models pull canny"
    assert resolve_model_set("canny") == added and "canny" not in REGISTRY


def test_pull_with_base_and_guide_saves_the_set_by_its_name(tiny_set, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    for name in ("FACEFIX_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    hub = FakeHub()
    hub.add("org/tiny-base", sd15_like_base(tiny_set / "base"), commit="a" * 40)
    hub.add("org/tiny-guide", controlnet_like_guide(tiny_set / "guide", safetensors=True, pickle=False), commit="b" * 40)
    hub.install(monkeypatch)
    assert main(["models", "pull", "--base", "org/tiny-base", "--guide", "org/tiny-guide"]) == 0
    err = capsys.readouterr().err
    name = err.split("saved as model set ")[1].split(":")[0]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # from here on nothing may touch the network
    saved = resolve_model_set(name)
    assert (saved.base, saved.guide) == ("org/tiny-base", "org/tiny-guide") and is_available(saved)
