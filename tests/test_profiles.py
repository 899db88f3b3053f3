from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from clirun import facefix

from facefix.common import paths
from facefix.errors import ProfileError, UsageError
from facefix.profiles import (
    SCHEMA_VERSION,
    GenericStore,
    ProfileStore,
    validate_name,
)

# --------------------------------------------------------------------------- helpers


def sha(i: int) -> str:
    return hashlib.sha256(f"photo-{i}".encode()).hexdigest()


def crop(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, (512, 512, 3), dtype=np.uint8)


def unit(dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def add(editor, i: int, **kw):
    kw.setdefault("embeddings", {"dlib": unit(128, i), "insightface": unit(512, 100 + i)})
    return editor.add_reference(
        crop(i), source=Path(f"/photos/{i}.jpg"), sha256=sha(i), box=(10, 20, 110, 140), **kw
    )


def make_profile(store: ProfileStore, name: str = "alice", n: int = 2) -> None:
    with store.edit(name, create=True) as ed:
        for i in range(n):
            add(ed, i, info={"sharpness": np.float32(100 + i)})
        ed.save_artifact("fast", {"w": torch.arange(6.0).reshape(2, 3)}, {"steps": 10})


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def store() -> ProfileStore:
    return ProfileStore()


# --------------------------------------------------------------------------- round trip


def test_round_trip_references_crops_embeddings_artifacts(store):
    with store.edit("alice", create=True) as ed:
        r0 = add(ed, 0, info={"sharpness": np.float32(12.5), "note": "wedding"})
        add(ed, 1, embeddings={"dlib": unit(128, 1)})  # no insightface for this one
        art = ed.save_artifact(
            "diffusion/sd21/unet_lora",
            {"down.weight": torch.randn(4, 3, generator=torch.Generator().manual_seed(0)),
             "up.bias": torch.arange(5, dtype=torch.float16)},
            {"steps": 2500, "lr": 1e-6, "base": {"id": "sd2-base", "revision": "abc"}, "loss": [0.5, 0.25]},
        )

    assert store.path() == paths.data_dir() / "profiles"
    assert store.names() == ["alice"] and store.exists("alice")
    p = store.load("alice")
    assert p.name == "alice" and p.path == store.path("alice")
    assert p.references[0] == r0  # metadata equal, timestamps survive the round trip
    assert [r.id for r in p.references] == [sha(0)[:16], sha(1)[:16]]
    assert p.references[0].source == "/photos/0.jpg"
    assert p.references[0].box == (10.0, 20.0, 110.0, 140.0)
    assert p.references[0].info == {"sharpness": 12.5, "note": "wedding"}
    assert p.created.tzinfo is not None and p.updated >= p.created

    np.testing.assert_array_equal(store.load_crops(p), np.stack([crop(0), crop(1)]))
    np.testing.assert_array_equal(p.embeddings("dlib"), np.stack([unit(128, 0), unit(128, 1)]))
    assert p.embeddings("insightface").shape == (1, 512)  # the reference without it is skipped
    assert p.embeddings("dlib").dtype == np.float32
    assert p.backends == ["dlib", "insightface"]

    tensors, settings = store.load_artifact("alice", "diffusion/sd21/unet_lora")
    assert torch.equal(tensors["down.weight"], torch.randn(4, 3, generator=torch.Generator().manual_seed(0)))
    assert tensors["up.bias"].dtype == torch.float16
    assert torch.equal(tensors["up.bias"], torch.arange(5.0).half())
    assert settings == art.settings == {
        "steps": 2500, "lr": 1e-6, "base": {"id": "sd2-base", "revision": "abc"}, "loss": [0.5, 0.25]
    }
    assert p.artifacts["diffusion/sd21/unet_lora"] == art

    manifest = json.loads((p.path / "manifest.json").read_text())
    assert manifest["schema"] == SCHEMA_VERSION and manifest["name"] == "alice"


def test_embeddings_are_stored_unit_length(store):
    with store.edit("alice", create=True) as ed:
        add(ed, 0, embeddings={"dlib": 3.0 * unit(128, 0)})
    np.testing.assert_allclose(np.linalg.norm(store.load("alice").embeddings("dlib"), axis=1), 1.0, rtol=1e-6)


def test_missing_backend_names_the_fix(store):
    with store.edit("alice", create=True) as ed:
        add(ed, 0, embeddings={"dlib": unit(128, 0)})
    with pytest.raises(ProfileError, match="no 'insightface' embeddings.*it has: dlib"):
        store.load("alice").embeddings("insightface")


def test_duplicate_reference_is_ignored(store):
    with store.edit("alice", create=True) as ed:
        first = add(ed, 0)
        again = add(ed, 0)
        assert again is first and len(ed.references) == 1
    with store.edit("alice", create=False) as ed:
        assert add(ed, 0) == first
    assert len(store.load("alice").references) == 1


def test_remove_reference_and_garbage_collection(store):
    make_profile(store, n=2)
    p = store.load("alice")
    gone = p.references[0]
    with store.edit("alice", create=False) as ed:
        ed.remove_reference(gone.id)
        with pytest.raises(ProfileError, match="no reference 'nope'"):
            ed.remove_reference("nope")
    p2 = store.load("alice")
    assert [r.id for r in p2.references] == [p.references[1].id]
    assert not (p.path / gone.crop).exists()
    np.testing.assert_array_equal(store.load_crops(p2), crop(1)[None])
    # exactly the manifest, one crop, one embeddings file and one artifact remain
    files = sorted(str(f.relative_to(p.path)) for f in p.path.rglob("*") if f.is_file())
    assert len(files) == 4 and "manifest.json" in files


def test_new_artifact_version_replaces_old_file(store):
    make_profile(store)
    old = store.load("alice").artifacts["fast"]
    new = store.commit_artifact("alice", "fast", {"w": torch.zeros(2)}, {"steps": 20})
    assert new.file != old.file
    p = store.load("alice")
    assert p.artifacts["fast"] == new and not (p.path / old.file).exists()
    tensors, settings = store.load_artifact("alice", "fast")
    assert torch.equal(tensors["w"], torch.zeros(2)) and settings == {"steps": 20}
    assert len(p.references) == 2  # references untouched


def test_missing_artifact_names_kind_and_alternatives(store):
    make_profile(store)
    with pytest.raises(ProfileError, match="no 'diffusion/x' artifact.*it has: fast"):
        store.load_artifact("alice", "diffusion/x")


def test_work_dir_is_not_collected(store):
    make_profile(store)
    work = store.work_dir("alice", "diffusion/sd21/unet_lora")
    assert work.is_dir() and work.is_relative_to(store.path("alice"))
    (work / "step-100.safetensors").write_bytes(b"x")
    store.commit_artifact("alice", "fast", {"w": torch.ones(1)}, {})
    assert (work / "step-100.safetensors").exists()


def test_generic_store_is_separate_and_never_listed(store):
    generic = GenericStore()
    assert generic.path() == paths.data_dir() / "generic"
    assert not generic.exists()
    with pytest.raises(ProfileError, match="generic model has no artifacts"):
        generic.load_artifact("fast")
    generic.commit_artifact("fast", {"w": torch.ones(3)}, {"steps": 5})
    tensors, settings = generic.load_artifact("fast")
    assert torch.equal(tensors["w"], torch.ones(3)) and settings == {"steps": 5}
    assert generic.work_dir("fast").is_dir()
    assert store.names() == []


# --------------------------------------------------------------------------- crash safety


def test_exception_inside_edit_changes_nothing(store):
    make_profile(store)
    root = store.path("alice")
    before, loaded = snapshot(root), store.load("alice")
    with pytest.raises(RuntimeError, match="boom"):
        with store.edit("alice", create=False) as ed:
            add(ed, 7)
            ed.remove_reference(loaded.references[0].id)
            ed.save_artifact("fast", {"w": torch.zeros(1)}, {"steps": 99})
            raise RuntimeError("boom")
    assert snapshot(root) == before  # not even orphan files are left
    assert store.load("alice") == loaded


def test_failed_first_enroll_leaves_no_profile(store):
    with pytest.raises(RuntimeError):
        with store.edit("bob", create=True) as ed:
            add(ed, 0)
            raise RuntimeError("no faces")
    assert store.names() == [] and not (store.path() / "bob").exists()


def test_crash_while_swapping_manifest_keeps_previous_profile(store, monkeypatch):
    make_profile(store)
    loaded = store.load("alice")
    real_replace = os.replace

    def crash_on_manifest(src, dst, *a, **kw):
        if Path(dst).name == "manifest.json":
            raise OSError(28, "No space left on device")
        return real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", crash_on_manifest)
    with pytest.raises(ProfileError, match="could not write .*manifest.json.*unchanged"):
        with store.edit("alice", create=False) as ed:
            add(ed, 5)
            ed.save_artifact("fast", {"w": torch.zeros(1)}, {"steps": 1})
    monkeypatch.setattr(os, "replace", real_replace)

    assert store.load("alice") == loaded
    tensors, settings = store.load_artifact("alice", "fast")
    assert settings == {"steps": 10} and torch.equal(tensors["w"], torch.arange(6.0).reshape(2, 3))
    assert not list(store.path("alice").glob(".tmp-*"))


def test_leftovers_of_a_hard_crash_are_collected_on_next_commit(store):
    make_profile(store)
    root = store.path("alice")
    # What a killed process leaves: a half-written temp manifest and an unreferenced crop.
    (root / ".tmp-abc").write_bytes(b"{half")
    (root / "crops" / "deadbeefdeadbeef.png").write_bytes(b"png")
    assert len(store.load("alice").references) == 2  # still loads
    store.commit_artifact("alice", "fast", {"w": torch.ones(1)}, {})
    assert not (root / ".tmp-abc").exists() and not (root / "crops" / "deadbeefdeadbeef.png").exists()


def test_nested_edit_of_same_profile_is_refused(store):
    make_profile(store)
    with store.edit("alice", create=False):
        with pytest.raises(ProfileError, match="already being edited"):
            store.commit_artifact("alice", "fast", {"w": torch.ones(1)}, {})


def test_concurrent_writers_do_not_lose_updates(store):
    """A checkpoint committed while an enroll is open waits for it instead of being overwritten."""
    make_profile(store, n=1)
    with store.edit("alice", create=False) as ed:
        writer = threading.Thread(
            target=store.commit_artifact, args=("alice", "stage2", {"w": torch.ones(2)}, {"steps": 1})
        )
        writer.start()
        time.sleep(0.2)  # give the writer time to reach the lock (only ordering depends on it)
        add(ed, 3)
    writer.join(timeout=30)
    p = store.load("alice")
    assert len(p.references) == 2 and set(p.artifacts) == {"fast", "stage2"}


def test_newer_schema_asks_for_upgrade(store):
    make_profile(store)
    manifest = store.path("alice") / "manifest.json"
    data = json.loads(manifest.read_text())
    data["schema"] = SCHEMA_VERSION + 1
    manifest.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match="newer facefix.*upgrade"):
        store.load("alice")


