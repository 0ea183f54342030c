"""Pictures of synthetic samples for people to look at (docs, sanity checks)."""

from __future__ import annotations

import numpy as np

from foundation.render import normals_to_rgb  # the one normals -> RGB map (re-exported)

__all__ = ["normals_to_rgb", "sample_row", "sample_grid", "GRID_COLUMNS"]

GRID_COLUMNS = ("RGB", "mask", "clothed front", "clothed back", "body front", "body back")


def sample_row(s, size: int | None = None) -> np.ndarray:
    """One sample as a row of tiles: RGB | mask | clothed normals front, back | body normals front, back."""
    mask = np.repeat(s.mask[..., None].astype(np.uint8) * 255, 3, -1)
    tiles = [s.image, mask] + [normals_to_rgb(n) for n in
                               (s.normal_front, s.normal_back, s.body_normal_front, s.body_normal_back)]
    if size is not None and size != s.image.shape[0]:
        import cv2

        tiles = [cv2.resize(t, (size, size), interpolation=cv2.INTER_AREA) for t in tiles]
    return np.concatenate(tiles, 1)


def sample_grid(samples, size: int = 256, gap: int = 4) -> np.ndarray:
    """Rows of :func:`sample_row` (tiles resized to ``size``) separated by ``gap`` white pixels: (H, W, 3) uint8."""
    rows = []
    for i, s in enumerate(samples):
        if i:
            rows.append(np.full((gap, size * len(GRID_COLUMNS), 3), 255, np.uint8))
        rows.append(sample_row(s, size))
    return np.concatenate(rows, 0)
