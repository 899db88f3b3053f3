"""Folder runs: planning (globs, case, mirroring, outputs never inputs), resume, reports, streams."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from clirun import facefix
from helpers_enrolled import is_valid_image, small_photos
from PIL import Image

from facefix.errors import UsageError
from facefix.restore.plan import plan_inputs
from facefix.restore.record import (
    STATE_NAME,
    RunState,
    file_sha256,
    settings_key,
    sweep_partials,
)


def touch_photo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (100, 120, 140)).save(path, format="PNG" if path.suffix.lower() == ".png" else "JPEG")
    return path


def names(jobs) -> list[str]:
    return [j.source.name for j in jobs]


# --------------------------------------------------------------------------- planning


def test_extensions_match_in_any_case_and_subfolders_are_mirrored(tmp_path):
    album = tmp_path / "album"
    for rel in ["a.JPG", "b.jpeg", "c.Tif", "sub/d.PNG", "sub/deeper/e.webp", "notes.txt", ".hidden.jpg"]:
        (album / rel).parent.mkdir(parents=True, exist_ok=True)
        (album / rel).write_bytes(b"x")
    out = tmp_path / "out"
    jobs = plan_inputs([album], output_dir=out, suffix="_r", ext="same", recursive=True).jobs
    assert {j.source.relative_to(album).as_posix(): j.target.relative_to(out).as_posix() for j in jobs} == {
        "a.JPG": "a_r.JPG", "b.jpeg": "b_r.jpeg", "c.Tif": "c_r.Tif",
        "sub/d.PNG": "sub/d_r.PNG", "sub/deeper/e.webp": "sub/deeper/e_r.webp"}
    flat = plan_inputs([album], output_dir=out, suffix="_r", ext="same", recursive=False).jobs
    assert names(flat) == ["a.JPG", "b.jpeg", "c.Tif"]


def test_include_and_exclude_globs(tmp_path):
    album = tmp_path / "album"
    for rel in ["2001/x.jpg", "2001/y.png", "2002/z.JPG", "tmp/t.jpg", "raw_scan.tif"]:
        (album / rel).parent.mkdir(parents=True, exist_ok=True)
        (album / rel).write_bytes(b"x")
    plan = lambda **kw: sorted(j.source.relative_to(album).as_posix() for j in plan_inputs(
        [album], output_dir=tmp_path / "o", suffix="_r", ext="same", recursive=True, **kw).jobs)
    assert plan(include=["*.jpg"]) == ["2001/x.jpg", "2002/z.JPG", "tmp/t.jpg"]
    assert plan(exclude=["tmp"]) == ["2001/x.jpg", "2001/y.png", "2002/z.JPG", "raw_scan.tif"]
    assert plan(include=["2001/*"], exclude=["*.png"]) == ["2001/x.jpg"]
    assert plan(exclude=["raw_*", "200?"]) == ["tmp/t.jpg"]


def test_output_inside_the_input_tree_is_never_an_input(tmp_path):
    album = tmp_path / "album"
    touch_photo(album / "a.jpg")
    out = album / "restored"
    touch_photo(out / "a_restored.jpg")  # from an earlier run
    touch_photo(out / "nested" / "x.jpg")
    jobs = plan_inputs([album], output_dir=out, suffix="_restored", ext="same", recursive=True).jobs
    assert [(j.source.name, j.target) for j in jobs] == [("a.jpg", out / "a_restored.jpg")]


def test_outputs_beside_inputs_are_not_inputs_on_a_rerun(tmp_path):
    album = tmp_path / "album"
    touch_photo(album / "a.jpg")
    touch_photo(album / "a_restored.jpg")
    touch_photo(album / "a_restored_compare.jpg")
    touch_photo(album / "a_restored_faces" / "face0_generic_after.png")
    jobs = plan_inputs([album], output_dir=None, suffix="_restored", ext="same", recursive=True).jobs
    assert names(jobs) == ["a.jpg"]
    # a renamed output is still known to the run record
    jobs = plan_inputs([album], output_dir=None, suffix="_x", ext="same", recursive=True,
                     known_outputs={(album / "a_restored.jpg").resolve(), (album / "a_restored_compare.jpg").resolve()}).jobs
    assert "a_restored.jpg" not in names(jobs)


def test_an_output_may_not_overwrite_another_input(tmp_path):
    album = tmp_path / "album"
    touch_photo(album / "a.jpg")
    touch_photo(album / "a_r.jpg")
    with pytest.raises(UsageError, match="overwrite the input"):
        plan_inputs([album / "a.jpg", album / "a_r.jpg"], output_dir=None, suffix="_r", ext="same", recursive=False)
    with pytest.raises(UsageError, match="would overwrite it"):
        plan_inputs([album], output_dir=album, suffix="", ext="same", recursive=False)


def test_gif_is_planned_as_png_and_symlink_loops_do_not_trap_the_scan(tmp_path):
    album = tmp_path / "album"
    (album / "sub").mkdir(parents=True)
    (album / "anim.GIF").write_bytes(b"x")
    os.symlink(album, album / "sub" / "back")  # a folder loop
    os.symlink(album / "loop1.jpg", album / "loop2.jpg")
    os.symlink(album / "loop2.jpg", album / "loop1.jpg")  # a file loop: planned, fails on read
    jobs = plan_inputs([album], output_dir=tmp_path / "o", suffix="_r", ext="same", recursive=True).jobs
    assert sorted((j.source.name, j.target.name) for j in jobs) == [
        ("anim.GIF", "anim_r.png"), ("loop1.jpg", "loop1_r.jpg"), ("loop2.jpg", "loop2_r.jpg")]
    flat = plan_inputs([album], output_dir=tmp_path / "o", suffix="_r", ext="same", recursive=False).jobs
    assert names(flat) == ["anim.GIF", "loop1.jpg", "loop2.jpg"]


# --------------------------------------------------------------------------- the run record


def test_run_record_skips_done_and_redoes_what_changed(tmp_path):
    src, out = touch_photo(tmp_path / "a.jpg"), tmp_path / "out" / "a_r.jpg"
    state = RunState.for_output(tmp_path / "out")
    key = settings_key({"strength": 1.0})
    assert state.decide(src, out, key).action == "restore"
    touch_photo(out)
    state.record(src, out, key, sha256=file_sha256(src),
                 source_stat=src.stat())
    assert state.decide(src, out, key).action == "skip"
    assert state.decide(src, out, key, force=True).action == "restore"
    assert state.decide(src, out, settings_key({"strength": 0.5})).why == "settings or models changed"
    os.utime(src, ns=(1, 1))  # touched, same bytes: still done
    assert state.decide(src, out, key).action == "skip"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(src, format="JPEG")
    assert state.decide(src, out, key).why == "photo changed"
    out.unlink()
    assert state.decide(src, out, key).why == "output missing"
    state.close()
    # the record lives in OUT and stores paths relative to it
    rows = sqlite3.connect(tmp_path / "out" / STATE_NAME).execute("SELECT target FROM done").fetchall()
    assert rows == [("a_r.jpg",)]


def test_sweep_removes_only_our_temp_files(tmp_path):
    target = tmp_path / "a_r.jpg"
    ours = [tmp_path / ".a_r.jpg.k3j2.part", tmp_path / ".a_r_compare.jpg.x1.part"]
    theirs = [tmp_path / ".other.jpg.abc.part", tmp_path / "a_r.jpg.part"]
    for p in ours + theirs:
        p.write_bytes(b"half")
    assert sorted(sweep_partials([target])) == sorted(ours)
    assert all(p.exists() for p in theirs)


# --------------------------------------------------------------------------- the real CLI

@pytest.fixture
def home(enrolled_home):
    """This test's own copy of the session's enrolled home (conftest.py)."""
    return enrolled_home


def report_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_folder_run_resumes_redoes_changed_and_forces(home, tmp_path):
    album = tmp_path / "album"
    small_photos(album, 3)
    small_photos(album / "Trip 2001", 1, seed=4)
    out = album / "restored"  # OUT inside the input tree
    run = lambda *extra: facefix("restore", album, "-r", "-o", out, "--report", tmp_path / "r.jsonl", *extra, home=home)

    first = run("--json", "--quiet")
    assert first.returncode == 0, first.stderr
    records = [json.loads(line) for line in first.stdout.splitlines()]  # stdout: data only
    assert len(records) == 4 and all(r["restorer"] == "fast/astro+refs" for r in records)
    assert first.stderr.count("\n") <= 2, "--quiet: no bar, no summary"
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert written == ["Trip 2001/astronaut_00_restored.jpg", "astronaut_00_restored.jpg",
                       "astronaut_01_restored.jpg", "astronaut_02_restored.jpg"]
    assert all(is_valid_image(out / w) for w in written)
    photos = [r for r in report_lines(tmp_path / "r.jsonl") if r["record"] == "photo"]
    faces = [r for r in report_lines(tmp_path / "r.jsonl") if r["record"] == "face"]
    assert [p["status"] for p in photos] == ["restored"] * 4 and len(faces) == 4
    assert all(f["person"] == "astro" and f["similarity"] > 0.9 and f["seconds"] > 0 for f in faces)

    mtimes = {w: (out / w).stat().st_mtime_ns for w in written}
    again = run()
    assert again.returncode == 0, again.stderr
    assert {w: (out / w).stat().st_mtime_ns for w in written} == mtimes, "nothing redone"
    assert [p["status"] for p in report_lines(tmp_path / "r.jsonl")] == ["skipped"] * 4
    assert "already done" in again.stderr and "--force redoes them" in again.stderr

    small_photos(tmp_path / "new", 1, seed=9)[0].replace(album / "astronaut_01.jpg")  # a changed photo
    changed = run()
    assert changed.returncode == 0, changed.stderr
    statuses = {Path(p["file"]).relative_to(album).as_posix(): (p["status"], p["why"])
                for p in report_lines(tmp_path / "r.jsonl") if p["record"] == "photo"}
    assert statuses["astronaut_01.jpg"] == ("restored", "photo changed")
    assert sum(s == "skipped" for s, _ in statuses.values()) == 3

    quiet = run("-q", "--force", "--include", "astronaut_00.jpg")  # --quiet: errors only, no table
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "" and quiet.stderr == ""

    dry = facefix("restore", album, "-r", "-o", out, "--dry-run", "--force", "--json", home=home)
    assert dry.returncode == 0 and {json.loads(x)["action"] for x in dry.stdout.splitlines()} == {"restore"}
    forced = run("--force", "--strength", "0.5")
    assert forced.returncode == 0, forced.stderr
    assert [p["status"] for p in report_lines(tmp_path / "r.jsonl") if p["record"] == "photo"] == ["restored"] * 4
    assert not list(out.rglob(".*.part"))


@pytest.mark.slow
def test_several_restore_workers_and_include_glob(home, tmp_path):
    album = tmp_path / "album"
    small_photos(album, 4)
    (album / "astronaut_03.jpg").rename(album / "skip_me.JPG")
    out = tmp_path / "out"
    result = facefix("restore", album, "-o", out, "--devices", "cpu,cpu", "--exclude", "skip_*",
                     "--json", home=home)
    assert result.returncode == 0, result.stderr
    assert sorted(json.loads(x)["file"].rsplit("/", 1)[1] for x in result.stdout.splitlines()) == [
        "astronaut_00.jpg", "astronaut_01.jpg", "astronaut_02.jpg"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "astronaut_00_restored.jpg", "astronaut_01_restored.jpg", "astronaut_02_restored.jpg"]


# --------------------------------------------------------------------------- the pipelined runner, in-process


class TinyProvider:
    """A real (tiny, untrained) fast restorer for everyone; counts restorer calls."""

    def __init__(self):
        from facefix.restorers.fast import TINY_CONFIG, FastRestorer

        self.restorer = FastRestorer.build(TINY_CONFIG, name="fast/tiny")
        self.calls: list[int] = []

    def get(self, person):
        provider = self

        class Counting:
            name = provider.restorer.name

            def restore(self, crops):
                provider.calls.append(len(crops))
                return provider.restorer.restore(crops)

        return Counting()


def test_runner_batches_faces_across_photos_records_and_goes_on(tmp_path, group_photo):
    from facefix.faces import get_analyzer
    from facefix.profiles import ProfileStore
    from facefix.restore.matching import Gallery
    from facefix.restore.pipeline import RestoreOptions
    from facefix.restore.runner import BatchRunner

    album = tmp_path / "album"
    album.mkdir()
    for i in range(3):
        (album / f"group{i}.jpg").write_bytes(group_photo.read_bytes())
    (album / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut")
    out = tmp_path / "out"
    jobs = plan_inputs([album], output_dir=out, suffix="_r", ext="same", recursive=False).jobs
    analyzer = get_analyzer("dlib")
    provider = TinyProvider()
    state = RunState.for_output(out)
    outcomes = []
    runner = BatchRunner(analyzer=analyzer, gallery=Gallery.from_store(ProfileStore(), analyzer),
                         providers=[provider], options=RestoreOptions(), on_outcome=outcomes.append,
                         state=state, settings="k", batch_faces=64)
    # hold the restorer back until every photo is analysed, so one call must take them all
    import threading

    gate = threading.Event()
    analyze = runner._analyze

    def analyze_then_open():
        analyze()
        gate.set()

    restore = runner._restore

    def wait_then_restore(provider):
        gate.wait(60)
        restore(provider)

    runner._analyze, runner._restore = analyze_then_open, wait_then_restore
    runner.run(jobs)
    by_name = {o.job.source.name: o for o in outcomes}
    assert by_name["broken.jpg"].status == "failed" and "broken.jpg" in by_name["broken.jpg"].error
    faces = [sum(f.skipped is None for f in by_name[f"group{i}.jpg"].result.faces) for i in range(3)]
    assert all(n >= 4 for n in faces) and sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "group0_r.jpg", "group1_r.jpg", "group2_r.jpg"]
    assert provider.calls == [sum(faces)], "faces of all three photos in one restorer call"
    assert all(state.decide(j.source, j.target, "k").action == "skip" for j in jobs if j.source.name != "broken.jpg")
    assert state.decide(album / "broken.jpg", out / "broken_r.jpg", "k").action == "restore"