def test_corrupt_manifest_names_the_file(store):
    make_profile(store)
    manifest = store.path("alice") / "manifest.json"
    manifest.write_text("{not json")
    with pytest.raises(ProfileError, match=r"manifest\.json is corrupt"):
        store.load("alice")
    manifest.write_text(json.dumps({"schema": 1, "name": "alice"}))
    with pytest.raises(ProfileError, match=r"manifest\.json is corrupt"):
        store.load("alice")


def test_missing_crop_names_the_file(store):
    make_profile(store)
    p = store.load("alice")
    (p.path / p.references[1].crop).unlink()
    with pytest.raises(ProfileError, match=p.references[1].crop.split("/")[-1]):
        store.load_crops(p)


def test_bad_inputs_are_programming_errors(store):
    with store.edit("alice", create=True) as ed:
        with pytest.raises(ValueError, match=r"uint8 RGB of shape \(512, 512, 3\)"):
            ed.add_reference(np.zeros((256, 256, 3), np.uint8), source="a.jpg", sha256=sha(0),
                             embeddings={}, box=(0, 0, 1, 1))
        with pytest.raises(ValueError, match="zero"):
            add(ed, 0, embeddings={"dlib": np.zeros(128)})
        add(ed, 1)
        with pytest.raises(ValueError, match="128"):
            add(ed, 2, embeddings={"dlib": unit(64, 2)})
        with pytest.raises(ValueError, match="invalid artifact kind"):
            ed.save_artifact("../evil", {"w": torch.ones(1)}, {})
        with pytest.raises(ValueError, match="JSON-compatible"):
            ed.save_artifact("fast", {"w": torch.ones(1)}, {"model": object()})


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["alice", "Zoë", "李雷", "Mary-Jane O'Neil", "J. R. Smith", "a" * 64])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name, why",
    [
        ("", "empty"),
        ("../x", "starts with '.'"),
        ("x/..", "contains '..'"),
        ("a/b", "contains '/'"),
        ("a\\b", "contains '\\\\'"),
        ("a:b", "contains ':'"),
        ("a..b", "'..'"),
        (".hidden", "starts with '.'"),
        ("_generic", "reserved"),
        ("tab\there", "control character"),
        (" alice", "whitespace"),
        ("a" * 65, "65 characters"),
        ("con", "reserved device name"),
        ("J. R.", "ends with '.'"),
    ],
)
def test_invalid_names_say_what_is_allowed(name, why):
    with pytest.raises(UsageError) as info:
        validate_name(name)
    message = str(info.value)
    assert message.startswith(f"invalid profile name {name!r}: ")
    reason, rules = message.split("; ", 1)
    assert why in reason
    assert rules.startswith("profile names are 1-64 characters")


