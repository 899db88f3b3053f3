"""`facefix eval` mechanics: held-out references, both models, both levels, a contact sheet."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facefix.enroll.fast import GENERIC_SHARE_NEW
from facefix.enroll.fusion import FUSION_SHARE
from facefix.enroll.select import scan_photos, select_references
from facefix.errors import UsageError
from facefix.evaluate.run import BASELINE, evaluate_person
from facefix.faces import get_analyzer
from facefix.photos import samples
from facefix.profiles import ProfileStore
from facefix.restorers.fast import TINY_CONFIG, FastRestorer
from facefix.training.loop import TrainConfig

pytestmark = pytest.mark.slow


@pytest.fixture
def astro(tmp_path, portrait_photo):
    """A profile "astro" with five references, and the analyzer that made it."""
    analyzer = get_analyzer("dlib")
    samples.make_variants(portrait_photo, tmp_path / "refs", count=5, seed=7)
    selection = select_references(scan_photos(tmp_path / "refs"), analyzer, min_face=30)
    store = ProfileStore()
    with store.edit("astro", create=True) as editor:
        for c in selection.accepted:
            editor.add_reference(c.crop, source=c.path, sha256=c.sha256,
                                 embeddings={"dlib": c.face.embedding}, box=c.face.box)
    return store, analyzer


def test_eval_scores_every_method_at_both_levels_and_leaves_the_profile(astro):
    store, analyzer = astro
    before = store.load("astro")
    stages = []
    report = evaluate_person("astro", store=store, analyzer=analyzer, holdout=2, budget_s=600, max_steps=15,
                             model_config=TINY_CONFIG, train_config=TrainConfig(patch=128, batch=4, warmup_steps=2),
                             on_stage=lambda label, seconds: stages.append(seconds), fusion=False)
    # the budget is split as a first enroll splits it (without the fusion: see the next test)
    assert stages == pytest.approx([600 * GENERIC_SHARE_NEW, 600 * (1 - GENERIC_SHARE_NEW)])
    assert len(report.held_out) == 2 and report.train_references == 3
    # the person's model then their references, as restore does
    assert report.methods == (BASELINE, "generic", "person", "person+refs")
    assert {(r.level, r.method) for r in report.rows} == {(lv, m) for lv in ("moderate", "severe")
                                                          for m in report.methods}
    for level in ("moderate", "severe"):
        degraded = report.row(level, "degraded")
        assert 10 < degraded.psnr < 40 and 0 < degraded.ssim < 1 and -1 <= degraded.identity <= 1
        assert 0 < degraded.sharpness < 1 and 0 < degraded.expression < 1
    # severe is worse than moderate for the degraded input, and blurrier
    assert report.row("severe", "degraded").psnr < report.row("moderate", "degraded").psnr
    assert report.row("severe", "degraded").sharpness < report.row("moderate", "degraded").sharpness
    # one column per method and the original; each face's tile (192) has its eyes (75) and mouth (90)
    # under it, each below a 2-px line
    assert report.sheet.shape[1] == 5 * 192 and report.sheet.shape[0] == 24 + 2 * 2 * (192 + 2 + 75 + 2 + 90)
    rows = report.to_dict()["rows"]
    assert report.to_dict()["methods"] == list(report.methods)
    assert all(isinstance(r["sharpness"], float) and isinstance(r["expression"], float) for r in rows)
    after = store.load("astro")
    assert after.artifacts == before.artifacts == {}, "eval does not change the profile"
    with pytest.raises(Exception, match="--holdout must be between 1 and 4"):
        evaluate_person("astro", store=store, analyzer=analyzer, holdout=5)


def test_eval_learns_the_reference_fusion_as_enroll_does(astro):
    store, analyzer = astro
    stages = []
    report = evaluate_person("astro", store=store, analyzer=analyzer, holdout=2, budget_s=40, max_steps=4,
                             model_config=TINY_CONFIG, train_config=TrainConfig(patch=128, batch=4, warmup_steps=2),
                             on_stage=lambda label, seconds: stages.append((label, seconds)))
    fast = 40 * (1 - FUSION_SHARE)
    assert [s for _, s in stages] == pytest.approx([fast * GENERIC_SHARE_NEW, fast * (1 - GENERIC_SHARE_NEW),
                                                    40 * FUSION_SHARE])
    assert "reference fusion" in stages[-1][0] and 0 < report.steps["fusion"] <= 4
    assert report.methods == (BASELINE, "generic", "person", "person+refs")


def test_eval_scores_small_faces_at_their_own_size(astro):
    """--face-size 256: degraded at 256 px, enlarged into the template, restored, scored at 256."""
    store, analyzer = astro
    identity = FastRestorer.build(TINY_CONFIG, precision="fp32")  # an untrained model returns its input
    trained = {"generic": identity, "person": identity, "steps": {}}
    report = evaluate_person("astro", store=store, analyzer=analyzer, holdout=2, trained=trained,
                             face_sizes=(512, 256))
    assert report.face_sizes == (512, 256) and report.to_dict()["face_sizes"] == [512, 256]
    assert len(report.rows) == 2 * 2 * len(report.methods)
    for level in ("moderate", "severe"):
        bad = report.row(level, "degraded", 256)
        # the same recipe on a smaller face is a different test
        assert abs(bad.psnr - report.row(level, "degraded", 512).psnr) > 0.1
        # the trip into the template and back costs the input (almost) nothing
        assert abs(report.row(level, "person", 256).psnr - bad.psnr) < 0.5
    assert report.row("severe", "person") == report.row("severe", "person", 512)  # the first size by default
    for level in ("moderate", "severe"):
        # an identity restorer returns its input: as sharp, and with the same expression, at both sizes
        for size in (512, 256):
            bad, same = report.row(level, "degraded", size), report.row(level, "person", size)
            assert same.sharpness == pytest.approx(bad.sharpness, rel=0.25, abs=0.01)
            assert same.expression == pytest.approx(bad.expression, abs=0.05)
    with pytest.raises(UsageError, match="--face-size"):
        evaluate_person("astro", store=store, analyzer=analyzer, holdout=2, trained=trained, face_sizes=(1000,))


def test_eval_methods_follow_the_restorers_given(astro):
    """A third restorer (e.g. a reference-guided one) is one more method and one more column."""
    store, analyzer = astro
    identity = FastRestorer.build(TINY_CONFIG, precision="fp32")
    trained = {"generic": identity, "person": identity, "person+refs": identity, "steps": {}}
    report = evaluate_person("astro", store=store, analyzer=analyzer, holdout=2, trained=trained)
    assert report.methods == (BASELINE, "generic", "person", "person+refs")
    assert {r.method for r in report.rows} == set(report.methods) and len(report.rows) == 2 * 4
    assert report.sheet.shape[1] == 5 * 192
    with pytest.raises(UsageError, match="named other than"):
        evaluate_person("astro", store=store, analyzer=analyzer, holdout=2,
                        trained={"degraded": identity, "steps": {}})


def test_contact_sheet_takes_any_columns_and_zooms_into_eyes_and_mouth():
    from facefix.evaluate.run import ZOOM_BOXES_512, ZOOM_GAP, contact_sheet

    faces = np.stack([_textured(s) for s in range(2)]).astype(np.float32) / 255.0
    half = np.stack([cv2.resize(f, (256, 256), interpolation=cv2.INTER_AREA) for f in faces])
    sheet = contact_sheet([faces, half, faces], ["a", "b", "c"], tile=128)
    eyes_h, mouth_h = (round(128 * (b - t) / (r - le)) for le, t, r, b in ZOOM_BOXES_512.values())
    assert sheet.shape == (24 + 2 * (128 + eyes_h + mouth_h + 2 * ZOOM_GAP), 3 * 128, 3)
    # the eyes' strip under the first face's tile is that box of the face, at twice the tile's scale
    left, top, right, bottom = ZOOM_BOXES_512["eyes"]
    want = cv2.resize(faces[0][top:bottom, left:right], (128, eyes_h), interpolation=cv2.INTER_AREA)
    top = 24 + 128 + ZOOM_GAP
    assert np.abs(sheet[top:top + eyes_h, :128] - want).max() < 1e-5
    assert contact_sheet([faces], ["a"], tile=128, zoom=False).shape == (24 + 2 * 128, 128, 3)
    with pytest.raises(UsageError, match="one label per column"):
        contact_sheet([faces, faces], ["a"])


def _textured(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.random((32, 32, 3)).astype(np.float32)
    return (np.clip(cv2.resize(small, (512, 512), interpolation=cv2.INTER_CUBIC), 0, 1) * 255).astype(np.uint8)


def test_crops_of_one_photo_are_held_out_together_and_others_split_as_before():
    from facefix.evaluate.run import holdout_split
    from facefix.quality.same_photo import photo_groups

    faces = [_textured(s) for s in range(4)]
    partial = faces[0].copy()
    partial[:, 300:] = partial[:, 299 - np.arange(212)]  # cut at the photo's edge, mirrored (as alignment pads)
    crops = np.stack([*faces, partial])
    assert photo_groups(crops) == [[0, 4], [1], [2], [3]]
    for seed in range(20):
        test, train = holdout_split(crops, 2, seed)
        assert (0 in test) == (4 in test) and sorted(test + train) == list(range(5)) and train
    # with no shared photos, the seeded choice of references is unchanged
    distinct = np.stack(faces)
    for seed in range(5):
        order = np.random.default_rng(seed).permutation(4)
        assert holdout_split(distinct, 2, seed) == (sorted(order[:2]), sorted(order[2:]))
