"""``restore --cluster`` on a local Ray cluster (2 CPUs, started once for this file): the same files,
report, record and exit status as a local run; a SIGKILLed driver leaves nothing partial and a rerun
skips exactly what it recorded; without Ray, one line says how to get it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clirun import facefix, using_env
from helpers_enrolled import is_valid_image, kill_part_way, small_photos
from PIL import Image

from facefix.photos import samples
from facefix.restore.record import STATE_NAME

pytestmark = pytest.mark.slow

#: Ray quiet and offline (also in the workers it starts, which inherit this process's environment).
RAY_ENV = {"RAY_DISABLE_USAGE_STATS": "1", "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster with 2 CPUs for this file; yields the address another process joins with."""
    ray = pytest.importorskip("ray")
    with using_env(RAY_ENV):
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def album_with_everything(root: Path, count: int = 3) -> Path:
    """Real photos with faces (astronaut variants, a group photo) in a folder and a subfolder,
    a photo with no face, a damaged file and a file that is not a photo."""
    album = root / "album"
    small_photos(album, count, seed=1)
    small_photos(album / "sub", 2, seed=2)
    with Image.open(samples.insightface_image("t1.jpg")) as im:
        im.save(album / "sub" / "group.png")
    shutil.copy(samples.skimage_image("coffee.png"), album / "coffee.png")
    (album / "damaged.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (album / "notes.txt").write_text("not a photo")
    return album


def files(out: Path) -> dict[str, bytes]:
    """Every output file (not the run's own hidden files) by its path under ``out``."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def report_records(path: Path, out: Path) -> list[str]:
    """The report's records, but timings, with the output folder's name taken out; sorted."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        record.pop("seconds")
        if record.get("output"):
            record["output"] = str(Path(record["output"]).relative_to(out))
        records.append(json.dumps(record, sort_keys=True))
    return sorted(records)


def record_rows(out: Path) -> list[tuple]:
    """The resume record's rows, but timings."""
    with sqlite3.connect(out / STATE_NAME) as db:
        return sorted(db.execute("SELECT target, source, source_sha256, source_size, source_mtime_ns, settings, "
                                 "output_size, extras, faces FROM done").fetchall())


def rows_so_far(out: Path) -> int:
    """Rows in a record another process is writing (0 while it is still creating the file or its table)."""
    try:
        return len(record_rows(out)) if (out / STATE_NAME).is_file() else 0
    except sqlite3.OperationalError:  # "no such table" between the file's creation and its schema
        return 0


def test_cluster_run_matches_the_local_run(ray_cluster, enrolled_home, tmp_path, monkeypatch):
    album_with_everything(tmp_path)
    # Relative paths, as a user types them: the workers (started elsewhere) work in the driver's folder.
    monkeypatch.chdir(tmp_path)
    album, local_out, cluster_out = Path("album"), Path("local"), Path("cluster")
    local = facefix("restore", album, "-r", "-o", local_out, "--report", "local.jsonl", home=enrolled_home)
    cluster = facefix("restore", album, "-r", "-o", cluster_out, "--report", "cluster.jsonl",
                      "--cluster", "auto", home=enrolled_home)

    assert local.returncode == cluster.returncode == 1, cluster.stderr  # the damaged file failed, the run went on
    local_files, cluster_files = files(local_out), files(cluster_out)
    assert len(local_files) == 6, sorted(local_files)  # 5 astronauts + the group photo (coffee: no face, no file)
    assert cluster_files.keys() == local_files.keys(), cluster.stderr
    assert [n for n in local_files if cluster_files[n] != local_files[n]] == [], "the same bytes"
    local_report = report_records(Path("local.jsonl"), local_out)
    assert report_records(Path("cluster.jsonl"), cluster_out) == local_report
    statuses = sorted(json.loads(r)["status"] for r in local_report if '"record": "photo"' in r)
    assert statuses == ["failed", "no face", "not read"] + ["restored"] * 6
    assert record_rows(cluster_out) == record_rows(local_out), "the same resume record"
    assert "damaged.jpg" in cluster.stderr and "1 of 8 photos failed" in cluster.stderr


def test_killed_driver_leaves_whole_photos_and_the_rerun_skips_what_it_recorded(ray_cluster, enrolled_home,
                                                                                 tmp_path):
    import ray

    album = tmp_path / "album"
    count = 12
    small_photos(album, count // 2, seed=1)
    small_photos(album / "sub", count - count // 2, seed=2)
    out = tmp_path / "out"
    env = {**os.environ, **RAY_ENV, "FACEFIX_HOME": str(enrolled_home), "FACEFIX_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "facefix", "restore", album, "-r", "-o", out, "--quiet",
                             "--cluster", ray_cluster], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kill_part_way(proc, lambda: rows_so_far(out) >= 3)
    deadline = time.monotonic() + 600
    recorded = {row[0] for row in record_rows(out)}
    assert 3 <= len(recorded) < count
    # Ray stops the dead driver's workers (their CPUs come back) before the rerun starts its own.
    while time.monotonic() < deadline and ray.available_resources().get("CPU", 0) < 2:
        time.sleep(0.1)
    assert all(is_valid_image(p) for p in files_in(out)), "a killed run leaves only whole photos"

    report = tmp_path / "rerun.jsonl"
    rerun = facefix("restore", album, "-r", "-o", out, "--report", report, "--cluster", "auto", home=enrolled_home)
    assert rerun.returncode == 0, rerun.stderr
    photos = [r for r in map(json.loads, report.read_text().splitlines()) if r["record"] == "photo"]
    assert len(photos) == count
    skipped = {str(Path(p["output"]).relative_to(out)) for p in photos if p["status"] == "skipped"}
    assert skipped == recorded, "the rerun skips exactly the photos the killed run recorded"
    assert {p["status"] for p in photos if p["status"] != "skipped"} == {"restored"}
    expected = sorted((out / p.relative_to(album)).with_name(p.stem + "_restored.jpg") for p in album.rglob("*.jpg"))
    assert files_in(out) == expected, "every photo once, none doubled"
    assert all(is_valid_image(p) for p in expected)
    assert not list(out.rglob("*.part")), "no partial files left"


def photo_workers() -> list[int]:
    """The process ids of this test's Ray workers (descendants of this process titled ``ray::PhotoWorker``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0]
            pid = int(entry.name)
            chain = pid
            while chain > 1 and chain != os.getpid():
                chain = int((Path("/proc") / str(chain) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # a process that ended meanwhile
        if title.startswith(b"ray::PhotoWorker") and chain == os.getpid():
            found.append(pid)
    return sorted(found)


def test_a_killed_worker_fails_only_its_photos_and_the_rerun_redoes_them(ray_cluster, enrolled_home, tmp_path,
                                                                         monkeypatch):
    from facefix.cluster.executor import RayExecutor
    from facefix.restore.api import RestoreRequest, RestoreSession

    album, out, count = tmp_path / "album", tmp_path / "out", 12
    small_photos(album, count, seed=3)
    monkeypatch.setenv("FACEFIX_HOME", str(enrolled_home))
    deadline = time.monotonic() + 120
    while photo_workers() and time.monotonic() < deadline:  # an earlier test's workers, still exiting
        time.sleep(0.1)
    killed: list[int] = []
    on_workers: list[int] = []

    def kill_a_worker(outcome) -> None:  # once the first photo is back, SIGKILL one of the two workers
        on_workers.append(session.summary.in_flight)  # the progress bar's "on workers"
        if not killed:
            workers = photo_workers()
            assert len(workers) == 2, workers
            os.kill(workers[0], signal.SIGKILL)
            killed.append(workers[0])

    with RestoreSession.open(RestoreRequest(paths=(album,), output=out)) as session:
        summary = session.run(kill_a_worker, executor=RayExecutor("auto", workers=2))
    assert killed
    assert max(on_workers) >= 2 and summary.in_flight == 0, on_workers
    failed, restored = summary.counts["failed"], summary.counts["restored"]
    assert failed >= 1 and restored >= 1 and failed + restored == count, summary.counts
    assert all("the cluster worker restoring it died" in f for f in summary.failures), summary.failures
    assert all(is_valid_image(p) for p in files_in(out)), "only whole photos"

    report = tmp_path / "rerun.jsonl"
    rerun = facefix("restore", album, "-o", out, "--report", report, "--cluster", "auto", home=enrolled_home)
    assert rerun.returncode == 0, rerun.stderr
    statuses = [r["status"] for r in map(json.loads, report.read_text().splitlines()) if r["record"] == "photo"]
    assert sorted(statuses) == sorted(["restored"] * failed + ["skipped"] * restored)
    assert files_in(out) == sorted(out / f"{p.stem}_restored.jpg" for p in album.glob("*.jpg"))
    assert not list(out.rglob("*.part")), "no partial files left"


def files_in(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))


def test_without_ray_the_option_says_how_to_get_it(monkeypatch, tmp_path):
    (photo,) = small_photos(tmp_path / "album", 1)
    monkeypatch.setitem(sys.modules, "ray", None)  # what "import ray" meets where Ray is not installed
    result = facefix("restore", photo, "-o", tmp_path / "out", "--cluster", "auto")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        'error: --cluster needs Ray, which is not installed; pip install "facefix[cluster]"']
    assert not (tmp_path / "out").exists()


def test_an_address_that_names_no_cluster_is_a_usage_error(tmp_path):
    (photo,) = small_photos(tmp_path / "album", 1)
    pytest.importorskip("ray")
    result = facefix("restore", photo, "-o", tmp_path / "out", "--cluster", "head-node")
    assert result.returncode == 2
    assert "names no cluster" in result.stderr and "HOST:PORT" in result.stderr


def test_the_homes_of_killed_workers_are_swept_and_live_ones_kept(tmp_path, monkeypatch):
    """A SIGKILLed worker cannot remove its private home; the next worker on the node does."""
    import tempfile

    from facefix.cluster.bundle import HOME_PREFIX, remove_home, worker_home

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()

    def home_of(pid: int, tag: str) -> Path:
        home = tmp_path / f"{HOME_PREFIX}{pid}-{tag}"
        home.mkdir()
        for name in ("data", "cache"):
            (home / name).symlink_to(tmp_path, target_is_directory=True)
        return home

    stale, live = home_of(dead.pid, "a"), home_of(os.getpid(), "b")
    not_a_home = tmp_path / f"{HOME_PREFIX}{dead.pid}-c"
    not_a_home.mkdir()
    (not_a_home / "notes.txt").write_text("someone else's")
    data = tmp_path / "shipped"
    data.mkdir()
    home = worker_home(data)
    assert not stale.exists(), "the killed worker's home is swept"
    assert live.exists() and not_a_home.exists() and (not_a_home / "notes.txt").exists()
    assert home.name.startswith(f"{HOME_PREFIX}{os.getpid()}-") and (home / "data").resolve() == data.resolve()
    remove_home(home)
    assert not home.exists()
