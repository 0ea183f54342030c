"""Overlay frames: the fitted body mesh (shaded, ray cast) over the video, plus landmarks.

Colours: the body is a translucent light-blue Lambert shading (headlight); detected mediapipe
landmarks follow :func:`tracking.detect.draw_landmarks` (person's left orange, right blue);
the fitted model's keypoints are white dots with a dark rim, so detection-vs-fit misses show.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from foundation.camera import Camera

log = logging.getLogger(__name__)

BODY_COLOR = np.array([150, 200, 255], np.float32)  # RGB


@dataclass(frozen=True)
class OverlayConfig:
    """Overlay video options.

    Attributes:
        max_side: long side of the overlay frames in pixels (never upsampled).
        alpha: opacity of the body mesh in [0, 1].
        landmarks: draw the detected landmarks.
        fitted_keypoints: draw the fitted model's keypoints.
        crf: x264 quality of ``overlay.mp4`` (lower is better).
    """

    max_side: int = 512
    alpha: float = 0.6
    landmarks: bool = True
    fitted_keypoints: bool = True
    crf: int = 23

    def __post_init__(self):
        if self.max_side < 16:
            raise ValueError(f"OverlayConfig.max_side must be >= 16, got {self.max_side}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"OverlayConfig.alpha must be in [0, 1], got {self.alpha}")


def render_body(verts: torch.Tensor, faces: torch.Tensor, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Shade one body mesh with a headlight.

    Args:
        verts: (V, 3) world vertices (metres); faces: (F, 3) long.
        camera: the view (its width x height is the output size).

    Returns:
        shade: (H, W) float32 Lambert term in [0, 1] (0 off the body); mask: (H, W) bool.
    """
    from foundation.geometry.normals import face_normals
    from foundation.geometry.raycast import raycast

    hits = raycast(verts, faces, camera)
    mask = hits.mask.reshape(camera.height, camera.width).cpu().numpy().astype(bool)
    shade = np.zeros(mask.shape, np.float32)
    if mask.any():
        n = face_normals(verts, faces)  # (F, 3) world
        n_view = n @ camera.view_rotation(n.device, n.dtype).T  # +z towards the viewer
        fidx = hits.face_idx.reshape(camera.height, camera.width)[torch.from_numpy(mask)]
        lam = n_view[fidx.long(), 2].abs().cpu().numpy()
        shade[mask] = 0.25 + 0.75 * lam
    return shade, mask


def overlay_frames(images: np.ndarray, verts: torch.Tensor, faces: torch.Tensor, camera: Camera,
                   cfg: OverlayConfig = OverlayConfig(), detections=None, joints2d: np.ndarray | None = None,
                   progress: bool = True) -> np.ndarray:
    """Draw the posed body over every frame.

    Args:
        images: (T, H, W, 3) uint8 RGB frames of ``camera`` (full resolution).
        verts: (T, V, 3) posed body vertices, world frame, metres.
        faces: (F, 3) long.
        camera: the clip camera (H x W).
        cfg: overlay options.
        detections: optional :class:`tracking.detect.Detections` of the frames (landmarks).
        joints2d: optional (T, K, 2) fitted keypoints in full-resolution pixels.

    Returns:
        (T, h, w, 3) uint8 overlay frames, long side ``min(cfg.max_side, max(H, W))``.
    """
    T, H, W = images.shape[:3]
    if verts.shape[0] != T:
        raise ValueError(f"overlay_frames: {T} images but {verts.shape[0]} meshes")
    s = min(1.0, cfg.max_side / max(H, W))
    h, w = max(2, round(H * s)), max(2, round(W * s))
    cam = camera.resized(w, h)
    out = np.empty((T, h, w, 3), np.uint8)
    for t in tqdm(range(T), desc="overlay", unit="frame", leave=False, disable=not progress):
        img = images[t] if (h, w) == (H, W) else cv2.resize(images[t], (w, h), interpolation=cv2.INTER_AREA)
        shade, mask = render_body(verts[t], faces, cam)
        f = img.astype(np.float32)
        a = cfg.alpha * mask[..., None]
        f = f * (1 - a) + a * shade[..., None] * BODY_COLOR
        img = np.clip(f, 0, 255).astype(np.uint8)
        if cfg.landmarks and detections is not None:
            from tracking.detect import draw_landmarks

            img = draw_landmarks(img, detections, t, boxes=False)
        if cfg.fitted_keypoints and joints2d is not None:
            r = max(2, round(min(h, w) / 160))
            for x, y in joints2d[t] * np.array([w / W, h / H]):
                if np.isfinite(x) and np.isfinite(y):
                    cv2.circle(img, (int(round(x)), int(round(y))), r, (20, 20, 20), -1, cv2.LINE_AA)
                    cv2.circle(img, (int(round(x)), int(round(y))), max(1, r - 1), (255, 255, 255), -1, cv2.LINE_AA)
        out[t] = img
    return out
