"""Align faces to the 512x512 five-point template, and back.

The similarity transform is estimated robustly (LMEDS) from the five
landmarks, as the field does. Unlike the common helper, nothing here keeps
state between photos and nothing is mutated in place: an :class:`Alignment`
is a frozen value holding both the forward and the inverse affine.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facefix.errors import FaceError

#: Side of the aligned face crop every restorer takes and every profile stores.
CROP_SIZE = 512

#: FFHQ-style five-point template on a 512x512 crop (left eye, right eye, nose,
#: left and right mouth corners, as seen in the image).
TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.19366],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float32,
)


@dataclass(frozen=True, eq=False)
class Alignment:
    """The similarity transform between a photo and one aligned face crop.

    Attributes:
        matrix: 2x3 affine mapping photo coordinates to crop coordinates.
        inverse: 2x3 affine mapping crop coordinates back to the photo.
        size: side of the square crop in pixels.
    """

    matrix: np.ndarray
    inverse: np.ndarray
    size: int

    def __post_init__(self) -> None:
        for arr in (self.matrix, self.inverse):
            arr.setflags(write=False)

    @property
    def scale(self) -> float:
        """Crop pixels per photo pixel (>1 means the face was enlarged)."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))

    def scaled(self, factor: float) -> Alignment:
        """The same alignment for the photo resized by ``factor`` (for --upscale)."""
        m = self.matrix.astype(np.float64).copy()
        m[:, :2] /= factor
        return Alignment.from_matrix(m, self.size)

    @classmethod
    def from_matrix(cls, matrix: np.ndarray, size: int) -> Alignment:
        m = np.asarray(matrix, dtype=np.float64).reshape(2, 3).copy()
        inv = cv2.invertAffineTransform(m)
        return cls(matrix=m, inverse=inv, size=size)


def estimate_alignment(landmarks: np.ndarray, size: int = 512) -> Alignment:
    """Estimate the photo→crop similarity transform for five landmarks.

    Args:
        landmarks: (5, 2) points in :data:`facefix.faces.types.LANDMARK_NAMES` order.
        size: side of the output crop; the template is scaled from 512.

    Returns:
        The frozen :class:`Alignment`.
    """
    src = np.asarray(landmarks, dtype=np.float32).reshape(5, 2)
    dst = TEMPLATE_512 * (size / 512.0)
    matrix, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    if matrix is None or not np.all(np.isfinite(matrix)):
        raise FaceError(
            "could not align a face: its landmarks are degenerate "
            f"({np.round(src, 1).tolist()}); the detection is probably not a face"
        )
    return Alignment.from_matrix(matrix, size)


def warp_face(image: np.ndarray, alignment: Alignment, *, border: str = "reflect") -> np.ndarray:
    """Cut the aligned face out of ``image`` (any dtype, HxWxC or HxW).

    Args:
        image: the photo.
        alignment: from :func:`estimate_alignment`.
        border: how to fill parts of the crop that fall outside the photo:
            "reflect" (what restorers expect) or "constant" (black).
    """
    mode = cv2.BORDER_REFLECT_101 if border == "reflect" else cv2.BORDER_CONSTANT
    crop = cv2.warpAffine(
        image,
        alignment.matrix,
        (alignment.size, alignment.size),
        flags=cv2.INTER_CUBIC,
        borderMode=mode,
    )
    if image.ndim == 3 and crop.ndim == 2:
        crop = crop[:, :, None]
    return crop
