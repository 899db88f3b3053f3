"""A folder of every kind of bad (and awkward) input goes through one run: the batch goes on.

Bad files each get one failed report line naming them; awkward-but-valid
files (CMYK, 16-bit, gray, alpha, palette, animations, odd names) are restored;
no output is partial and no bad file leaves an output.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from clirun import facefix
from helpers_enrolled import is_valid_image, small_photos
from PIL import Image

pytestmark = pytest.mark.slow


@pytest.fixture
def home(enrolled_home):
    """This test's own copy of the session's enrolled home (conftest.py)."""
    return enrolled_home


def build_corpus(folder: Path, tmp: Path) -> tuple[set[str], set[str]]:
    """Write the corpus; returns (names that must be restored, names that must fail)."""
    (good_path,) = small_photos(tmp / "src", 1)
    good = Image.open(good_path).convert("RGB")
    rgb = np.asarray(good)
    folder.mkdir(parents=True)
    good.save(folder / "good.jpg", quality=90)
    good.save(folder / "été photo 1.jpg", quality=90)  # spaces and non-ASCII
    good.convert("CMYK").save(folder / "cmyk.jpg", quality=90)
    cv2.imwrite(str(folder / "sixteen.png"), (rgb[..., ::-1].astype(np.uint16) * 257))
    cv2.imwrite(str(folder / "sixteen.tif"), (rgb[..., ::-1].astype(np.uint16) * 257))
    good.convert("L").save(folder / "gray.jpg", quality=90)
    rgba = good.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(folder / "rgba.png")
    good.convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    frames = [good, good.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    frames[0].save(folder / "anim.webp", save_all=True, append_images=frames[1:], duration=100)
    restored = {"good.jpg", "été photo 1.jpg", "cmyk.jpg", "sixteen.png", "sixteen.tif", "gray.jpg",
                "rgba.png", "palette.png", "anim.gif", "anim.webp"}

    data = (folder / "good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not a photo\n")
    Image.new("L", (3000, 3000)).save(folder / "bomb.png")  # 9 MP, a few KB; the limit is set to 4 MP
    os.symlink("loop.jpg", folder / "loop.jpg")  # a symlink to itself
    (folder / "deleted.jpg").write_bytes(data)  # removed after the scan, before it is read
    failed = {"truncated.jpg", "empty.jpg", "text.jpg", "bomb.png", "loop.jpg", "deleted.jpg"}
    if Path("/proc/self/mem").exists():
        # Tests run as root, so chmod 000 does not stop a read; /proc/self/mem
        # opens but fails every read at offset 0 with EIO, a truly unreadable file.
        os.symlink("/proc/self/mem", folder / "unreadable.jpg")
        failed.add("unreadable.jpg")
    return restored, failed


def test_bad_input_corpus_in_one_folder_run(home, tmp_path, monkeypatch):
    import facefix.restore.api as restore_api

    folder = tmp_path / "corpus"
    restored, failed = build_corpus(folder, tmp_path)
    out, report = tmp_path / "out", tmp_path / "report.jsonl"
    plan = restore_api.plan_inputs

    def plan_then_delete(*args, **kwargs):  # one photo is deleted right after planning
        jobs = plan(*args, **kwargs)
        os.remove(folder / "deleted.jpg")
        return jobs

    monkeypatch.setattr(restore_api, "plan_inputs", plan_then_delete)
    result = facefix("restore", folder, "-o", out, "--report", report, "--json", home=home,
                     env={"FACEFIX_MAX_PIXELS": "4000000"})
    assert result.returncode == 1, result.stderr

    photos = [r for r in map(json.loads, report.read_text().splitlines()) if r["record"] == "photo"]
    by_name = {Path(p["file"]).name: p for p in photos}
    assert len(photos) == len(by_name) == len(restored | failed), "one photo line per file"
    assert {n for n, p in by_name.items() if p["status"] == "failed"} == failed
    assert {n for n, p in by_name.items() if p["status"] == "restored"} == restored
    for name in failed:  # the error names the file and says what is wrong
        assert name in by_name[name]["error"], by_name[name]["error"]
    reasons = {n: by_name[n]["error"] for n in failed}
    assert "truncated" in reasons["truncated.jpg"] and "empty" in reasons["empty.jpg"]
    assert "not a photo" in reasons["text.jpg"] and "decompression bomb" in reasons["bomb.png"]
    assert "no such file" in reasons["deleted.jpg"] and "symbolic links" in reasons["loop.jpg"]
    if "unreadable.jpg" in failed:
        assert "cannot be read" in reasons["unreadable.jpg"]
    assert f"{len(failed)} of {len(photos)} photos failed" in result.stderr

    # every good file restored, into a valid file; nothing for the bad ones; nothing partial
    outputs = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    expected = {by_name[n]["output"].rsplit("/", 1)[1] for n in restored}
    assert outputs == expected
    assert {"anim_restored.png", "anim_restored.webp", "été photo 1_restored.jpg"} <= outputs
    assert all(is_valid_image(out / name) for name in outputs)
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]
    with Image.open(out / "gray_restored.jpg") as im:
        assert im.mode == "L"
    with Image.open(out / "rgba_restored.png") as im:
        assert im.mode == "RGBA"
    with Image.open(out / "sixteen_restored.png") as im:
        sixteen = np.asarray(cv2.imread(str(out / "sixteen_restored.png"), cv2.IMREAD_UNCHANGED))
        assert im.mode in ("RGB", "I;16") or "16" in im.mode or sixteen.dtype == np.uint16
    # stdout held data only: one JSON record per face of the restored photos
    assert all(json.loads(line)["file"] for line in result.stdout.splitlines())
