"""Which aligned face crops come from one photo: held-out faces (eval) and training pairs (the learned
fusion) must never pair a face with a crop of its own photo under another name."""

from __future__ import annotations

import cv2
import numpy as np

#: Two references are parts of one photo when their aligned crops (at 128 px) agree within
#: this (of 1.0) on at least :data:`SAME_PHOTO_SHARE` of the pixels. Different photos of
#: one person agree on 0-3 % (Obama's five), crops of one photo on 11-49 %, re-lit copies
#: of one photo (the test sets) on up to 10 %.
SAME_PHOTO_TOLERANCE = 0.03
SAME_PHOTO_SHARE = 0.15


def photo_groups(crops: np.ndarray) -> list[list[int]]:
    """References grouped by the photo they come from (crops of one photo, near-duplicates).

    Held-out faces must not be in training under another name: a face cropped out
    of a photo that is also a reference would be scored on what the model saw.
    """
    small = np.stack([cv2.resize(c, (128, 128), interpolation=cv2.INTER_AREA) for c in crops]).astype(np.float32)
    small /= 255.0
    parent = list(range(len(crops)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(crops)):
        for j in range(i + 1, len(crops)):
            agree = (np.abs(small[i] - small[j]).max(axis=-1) < SAME_PHOTO_TOLERANCE).mean()
            if agree >= SAME_PHOTO_SHARE:
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(crops)):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values())
