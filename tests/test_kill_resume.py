"""Kill a real folder run with SIGKILL part-way; the rerun finishes the set, nothing lost or doubled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from clirun import facefix
from helpers_enrolled import is_valid_image, kill_part_way, small_photos

pytestmark = pytest.mark.slow


@pytest.fixture
def home(enrolled_home):
    """This test's own copy of the session's enrolled home (conftest.py)."""
    return enrolled_home


def outputs(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))


def test_sigkill_part_way_then_rerun_completes(home, tmp_path):
    album = tmp_path / "album"
    count = 12
    small_photos(album, count // 2, seed=1)
    small_photos(album / "sub", count - count // 2, seed=2)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "facefix", "restore", str(album), "-r", "-o", str(out), "--quiet"]
    env = {**os.environ, "FACEFIX_HOME": str(home), "FACEFIX_OFFLINE": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kill_part_way(proc, lambda: out.is_dir() and len(outputs(out)) >= 3)
    done_before = outputs(out)
    assert 3 <= len(done_before) < count
    assert all(is_valid_image(p) for p in done_before), "a killed run leaves only whole photos"

    report = tmp_path / "rerun.jsonl"
    rerun = facefix("restore", album, "-r", "-o", out, "--report", report, home=home)
    assert rerun.returncode == 0, rerun.stderr
    photos = [r for r in map(json.loads, report.read_text().splitlines()) if r["record"] == "photo"]
    statuses = [p["status"] for p in photos]
    assert len(photos) == count and statuses.count("failed") == 0
    # finished photos were recorded, so they are not redone (at most the one
    # written between its rename and its record can be)
    assert statuses.count("skipped") >= len(done_before) - 1
    final = outputs(out)
    expected = sorted((out / p.relative_to(album)).with_name(p.stem + "_restored.jpg")
                      for p in album.rglob("*.jpg"))
    assert final == expected, "every photo once, none doubled"
    assert all(is_valid_image(p) for p in final)
    assert not list(out.rglob("*.part")), "no partial files left"
    again = facefix("restore", album, "-r", "-o", out, "--report", report, home=home)
    assert again.returncode == 0
    assert {r["status"] for r in map(json.loads, report.read_text().splitlines())} == {"skipped"}
