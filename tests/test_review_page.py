"""``facefix review OUT``: the before/after page of a folder run, checked in a real headless browser (issue 16, item 14).

The browser is Debian's Chromium (``apt-get install -y chromium``) driven by
Playwright's Python client; the tests fail, never skip, when either is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from facefix.cli.main import main
from facefix.photos import samples
from facefix.restore.record import STATE_NAME
from facefix.review import MANIFEST_NAME, write_review
from facefix.review.data import gather
from facefix.review.page import PAGE_NAME, render
from facefix.review.thumbs import THUMB_DIR

CHROMIUM = Path("/usr/bin/chromium")
ODD = os.fsdecode(b"astronaut-\xe9")  # a file name that is not UTF-8
HTML_NAME = "<i>notes<b>&amp;.txt"  # a name that is also HTML


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A small folder run with a report: a portrait (non-UTF-8 name), a group photo in a subfolder,
    a photo with no face, a damaged JPEG and a text file with an HTML name."""
    base = tmp_path_factory.mktemp("review")
    album, out = base / "album", base / "out"
    (album / "sub").mkdir(parents=True)
    shutil.copy(samples.skimage_image("astronaut.png"), album / f"{ODD}.png")
    shutil.copy(samples.insightface_image("t1.jpg"), album / "sub" / "t1.jpg")
    shutil.copy(samples.skimage_image("coffee.png"), album / "coffee.png")
    (album / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not the rest of a JPEG")
    (album / HTML_NAME).write_text("grandma, 1952")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACEFIX_HOME", str(base / "home"))
        mp.setenv("FACEFIX_OFFLINE", "1")
        mp.setenv("HF_HUB_OFFLINE", "1")
        code = main(["restore", str(album), "-r", "-o", str(out), "--report", str(base / "run.jsonl"),
                     "--backend", "dlib", "-q"])
    assert code == 1  # the damaged JPEG failed; the rest was done
    assert main(["review", str(out), "--report", str(base / "run.jsonl"), "-q"]) == 0
    return base


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the review page is tested in a real browser; "
                    "install it with 'apt-get install -y chromium'")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: install the test extra, pip install -e '.[test]'")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