def test_names_are_nfc_normalised(store):
    decomposed = "Zoe\u0308"
    assert validate_name(decomposed) == "Zoë"
    with store.edit(decomposed, create=True) as ed:
        add(ed, 0)
    assert store.names() == ["Zoë"] and store.exists("Zoë")


def test_case_insensitive_collision(store):
    make_profile(store, "alice")
    with pytest.raises(ProfileError, match="'alice' exists and names are case-insensitive"):
        store.edit("Alice", create=True)
    with pytest.raises(ProfileError, match="did you mean 'alice'"):
        store.load("ALICE")


def test_unknown_profile_lists_enrolled(store):
    make_profile(store, "alice")
    make_profile(store, "carol", n=1)
    with pytest.raises(ProfileError) as info:
        store.load("bob")
    assert str(info.value) == (
        "no profile named 'bob'; enrolled: alice, carol — enroll with 'facefix enroll bob DIR'"
    )
    with pytest.raises(ProfileError, match="no profile named 'bob'"):
        store.edit("bob", create=False)


# --------------------------------------------------------------------------- rename / remove


def test_rename(store):
    make_profile(store, "alice")
    before = store.load("alice")
    store.rename("alice", "Alicia")
    assert store.names() == ["Alicia"]
    after = store.load("Alicia")
    assert after.references == before.references and after.artifacts == before.artifacts
    np.testing.assert_array_equal(store.load_crops(after), np.stack([crop(0), crop(1)]))
    assert json.loads((after.path / "manifest.json").read_text())["name"] == "Alicia"
    store.rename("Alicia", "alicia")  # a change of case only
    assert store.names() == ["alicia"]


