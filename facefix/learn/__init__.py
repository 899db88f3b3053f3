"""``facefix learn DIR``: train the generic restorer on a photo library's own sharpest faces (no downloaded weights)."""