def _open(browser, page_path: Path):
    """A page with its console errors, page errors and requests collected."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.problems, page.requests = [], []
    page.on("console", lambda m: page.problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
            else None)
    page.on("pageerror", lambda e: page.problems.append(f"page error: {e}"))
    page.on("request", lambda r: page.requests.append(r.url))
    page.on("requestfailed", lambda r: page.problems.append(f"request failed: {r.url} {r.failure}"))
    page.goto(page_path.as_uri())
    page.wait_for_load_state("load")
    return page


def _visible_statuses(page) -> list[str]:
    return page.eval_on_selector_all(".card", "cs => cs.filter(c => c.offsetParent !== null).map(c => c.dataset.status)")


def _clipped(before) -> float:
    """How much of the before layer is clipped away on the right, in %."""
    clip = before.evaluate("e => getComputedStyle(e).clipPath")  # inset(0px 50% 0px 0px)
    assert clip.startswith("inset("), clip
    return float(clip[len("inset("):-1].split()[1].rstrip("%"))


def test_the_page_in_a_browser(run, browser):
    page = _open(browser, run / "out" / PAGE_NAME)
    try:
        # one card per photo, every file the run saw (the text file and the failure too)
        assert page.locator(".card").count() == 5
        assert sorted(_visible_statuses(page)) == ["failed", "no face", "not read", "restored", "restored"]
        titles = page.locator(".card h2").all_text_contents()
        assert any("astronaut-\\xe9.png" in t for t in titles), titles  # a non-UTF-8 name, shown readable
        assert any(HTML_NAME in t for t in titles), titles  # as text, never as markup
        assert page.locator(".card h2 i, .card h2 b").count() == 0
        failed = page.locator('.card[data-status="failed"]')
        assert "broken.jpg: the file is truncated or damaged" in failed.locator(".error").inner_text()
        assert page.locator('.card[data-status="not read"] .why').inner_text() == "not a photo (.txt file)"
        # every image loaded, from the file system only
        page.evaluate("() => Promise.all([...document.images].map(i => { i.loading = 'eager'; return i.complete ? 0 : "
                      "new Promise(r => { i.onload = i.onerror = r; }); }))")
        broken = page.eval_on_selector_all("img", "is => is.filter(i => !i.naturalWidth).map(i => i.src)")
        assert not broken
        astro = page.locator(".card", has_text="astronaut-")
        assert astro.locator(".face").count() == 1
        assert astro.locator(".face .cap").inner_text().startswith("generic")
        assert page.locator(".card", has_text="t1.jpg").locator(".face").count() == 6
        # the output link of a non-UTF-8 name is URL-encoded and reaches the file
        href = astro.locator("a.out").get_attribute("href")
        assert href == "astronaut-%E9_restored.png"
        width = page.evaluate("h => new Promise(r => { const i = new Image(); i.onload = () => r(i.naturalWidth); "
                              "i.onerror = () => r(0); i.src = h; })", href)
        assert width == 512

        # the slider moves: drag from 20 % to 80 % of the photo; the before layer is clipped to the handle
        cmp = astro.locator(".cmp").first
        before = cmp.locator(".before")
        assert _clipped(before) == 50
        cmp.scroll_into_view_if_needed()
        box = cmp.bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] / 2)
        page.mouse.down()
        assert _clipped(before) == pytest.approx(80, abs=0.5)
        page.mouse.move(box["x"] + box["width"] * 0.8, box["y"] + box["height"] / 2, steps=5)
        page.mouse.up()
        assert _clipped(before) == pytest.approx(20, abs=0.5)
        handle = cmp.locator(".handle").bounding_box()
        assert abs(handle["x"] - (box["x"] + box["width"] * 0.8)) < 3

        # filters hide what they should
        page.select_option("#f-status", "restored")
        assert _visible_statuses(page) == ["restored", "restored"]
        page.select_option("#f-status", "failed")
        assert _visible_statuses(page) == ["failed"]
        page.select_option("#f-status", "no face")
        assert _visible_statuses(page) == ["no face"]
        page.select_option("#f-status", "problems")
        assert sorted(_visible_statuses(page)) == ["failed", "not read"]
        page.select_option("#f-status", "")
        page.select_option("#f-person", "generic")
        assert _visible_statuses(page) == ["restored", "restored"]
        page.select_option("#f-person", "")
        page.fill("#f-name", "t1")
        assert page.locator(".card").count() == 1
        page.fill("#f-name", "")
        assert page.locator(".card").count() == 5

        # keyboard: j/k move between cards, b flips a card's sliders between before and after
        page.evaluate("() => document.activeElement.blur()")
        order = page.eval_on_selector_all(".card", "cs => cs.map(c => c.dataset.i)")
        current = "() => document.activeElement.classList.contains('card') ? document.activeElement.dataset.i : null"
        page.keyboard.press("j")
        assert page.evaluate(current) == order[0]
        page.keyboard.press("j")
        page.keyboard.press("ArrowRight")
        assert page.evaluate(current) == order[2]
        page.keyboard.press("k")
        assert page.evaluate(current) == order[1]
        page.keyboard.press("k")
        assert page.evaluate(current) == order[0]
        for _ in range(order.index(astro.get_attribute("data-i"))):
            page.keyboard.press("j")
        assert page.evaluate(current) == astro.get_attribute("data-i")
        page.keyboard.press("b")
        assert astro.locator(".cmp").evaluate_all("cs => cs.map(c => c.dataset.pos)") == ["0", "0"]
        assert _clipped(before) == 100
        page.keyboard.press("b")
        assert astro.locator(".cmp").evaluate_all("cs => cs.map(c => c.dataset.pos)") == ["100", "100"]

        assert not page.problems, page.problems
        assert all(u.startswith(("file:", "data:")) for u in page.requests), page.requests
    finally:
        page.close()


def test_ten_thousand_photos_stay_fast(run, browser):
    """The page draws only what is scrolled to: 10,000 cards load as fast as a few."""
    out = run / "out"
    gathered = gather(out, run / "run.jsonl")
    from facefix.review.thumbs import make_thumbs

    thumbs, stats = make_thumbs(gathered.photos, out)
    assert stats.made == 0  # made once, by the review in the fixture
    many = 2000
    gathered.photos, thumbs = gathered.photos * many, thumbs * many
    big = out / "big-review.html"
    big.write_text(render(gathered, thumbs, out), encoding="utf-8")
    start = time.perf_counter()
    page = _open(browser, big)
    try:
        loaded = time.perf_counter() - start
        assert page.locator(".card").count() < 100
        assert page.inner_text("#shown").startswith("showing ")
        assert page.inner_text("#shown").endswith(" of 10000")
        assert loaded < 10, f"{loaded:.1f} s to load 10,000 cards"
        page.select_option("#f-status", "failed")
        assert page.inner_text("#shown") == "showing 40 of 2000 (filtered from 10000)"
        page.mouse.wheel(0, 20000)
        page.wait_for_function("() => document.querySelectorAll('.card').length > 40")
        assert not page.problems, page.problems
    finally:
        page.close()


def test_images_are_made_once_and_the_originals_untouched(run, capsys):
    album, out = run / "album", run / "out"
    before = {p: p.read_bytes() for p in album.rglob("*") if p.is_file()}
    thumbs = sorted(p.name for p in (out / THUMB_DIR).iterdir())
    assert main(["review", str(out), "--report", str(run / "run.jsonl"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["photos"], result["thumbs_made"], result["thumbs_reused"]) == (5, 0, 3)
    assert sorted(p.name for p in (out / THUMB_DIR).iterdir()) == thumbs
    # 3 photos read: 2 with before/after, the no-face photo before only; 7 faces before/after
    assert len(thumbs) == 2 * 2 + 1 + 7 * 2
    assert {p: p.read_bytes() for p in album.rglob("*") if p.is_file()} == before


def test_without_a_report_the_run_record_gives_whole_photos_and_says_so(run, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(run / "out", out)  # the run record stores targets relative to OUT
    (out / MANIFEST_NAME).unlink(missing_ok=True)  # as after runs of a facefix that wrote none
    result = write_review(out)
    assert result.source == "run record" and result.data_path == out / STATE_NAME
    assert result.notes and "faces were not recorded" in result.notes[0]
    gathered = gather(out)
    assert sorted(p.status for p in gathered.photos) == ["no face", "restored", "restored"]
    assert all(p.faces is None for p in gathered.photos)
    html = (out / PAGE_NAME).read_text(encoding="utf-8")
    assert "faces were not recorded" in html


def test_the_manifest_is_read_and_a_later_skip_keeps_the_faces(run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(run / "out", out)
    lines = (run / "run.jsonl").read_text(encoding="utf-8").splitlines()
    rerun = [json.dumps({**json.loads(line), "status": "skipped", "why": "done", "faces": 0})
             for line in lines if json.loads(line)["record"] == "photo" and json.loads(line)["status"] == "restored"]
    killed = lines[0][:40]  # a run killed mid-line; the next run appended its first record after it
    (out / MANIFEST_NAME).write_text("\n".join(lines + [killed + rerun[0]] + rerun[1:]) + "\n", encoding="utf-8")
    gathered = gather(out)
    assert gathered.source == "manifest"
    assert gathered.notes == [f"1 damaged line(s) of {MANIFEST_NAME} skipped (line {len(lines) + 1} first: a run was "
                              "killed while writing it); rerun 'facefix restore' to record those photos again"]
    faces = {p.source.name: len(p.faces or ()) for p in gathered.photos}
    assert faces[f"{ODD}.png"] == 1 and faces["t1.jpg"] == 6
    assert sorted(p.status for p in gathered.photos) == ["failed", "no face", "not read", "restored", "restored"]


def test_bad_input_is_one_line_with_the_fix(tmp_path, capsys):
    assert main(["review", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such folder; give the folder you passed to 'facefix restore -o'" in capsys.readouterr().err
    assert main(["review", str(tmp_path)]) == 2
    assert "no facefix run found here" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text("this is not json\n")
    assert main(["review", str(tmp_path), "--report", str(bad)]) == 2
    assert f"{bad}:1: not a facefix report line" in capsys.readouterr().err


def test_a_rerun_that_only_skips_adds_nothing_to_the_manifest_and_a_forced_one_does(run, tmp_path):
    """The manifest holds what runs changed: reruns that skip every photo (and meet the same
    non-photo files) leave it as it was, so it does not grow with every run of a library."""
    out = tmp_path / "out"
    args = ["restore", str(run / "album"), "-r", "-o", str(out), "--backend", "dlib", "-q"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACEFIX_HOME", str(tmp_path / "home"))
        assert main(args) == 1  # broken.jpg fails
        first = (out / MANIFEST_NAME).read_bytes()
        photo_lines = [json.loads(line) for line in first.decode().splitlines() if '"record": "photo"' in line]
        assert main(args) == 1
        after_rerun = (out / MANIFEST_NAME).read_bytes()
        assert main([*args, "--force"]) == 1
        after_force = (out / MANIFEST_NAME).read_bytes()
    rerun = [json.loads(line) for line in after_rerun[len(first):].decode().splitlines()]
    # only the failure is said again (it is this run's outcome, and may say something new)
    assert after_rerun.startswith(first)
    assert [(r["record"], r["status"]) for r in rerun] == [("photo", "failed")]
    assert sorted(r["status"] for r in photo_lines) == ["failed", "no face", "not read", "restored", "restored"]
    forced = [json.loads(line) for line in after_force[len(after_rerun):].decode().splitlines()]
    assert sorted(r["status"] for r in forced if r["record"] == "photo") == ["failed", "no face", "restored",
                                                                              "restored"]
    assert sum(r["record"] == "face" for r in forced) == 7  # the forced run's faces, recorded again
    faces = {p.source.name: None if p.faces is None else len(p.faces) for p in gather(out).photos}
    assert faces == {f"{ODD}.png": 1, "t1.jpg": 6, "coffee.png": 0, "broken.jpg": None, HTML_NAME: None}


def test_a_run_after_a_killed_one_does_not_lose_its_first_record(tmp_path):
    """A killed run's cut line is ended before the next run appends: only the cut line is damaged."""
    from facefix.restore.report import ManifestWriter, latest_photo_records
    from facefix.restore.runner import Job, Outcome

    manifest = tmp_path / MANIFEST_NAME
    whole = json.dumps({"record": "photo", "file": "/a.jpg", "output": None, "status": "failed", "why": "new",
                        "faces": 0, "seconds": 0.1, "error": "boom"})
    manifest.write_text(whole + "\n" + whole[:30], encoding="utf-8")  # killed mid-line
    writer = ManifestWriter(manifest)
    writer.write(Outcome(Job(tmp_path / "b.jpg", tmp_path / "out" / "b.jpg"), "failed", "new", error="bad"))
    writer.close()
    lines = manifest.read_text(encoding="utf-8").splitlines()
    assert lines[1] == whole[:30] and json.loads(lines[2])["file"] == str(tmp_path / "b.jpg")
    assert set(latest_photo_records(manifest)) == {"/a.jpg", str(tmp_path / "b.jpg")}


def test_every_run_into_out_appends_the_review_manifest(run, tmp_path):
    """No --report: 'facefix review OUT' still has the faces, failures and skipped files, after a rerun too."""
    out = tmp_path / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACEFIX_HOME", str(tmp_path / "home"))
        for _ in range(2):  # the rerun skips every photo: the first run's faces stay
            assert main(["restore", str(run / "album"), "-r", "-o", str(out), "--backend", "dlib", "-q"]) == 1
    assert main(["review", str(out), "-q"]) == 0
    gathered = gather(out)
    assert gathered.source == "manifest" and not gathered.notes
    faces = {p.source.name: None if p.faces is None else len(p.faces) for p in gathered.photos}
    assert faces == {f"{ODD}.png": 1, "sub/t1.jpg".rpartition("/")[2]: 6, "coffee.png": 0, "broken.jpg": None,
                     HTML_NAME: None}
