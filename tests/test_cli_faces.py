"""`facefix faces` and `facefix doctor` through the console entry point's ``main`` (one as a real process)."""

from __future__ import annotations

import json

from clirun import facefix, facefix_process
from PIL import Image


def test_faces_json_reports_six_faces_offline(group_photo, tmp_path):
    drawn = tmp_path / "drawn.png"
    result = facefix("faces", str(group_photo), "--json", "--draw", str(drawn))
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)  # nothing but data on stdout
    assert record["backend"] == "dlib"
    assert len(record["faces"]) == 6
    for face in record["faces"]:
        assert len(face["box"]) == 4
        assert set(face["landmarks"]) == {"left_eye", "right_eye", "nose", "mouth_left", "mouth_right"}
    with Image.open(drawn) as im:
        assert im.size == (record["width"], record["height"])


def test_faces_reports_each_bad_file_and_goes_on(group_photo, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    # A real process: data on file descriptor 1, one line per bad file on 2, and the exit status.
    result = facefix_process("faces", str(bad), str(group_photo), str(empty), "--json")
    assert result.returncode == 1
    records = json.loads(result.stdout)
    assert [len(r["faces"]) for r in records] == [6]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2
    assert "notes.jpg" in errors[0] and "empty.png" in errors[1]


def test_missing_file_is_one_clear_line_and_debug_shows_traceback(tmp_path):
    missing = tmp_path / "nowhere.jpg"
    result = facefix("faces", str(missing))
    assert result.returncode == 1
    assert "nowhere.jpg" in result.stderr and "Traceback" not in result.stderr
    debug = facefix("faces", str(missing), env={"FACEFIX_DEBUG": "1"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_doctor_json_names_backend_and_directories(isolated_home):
    result = facefix("doctor", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["face_backend_auto"] == "dlib"
    assert info["data_dir"].startswith(str(isolated_home))
    assert info["device"] in {"cpu", "cuda", "mps"}
    assert {b["backend"] for b in info["face_backends"]} == {"dlib", "insightface"}
