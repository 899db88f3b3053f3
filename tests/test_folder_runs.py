"""Folder runs that must not stop or lie (issue 16, items 7-12).

A photo with no face is not re-encoded and has its own count; same-stem
sources get distinct outputs; non-UTF-8, markup and newline names round-trip
through the record, the report and the console; an unwritable output folder
is one clear line; nothing is created before the run has something to do.
Every corpus here is built by the tests.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from clirun import facefix
from helpers_enrolled import is_valid_image, small_photos
from PIL import Image

from facefix.errors import UsageError
from facefix.restore.plan import plan_inputs
from facefix.restore.record import STATE_NAME, RunState, file_sha256, settings_key
from facefix.restore.report import ReportWriter
from facefix.restore.runner import Outcome

#: A file name that is not valid UTF-8 (Latin-1 "café"), as Python sees it.
CAFE = os.fsdecode(b"caf\xe9.jpg")


def no_face_photo(path: Path) -> Path:
    """A smooth colour gradient: a valid photo with nothing a face detector can take for a face."""
    y, x = np.mgrid[0:240, 0:320]
    rgb = np.stack([x * 255 // 320, y * 255 // 240, np.full_like(x, 90)], axis=-1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=90)
    return path


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# --------------------------------------------------------------------------- planning and records (fast)


def test_same_stem_png_and_gif_get_distinct_stable_targets(tmp_path):
    album = tmp_path / "album"
    album.mkdir()
    for name in ("photo.png", "photo.gif", "other.gif"):
        (album / name).write_bytes(b"x")
    out = tmp_path / "out"
    plan = lambda: {j.source.name: j.target.name for j in plan_inputs(
        [album], output_dir=out, suffix="_restored", ext="same", recursive=False).jobs}
    # the PNG keeps the plain name, the GIF (written as PNG) keeps its own extension in its name
    assert plan() == {"photo.png": "photo_restored.png", "photo.gif": "photo.gif_restored.png",
                      "other.gif": "other_restored.png"}
    assert plan() == plan(), "the same targets on a rerun (the resume record is keyed by them)"
    # --ext jpg: neither source is a JPEG, so both keep their extension
    jpg = {j.source.name: j.target.name for j in plan_inputs(
        [album / "photo.png", album / "photo.gif"], output_dir=out, suffix="_r", ext="jpg", recursive=False).jobs}
    assert jpg == {"photo.png": "photo.png_r.jpg", "photo.gif": "photo.gif_r.jpg"}
    # beside the inputs, an earlier run's renamed output is not taken as an input
    (album / "photo.gif_restored.png").write_bytes(b"x")
    beside = plan_inputs([album], output_dir=None, suffix="_restored", ext="same", recursive=False).jobs
    assert sorted(j.source.name for j in beside) == ["other.gif", "photo.gif", "photo.png"]
    # two sources with the output's own extension still cannot share one output: a clear refusal
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "photo.png").write_bytes(b"x")
    with pytest.raises(UsageError, match="would both be written"):
        plan_inputs([album / "photo.png", tmp_path / "b" / "photo.png"], output_dir=out, suffix="_r",
                  ext="same", recursive=False)


def test_run_record_keeps_non_utf8_names_exactly(tmp_path):
    src = tmp_path / CAFE
    Image.new("RGB", (8, 8)).save(src, format="JPEG")
    out = tmp_path / "out"
    target = out / os.fsdecode(b"caf\xe9_r.jpg")
    target.parent.mkdir()
    target.write_bytes(b"restored")
    key = settings_key({})
    state = RunState.for_output(out)
    state.record(src, target, key, sha256=file_sha256(src), source_stat=src.stat())
    assert state.decide(src, target, key).action == "skip"
    assert state.targets() == {target.resolve()}
    state.close()
    rows = sqlite3.connect(out / STATE_NAME).execute("SELECT target, source FROM done").fetchall()
    assert rows == [(b"caf\xe9_r.jpg", os.fsencode(src))], "raw bytes, not a lossy text form"


def test_no_face_job_is_done_without_an_output_unless_a_copy_is_asked(tmp_path):
    src = no_face_photo(tmp_path / "wall.jpg")
    target = tmp_path / "out" / "wall_r.jpg"
    key = settings_key({})
    state = RunState.for_output(tmp_path / "out")
    state.record(src, target, key, sha256=file_sha256(src), source_stat=src.stat(), written=False)
    assert not target.exists()
    decision = state.decide(src, target, key)
    assert (decision.action, decision.why) == ("skip", "done, no face")
    assert state.decide(src, target, key, copy_unchanged=True).action == "redo"
    state.close()


def test_report_writes_non_utf8_names_readably_and_exactly(tmp_path):
    from facefix.restore.plan import Job

    job = Job(tmp_path / CAFE, tmp_path / os.fsdecode(b"caf\xe9_r.jpg"))
    writer = ReportWriter(tmp_path / "r.jsonl")
    writer.write(Outcome(job, "failed", "new", error=f"{job.source}: truncated; re-copy it"))
    writer.close()
    (record,) = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text(encoding="utf-8").splitlines()]
    assert record["file"].endswith("caf\\xe9.jpg") and record["error"].startswith(record["file"])
    assert base64.b64decode(record["file_bytes"]) == os.fsencode(job.source)
    assert base64.b64decode(record["output_bytes"]) == os.fsencode(job.target)


# --------------------------------------------------------------------------- the real CLI


@pytest.fixture
def home(enrolled_home):
    """This test's own copy of the session's enrolled home (conftest.py)."""
    return enrolled_home


def report(path: Path) -> dict[str, dict]:
    photos = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    return {Path(p["file"]).name: p for p in photos if p["record"] == "photo"}


@pytest.mark.slow
def test_no_face_photo_is_not_reencoded_and_has_its_own_count(home, tmp_path):
    album = tmp_path / "album"
    small_photos(album, 1)
    no_face_photo(album / "wall.jpg")
    out, rep = tmp_path / "out", tmp_path / "r.jsonl"
    run = lambda *extra: facefix("restore", album, "-o", out, "--report", rep, *extra, home=home)

    first = run("--json")
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["astronaut_00_restored.jpg"]
    photos = report(rep)
    assert (photos["wall.jpg"]["status"], photos["wall.jpg"]["output"], photos["wall.jpg"]["faces"]) == (
        "no face", None, 0)
    assert photos["astronaut_00.jpg"]["status"] == "restored"
    lines = [json.loads(x) for x in first.stdout.splitlines()]
    assert {"file": str(album / "wall.jpg"), "face": None, "status": "no face", "output": None} in lines

    summary = run()  # the summary counts it apart; the rerun skips both photos
    assert summary.returncode == 0, summary.stderr
    assert {p["status"] for p in report(rep).values()} == {"skipped"}
    assert report(rep)["wall.jpg"]["why"] == "done, no face" and report(rep)["wall.jpg"]["output"] is None
    header = next(line for line in summary.stderr.splitlines() if "restored" in line and "no face" in line)
    assert "already done" in header

    skipped = run("--json")  # --json says what happened to skipped photos too
    assert sorted((json.loads(x)["status"], json.loads(x)["why"]) for x in skipped.stdout.splitlines()) == [
        ("skipped", "done"), ("skipped", "done, no face")]

    copied = run("--copy-unchanged")  # asked for: a byte copy, and only that photo is redone
    assert copied.returncode == 0, copied.stderr
    assert (out / "wall_restored.jpg").read_bytes() == (album / "wall.jpg").read_bytes()
    photos = report(rep)
    assert photos["wall.jpg"]["status"] == "no face" and photos["wall.jpg"]["why"] == "--copy-unchanged"
    assert photos["wall.jpg"]["output"] == str(out / "wall_restored.jpg")
    assert photos["astronaut_00.jpg"]["status"] == "skipped"


@pytest.mark.slow
def test_same_stem_png_and_gif_are_both_restored_and_resumed(home, tmp_path):
    album = tmp_path / "album"
    (face,) = small_photos(tmp_path / "src", 1)
    album.mkdir()
    with Image.open(face) as im:
        im.save(album / "photo.png")
        im.convert("P", palette=Image.Palette.ADAPTIVE).save(album / "photo.gif")
    out, rep = tmp_path / "out", tmp_path / "r.jsonl"
    result = facefix("restore", album, "-o", out, "--report", rep, home=home)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "photo.gif_restored.png", "photo_restored.png"]
    assert all(is_valid_image(p) for p in out.iterdir() if not p.name.startswith("."))
    assert {n: p["status"] for n, p in report(rep).items()} == {"photo.png": "restored", "photo.gif": "restored"}
    again = facefix("restore", album, "-o", out, "--report", rep, home=home)
    assert again.returncode == 0, again.stderr
    assert {n: p["status"] for n, p in report(rep).items()} == {"photo.png": "skipped", "photo.gif": "skipped"}


@pytest.mark.slow
def test_non_utf8_name_round_trips_through_record_report_and_console(home, tmp_path):
    album = tmp_path / "album"
    (face,) = small_photos(tmp_path / "src", 1)
    album.mkdir()
    shutil.copyfile(face, album / CAFE)
    shutil.copyfile(face, album / "plain.jpg")
    (album / os.fsdecode(b"cass\xe9.jpg")).write_bytes(b"not a photo")  # a failure line naming it too
    out, rep = tmp_path / "out", tmp_path / "r.jsonl"
    result = facefix("restore", album, "-o", out, "--report", rep, home=home)
    assert result.returncode == 1, result.stderr  # the bad file failed; the others were written
    written = {os.fsencode(p.name) for p in out.iterdir() if not p.name.startswith(".")}
    assert written == {b"caf\xe9_restored.jpg", b"plain_restored.jpg"}
    photos = [json.loads(x) for x in rep.read_text(encoding="utf-8").splitlines() if '"photo"' in x]
    by_bytes = {base64.b64decode(p["file_bytes"]) if "file_bytes" in p else os.fsencode(p["file"]): p
                for p in photos}
    assert set(by_bytes) == {os.fsencode(album / n) for n in (CAFE, "plain.jpg", os.fsdecode(b"cass\xe9.jpg"))}
    cafe = by_bytes[os.fsencode(album / CAFE)]
    assert cafe["status"] == "restored" and cafe["file"] == f"{album}/caf\\xe9.jpg"
    assert base64.b64decode(cafe["output_bytes"]) == os.fsencode(out / os.fsdecode(b"caf\xe9_restored.jpg"))
    bad = by_bytes[os.fsencode(album / os.fsdecode(b"cass\xe9.jpg"))]
    assert bad["status"] == "failed" and bad["error"].startswith(f"{album}/cass\\xe9.jpg")
    assert f"wrote {out}/caf\\xe9_restored.jpg" in result.stderr
    assert f"error: {album}/cass\\xe9.jpg" in result.stderr
    again = facefix("restore", album, "-o", out, "--report", rep, home=home)  # the record matched the names
    statuses = sorted(json.loads(x)["status"] for x in rep.read_text(encoding="utf-8").splitlines()
                      if '"photo"' in x)
    assert statuses == ["failed", "skipped", "skipped"], again.stderr


@pytest.mark.slow
def test_markup_and_newlines_in_names_are_printed_literally(home, tmp_path):
    album = tmp_path / "album"
    (face,) = small_photos(tmp_path / "src", 1)
    album.mkdir()
    shutil.copyfile(face, album / "[red]markup.jpg")  # rich markup is a legal file name
    shutil.copyfile(face, album / "two\nlines.jpg")  # so is a newline
    (album / "[bold]broken.jpg").write_bytes(b"not a photo")
    out = tmp_path / "out"
    result = facefix("restore", album, "-o", out, home=home)
    assert result.returncode == 1, result.stderr
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "[red]markup_restored.jpg", "two\nlines_restored.jpg"]
    assert f"wrote {out}/[red]markup_restored.jpg" in result.stderr
    assert f"wrote {out}/two\\nlines_restored.jpg" in result.stderr
    assert f"error: {album}/[bold]broken.jpg" in result.stderr
    assert "[red]markup.jpg" in result.stdout and "two\\nlines.jpg" in result.stdout  # the per-face table


@pytest.mark.slow
def test_nothing_is_created_before_the_run_has_something_to_do(home, tmp_path):
    album = tmp_path / "album"
    small_photos(album, 1)
    out = tmp_path / "out"
    nobody = facefix("restore", album, "--person", "nobody", "-o", out, home=home)
    assert nobody.returncode == 2, nobody.stderr
    assert "nobody" in one_error_line(nobody.stderr)
    assert not out.exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no photos here")
    out.mkdir()
    none = facefix("restore", empty, "-o", out, home=home)
    assert none.returncode == 1 and "no photos found" in none.stderr
    assert list(out.iterdir()) == [], "no run record for a run with nothing to do"


def test_output_folder_under_a_file_is_one_clear_line(tmp_path):
    album = tmp_path / "album"
    small_photos(album, 1)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    result = facefix("restore", album, "-o", blocker / "out", home=tmp_path / "home")
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert f"{blocker / 'out'}: the output folder cannot be created" in line and "give -o" in line


def _run_as_nobody(args: list[str], home: Path, log: Path) -> int:
    """Run the CLI's ``main`` in a forked child as the unprivileged user 'nobody'.

    Forked, not exec'd: the venv's interpreter lives under /root, which nobody
    may not enter; the child already holds the interpreter and facefix.
    """
    from facefix.cli import main as cli_main

    app = cli_main.build_app()  # import every command module while still root
    import zoneinfo  # noqa: F401 - imported lazily by the option parsing, from a folder nobody may read
    stream = open(log, "w", encoding="utf-8")  # noqa: SIM115 - opened as root, inherited by the child
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 99
        try:
            os.setgid(65534)
            os.setuid(65534)
            os.environ.update({"FACEFIX_HOME": str(home), "HOME": str(home), "FACEFIX_OFFLINE": "1",
                               "COLUMNS": "250"})
            sys.stderr = sys.stdout = stream
            code = cli_main.main(args, app=app)
        except BaseException:  # noqa: BLE001 - shown to the test as the child's output
            import traceback

            traceback.print_exc(file=stream)
        finally:
            stream.flush()
            os._exit(code)
    stream.close()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_read_only_output_folders_are_one_clear_line():
    """A new folder under a read-only parent, and a read-only existing folder.

    Tests run as root here, and root writes anywhere; so the CLI runs as the
    unprivileged user 'nobody' (uid 65534) under a world-readable temp folder.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root to run the CLI as the user 'nobody' (root ignores folder permissions, "
                    "so only a dropped-privilege child can meet a read-only folder)")
    top = Path(tempfile.mkdtemp(prefix="facefix-ro-"))
    try:
        top.chmod(0o777)
        album, home, parent, existing = top / "album", top / "home", top / "ro", top / "ro-out"
        small_photos(album, 1)
        for folder in (home, parent, existing):
            folder.mkdir()
        home.chmod(0o777)
        album.chmod(0o755)
        for photo in album.iterdir():
            photo.chmod(0o644)
        parent.chmod(0o555)
        existing.chmod(0o555)
        for out, expect in ((parent / "new", "the output folder cannot be created"),
                            (existing, "the output folder is not writable")):
            log = top / "log.txt"
            code = _run_as_nobody(["restore", str(album), "-o", str(out)], home, log)
            stderr = log.read_text(encoding="utf-8")
            assert code == 2, stderr
            line = one_error_line(stderr)
            assert f"{out}: {expect}" in line and "give -o a folder you can write to" in line, line
        assert list(parent.iterdir()) == [] and list(existing.iterdir()) == []
    finally:
        for folder in (top / "ro", top / "ro-out"):
            if folder.exists():
                folder.chmod(0o755)
        shutil.rmtree(top, ignore_errors=True)