def test_rename_refuses_existing_and_missing(store):
    make_profile(store, "alice")
    make_profile(store, "bob", n=1)
    with pytest.raises(ProfileError, match="'bob' exists"):
        store.rename("alice", "BOB")
    with pytest.raises(ProfileError, match="no profile named 'zed'"):
        store.rename("zed", "zack")
    with pytest.raises(UsageError):
        store.rename("alice", "_generic")
    assert store.names() == ["alice", "bob"]


def test_remove(store):
    make_profile(store, "alice")
    make_profile(store, "bob", n=1)
    store.remove("alice")
    assert store.names() == ["bob"]
    assert [p.name for p in store.path().iterdir() if not p.name.startswith(".")] == ["bob"]
    with pytest.raises(ProfileError, match="no profile named 'alice'"):
        store.remove("alice")


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run ``main([...])`` with only the profiles commands wired, so this file tests this file's CLI."""
    from facefix.cli import main as cli_main
    from facefix.cli.profiles import profiles_app

    app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    app.callback()(lambda: None)
    app.add_typer(profiles_app, name="profiles")

    def run(*args: str, stdin: str | None = None, tty: bool = False):
        class Stdin(io.StringIO):
            def isatty(self) -> bool:
                return tty

        monkeypatch.setattr(sys, "stdin", Stdin(stdin or ""))
        code = cli_main.main(["profiles", *args], app=app)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_cli_list_and_show_json(cli, store):
    code, stdout, _ = cli("list", "--json")
    assert code == 0 and json.loads(stdout) == []
    make_profile(store, "alice")
    make_profile(store, "Zoë", n=1)
    code, stdout, _ = cli("list", "--json")
    rows = json.loads(stdout)
    assert code == 0 and [r["name"] for r in rows] == ["alice", "Zoë"]
    assert rows[0]["references"] == 2 and rows[0]["artifacts"] == ["fast"]

    code, stdout, _ = cli("show", "alice", "--json")
    data = json.loads(stdout)
    assert code == 0 and data["name"] == "alice" and len(data["references"]) == 2
    assert data["references"][0]["embeddings"] == {"dlib": 128, "insightface": 512}
    assert data["artifacts"]["fast"]["settings"] == {"steps": 10}


