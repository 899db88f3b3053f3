"""``facefix review``: a static HTML page in a run's output folder to flip through before/after.

:func:`write_review` (in :mod:`facefix.review.page`) gathers what the runs
recorded (:mod:`facefix.review.data`), makes the images once
(:mod:`facefix.review.thumbs`) and writes ``OUT/facefix-review.html``, which
works from the file system with no server and no network. See docs/review.md.
"""

from __future__ import annotations

from facefix.review.data import MANIFEST_NAME, ReviewFace, ReviewPhoto, gather
from facefix.review.page import PAGE_NAME, ReviewResult, write_review

__all__ = ["MANIFEST_NAME", "PAGE_NAME", "ReviewFace", "ReviewPhoto", "ReviewResult", "gather", "write_review"]
