"""Cameras for the animation video: fixed, following the character, or orbiting it.

* ``fixed``: one camera on +Z framing the whole trajectory (the character may be small);
* ``follow``: a camera on +Z of the character that moves with it (its centre and framing smoothed over
  about half a second), so the character fills most of the frame height in every frame;
* ``orbit``: ``follow`` while the camera turns once around the character over the clip.

All cameras are perspective, square (``size`` pixels), +Y up, world frame metres.
"""

from __future__ import annotations

import numpy as np
import torch

from foundation.camera import Camera
from foundation.render import front_camera

__all__ = ["CAMERAS", "sequence_cameras"]

CAMERAS = ("fixed", "follow", "orbit")


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along axis 0 (edges padded with the end values)."""
    if sigma <= 0 or len(x) < 2:
        return x
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(x, sigma, axis=0, mode="nearest")


def _running_max(x: np.ndarray, half: int) -> np.ndarray:
    """max over [t - half, t + half] along axis 0."""
    from scipy.ndimage import maximum_filter1d

    return maximum_filter1d(x, 2 * half + 1, axis=0, mode="nearest") if half > 0 else x


def sequence_cameras(verts: torch.Tensor, mode: str = "follow", size: int = 512, fps: float = 30.0,
                     fov_deg: float = 30.0, fill: float = 0.8, smooth_s: float = 0.5) -> list[Camera]:
    """One camera per frame of a posed sequence.

    Args:
        verts: (T, V, 3) posed vertices, world metres (+Y up; the character faces +Z at zero orientation).
        mode: one of :data:`CAMERAS`.  size: image side (px).  fps: frame rate (sets the smoothing).
        fov_deg: vertical field of view.  fill: the character's extent over the image side, at most
            (follow / orbit; the framing never cuts it: a running maximum of the extent over the
            smoothing window is framed).  smooth_s: smoothing window (seconds).
    Returns:
        T cameras (the same object T times for ``fixed``).
    """
    if mode not in CAMERAS:
        raise ValueError(f"animation.camera must be one of {list(CAMERAS)}, got {mode!r}")
    step = max(1, verts.shape[1] // 5000)
    pts = verts[:, ::step].detach().cpu().numpy().astype(np.float64)  # (T, v, 3)
    T = pts.shape[0]
    if mode == "fixed":
        cam = front_camera(pts.reshape(-1, 3), size, fov_deg=fov_deg)
        return [cam] * T
    lo, hi = pts.min(1), pts.max(1)  # (T, 3)
    centre = 0.5 * (lo + hi)
    if mode == "orbit":  # any horizontal direction can face the camera
        horiz = np.linalg.norm(pts[:, :, [0, 2]] - centre[:, None, [0, 2]], axis=-1).max(1) * 2
        depth = 0.5 * horiz
    else:
        horiz = hi[:, 0] - lo[:, 0]
        depth = 0.5 * (hi[:, 2] - lo[:, 2])
    raw = np.maximum(hi[:, 1] - lo[:, 1], horiz)  # square image: the larger of height and width
    half = max(1, int(round(smooth_s * fps / 2)))
    sigma = smooth_s * fps / 4
    smooth_centre = _smooth(centre, sigma)
    drift = np.abs(smooth_centre - centre)[:, :2].max(1)  # the smoothed centre lags the character
    raw = raw + 2 * drift
    extent = np.maximum(_smooth(_running_max(raw, half), sigma), raw)  # smooth, and never cut a frame
    centre = smooth_centre
    depth = _smooth(_running_max(depth, half), sigma)
    tan = np.tan(np.radians(fov_deg) / 2)
    dist = 0.5 * extent / fill / tan + depth  # the nearest body point stays inside the framing
    cams = []
    for t in range(T):
        a = 2 * np.pi * t / max(T, 1) if mode == "orbit" else 0.0
        direction = np.array([np.sin(a), 0.0, np.cos(a)])
        cams.append(Camera.look_at(centre[t] + dist[t] * direction, centre[t], width=size, height=size,
                                   fov_deg=fov_deg))
    return cams
