"""face_recognition's sdist as a source of distinct photos of one person (quickstart, benchmarks).

pip is replaced by a fake that does what ``pip download --no-binary :all: -d DIR``
does: it leaves the sdist, named as PyPI names it, in DIR. The archive has the
real layout (``face_recognition-1.3.0/tests/test_images/*.jpg`` beside code).
"""

from __future__ import annotations

import io
import subprocess
import tarfile

import pytest

from facefix.errors import FacefixError
from facefix.photos import samples

PHOTOS = ("obama.jpg", "obama2.jpg", "obama3.jpg", "obama_partial_face.jpg", "obama_partial_face2.jpg", "biden.jpg")


def _sdist(path):
    with tarfile.open(path, "w:gz") as tar:
        for name in ("face_recognition-1.3.0/setup.py", "face_recognition-1.3.0/face_recognition/api.py",
                     *(f"face_recognition-1.3.0/tests/test_images/{p}" for p in PHOTOS)):
            data = name.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_downloads_once_and_unpacks_only_the_photos(tmp_path, monkeypatch):
    calls = []

    def fake_pip(command, **kwargs):
        calls.append(command)
        folder = command[command.index("-d") + 1]
        _sdist(f"{folder}/face_recognition-1.3.0.tar.gz")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(samples.subprocess, "run", fake_pip)
    folder = samples.face_recognition_photos(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == sorted(PHOTOS)
    assert not (tmp_path / "face_recognition-1.3.0" / "setup.py").exists()  # no code unpacked
    assert calls[0][-1] == samples.FACE_RECOGNITION_SDIST and "--no-deps" in calls[0]
    assert samples.face_recognition_photos(tmp_path) == folder and len(calls) == 1  # cached


def test_a_failed_download_says_what_to_run(tmp_path, monkeypatch):
    def offline(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: Could not find a version that satisfies ...\n")

    monkeypatch.setattr(samples.subprocess, "run", offline)
    with pytest.raises(FacefixError, match="could not download face_recognition==1.3.0.*pip download"):
        samples.face_recognition_photos(tmp_path)
