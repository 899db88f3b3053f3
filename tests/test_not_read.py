"""Files of a folder that are not photos facefix reads are listed with the reason, never silently dropped (issue 16, item 4)."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from facefix.cli.main import main
from facefix.restore.plan import plan_inputs


def _folder(tmp_path):
    folder = tmp_path / "album"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(folder / "gray.jpg")
    (folder / "scan.jp2").write_bytes(b"\x00\x00\x00\x0cjP  \r\n\x87\n")
    (folder / "sub" / "IMG_0001.CR2").write_bytes(b"II*\x00")
    (folder / "notes.txt").write_text("grandma, 1952")
    (folder / ".DS_Store").write_bytes(b"\x00")
    return folder


def test_the_plan_lists_what_it_does_not_read_with_the_reason(tmp_path):
    folder = _folder(tmp_path)
    plan = plan_inputs([folder], output_dir=tmp_path / "out", suffix="_restored", ext="same", recursive=True)
    assert [j.source.name for j in plan.jobs] == ["gray.jpg"]
    why = {n.path.name: n.why for n in plan.not_read}
    assert set(why) == {"scan.jp2", "IMG_0001.CR2", "notes.txt"}  # hidden files are not listed
    assert why["scan.jp2"] == ".jp2 images are not read by facefix; convert it to TIFF, PNG or JPEG to restore it"
    assert why["IMG_0001.CR2"].startswith(".cr2 images are not read by facefix")
    assert why["notes.txt"] == "not a photo (.txt file)"
    # --exclude applies to them too: an excluded file is not reported
    plan = plan_inputs([folder], output_dir=None, suffix="_restored", ext="same", recursive=True, exclude=["*.txt"])
    assert {n.path.name for n in plan.not_read} == {"scan.jp2", "IMG_0001.CR2"}


def test_report_and_summary_count_them_and_the_run_still_succeeds(tmp_path, capsys):
    folder = _folder(tmp_path)
    report = tmp_path / "report.jsonl"
    code = main(["restore", str(folder), "-r", "-o", str(tmp_path / "out"), "--report", str(report),
                 "--backend", "dlib", "--review"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    records = [json.loads(line) for line in report.read_text().splitlines()]
    not_read = {r["file"].rsplit("/", 1)[-1]: r for r in records if r["status"] == "not read"}
    assert set(not_read) == {"scan.jp2", "IMG_0001.CR2", "notes.txt"}
    assert all(r["output"] is None and r["record"] == "photo" for r in not_read.values())
    assert not_read["notes.txt"]["why"] == "not a photo (.txt file)"
    assert [r["status"] for r in records if r["file"].endswith("gray.jpg")] == ["no face"]
    assert "3 file(s) in the folders are not photos facefix reads" in captured.err
    page = tmp_path / "out" / "facefix-review.html"  # --review: the page of this run, its files listed too
    assert f"review: {page}" in captured.err and "not a photo (.txt file)" in page.read_text(encoding="utf-8")


def test_a_folder_of_only_unreadable_files_says_what_they_are(tmp_path, capsys):
    folder = tmp_path / "raws"
    folder.mkdir()
    (folder / "a.nef").write_bytes(b"MM\x00*")
    code = main(["restore", str(folder), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    assert "no photos found in the given paths" in err
    assert "a.nef: .nef images are not read by facefix; convert it to TIFF, PNG or JPEG to restore it" in err
    assert not (tmp_path / "out").exists()  # nothing created when there is nothing to do
    assert main(["restore", str(folder), "--review"]) == 2
    assert "--review needs --output DIR" in capsys.readouterr().err