def test_cli_tables(cli, store):
    make_profile(store, "alice")
    code, stdout, _ = cli("list")
    assert code == 0 and "alice" in stdout and "fast" in stdout
    code, stdout, _ = cli("show", "alice")
    assert code == 0 and sha(0)[:16] in stdout and "steps=10" in stdout


def test_cli_list_survives_a_broken_profile(cli, store):
    make_profile(store, "alice")
    make_profile(store, "bob", n=1)
    (store.path("bob") / "manifest.json").write_text("{")
    code, stdout, _ = cli("list", "--json")
    rows = json.loads(stdout)
    assert code == 0 and rows[0]["name"] == "alice" and "corrupt" in rows[1]["error"]


def test_cli_unknown_name_is_one_line(cli, store):
    make_profile(store, "alice")
    code, stdout, stderr = cli("show", "bob")
    assert code == 1 and stdout == ""
    # rich's stderr console wraps at the terminal width (80 when piped); compare the words
    assert " ".join(stderr.split()) == (
        "error: no profile named 'bob'; enrolled: alice — enroll with 'facefix enroll bob DIR'"
    )


def test_cli_rm_needs_confirmation(cli, store):
    make_profile(store, "alice")
    code, _, stderr = cli("rm", "alice")  # stdin is not a terminal
    assert code == 2 and "--yes" in stderr and store.exists("alice")
    code, _, _ = cli("rm", "alice", stdin="n\n", tty=True)
    assert code == 1 and store.exists("alice")
    code, _, _ = cli("rm", "alice", stdin="y\n", tty=True)
    assert code == 0 and not store.exists("alice")
    make_profile(store, "alice")
    code, _, stderr = cli("rm", "alice", "--yes")
    assert code == 0 and "removed" in stderr and store.names() == []


def test_cli_rename_and_path(cli, store):
    make_profile(store, "alice")
    code, _, _ = cli("rename", "alice", "alicia")
    assert code == 0 and store.names() == ["alicia"]
    code, stdout, _ = cli("path")
    assert code == 0 and stdout.strip() == str(store.path())
    code, stdout, _ = cli("path", "alicia")
    assert code == 0 and stdout.strip() == str(store.path("alicia"))
    code, _, stderr = cli("rename", "alicia", "../x")
    assert code == 2 and "invalid profile name '../x'" in stderr


def test_real_cli_registers_profiles(store):
    make_profile(store, "alice")
    result = facefix("profiles", "list", "--json")  # the whole command, as the console script builds it
    assert result.returncode == 0, result.stderr
    assert [r["name"] for r in json.loads(result.stdout)] == ["alice"]
