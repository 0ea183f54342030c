"""Overlay frames: the fitted body mesh (shaded, ray cast) over the video, plus landmarks.

Colours: the body is a translucent light-blue Lambert shading (faceted, headlight; the project
renderer :mod:`foundation.render`); detected mediapipe landmarks are drawn by
:func:`draw_landmarks` (person's left orange, right blue); the fitted model's keypoints are white
dots with a dark rim, so detection-vs-fit misses show.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from foundation.camera import Camera
from foundation.render import HEADLIGHT, render_hits, shade_hits
from tracking.detect import FACE_KEYPOINT_NAMES, MP_POSE_NAMES, Detections

__all__ = ["OverlayConfig", "overlay_frame", "overlay_size", "render_body", "draw_landmarks"]

log = logging.getLogger(__name__)

BODY_COLOR = np.array([150, 200, 255], np.float32)  # RGB
BODY_AMBIENT = 0.25  # shade of body faces seen edge-on

# skeleton edges and colours of the landmark drawing
POSE_EDGES = (
    (11, 12), (11, 23), (12, 24), (23, 24), (11, 13), (13, 15), (12, 14), (14, 16),
    (23, 25), (25, 27), (27, 29), (29, 31), (27, 31), (24, 26), (26, 28), (28, 30), (30, 32), (28, 32),
    (15, 17), (15, 19), (15, 21), (17, 19), (16, 18), (16, 20), (16, 22), (18, 20),
    (0, 2), (0, 5), (2, 7), (5, 8), (9, 10),
)  # fmt: skip
HAND_EDGES = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11),
    (11, 12), (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (0, 17), (17, 18), (18, 19), (19, 20),
)  # fmt: skip
LEFT_COLOR = (255, 110, 30)  # RGB orange: the person's left
RIGHT_COLOR = (40, 150, 255)  # RGB blue: the person's right
CENTER_COLOR = (235, 235, 235)


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
    """Shade one body mesh with a headlight (two-sided, per-face normals).

    Args:
        verts: (V, 3) world vertices (metres); faces: (F, 3) long.
        camera: the view (its width x height is the output size).

    Returns:
        shade: (H, W) float32 light intensity ``0.25 + 0.75 |n_z|`` (view-frame face normal), 0 off
        the body; mask: (H, W) bool.
    """
    hits = render_hits(verts, faces, camera)
    mask = hits.mask.reshape(camera.height, camera.width).cpu().numpy().astype(bool)
    shade = np.zeros(mask.shape, np.float32)
    if mask.any():
        lit = shade_hits(verts, faces, hits, light=HEADLIGHT, camera=camera, ambient=BODY_AMBIENT, two_sided=True,
                         smooth=False)
        shade[mask] = lit[:, 0].cpu().numpy()
    return shade, mask


def overlay_size(height: int, width: int, cfg: OverlayConfig) -> tuple[int, int]:
    """(h, w) of the overlay frames of an H x W clip: long side ``min(cfg.max_side, max(H, W))``."""
    s = min(1.0, cfg.max_side / max(height, width))
    return max(2, round(height * s)), max(2, round(width * s))


def overlay_frame(image: np.ndarray, verts: torch.Tensor, faces: torch.Tensor, camera: Camera,
                  cfg: OverlayConfig = OverlayConfig(), detections=None, t: int = 0,
                  joints2d: np.ndarray | None = None) -> np.ndarray:
    """Draw one frame's posed body (and landmarks) over it.

    Args:
        image: (H, W, 3) uint8 RGB frame of ``camera`` (full resolution).
        verts: (V, 3) posed body vertices, world frame, metres; faces: (F, 3) long.
        camera: the clip camera (H x W).
        detections: optional :class:`tracking.detect.Detections` of the clip; ``t``: this frame's index in it.
        joints2d: optional (K, 2) fitted keypoints of this frame in full-resolution pixels.

    Returns:
        (h, w, 3) uint8, the size :func:`overlay_size` gives.
    """
    H, W = image.shape[:2]
    h, w = overlay_size(H, W, cfg)
    img = image if (h, w) == (H, W) else cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    shade, mask = render_body(verts, faces, camera.resized(w, h))
    f = img.astype(np.float32)
    a = cfg.alpha * mask[..., None]
    f = f * (1 - a) + a * shade[..., None] * BODY_COLOR
    img = np.clip(f, 0, 255).astype(np.uint8)
    if cfg.landmarks and detections is not None:
        img = draw_landmarks(img, detections, t, boxes=False)
    if cfg.fitted_keypoints and joints2d is not None:
        r = max(2, round(min(h, w) / 160))
        for x, y in joints2d * np.array([w / W, h / H]):
            if np.isfinite(x) and np.isfinite(y):
                cv2.circle(img, (int(round(x)), int(round(y))), r, (20, 20, 20), -1, cv2.LINE_AA)
                cv2.circle(img, (int(round(x)), int(round(y))), max(1, r - 1), (255, 255, 255), -1, cv2.LINE_AA)
    return img


def draw_landmarks(
    image: np.ndarray, det: Detections, t: int, *, min_conf: float = 0.5, mask_alpha: float = 0.0, boxes: bool = True
) -> np.ndarray:
    """Draw frame ``t``'s detections on a copy of ``image``.

    The person's left side is orange, right side blue, centre line white; the person box
    green, the crop box yellow.

    Args:
        image: (H, W, 3) uint8 RGB (the frame ``det`` was computed on, or a resize of it).
        det: detections; keypoints are rescaled if ``image`` has another size.
        t: frame index into ``det``.
        min_conf: keypoints with lower confidence are not drawn.
        mask_alpha: tint the person mask in with this opacity (0: no mask).
        boxes: draw the person and crop boxes.

    Returns:
        (H, W, 3) uint8 RGB copy with the overlay.
    """
    img = np.array(image, dtype=np.uint8, copy=True)
    h, w = img.shape[:2]
    H, W = det.image_size
    sx, sy = w / W, h / H
    th = max(1, round(min(h, w) / 250))

    if mask_alpha > 0:
        m = det.masks[t]
        if m.shape != (h, w):
            m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
        tint = np.array([80, 255, 120], np.float32)
        a = (mask_alpha * m)[..., None]
        img = (img * (1 - a) + tint * a).astype(np.uint8)

    def pt(p):
        return int(round(p[0] * sx)), int(round(p[1] * sy))

    def side_color(name: str):
        return LEFT_COLOR if name.startswith("left") else RIGHT_COLOR if name.startswith("right") else CENTER_COLOR

    body = det.body_kp[t]
    for a, b in POSE_EDGES:
        if body[a, 2] >= min_conf and body[b, 2] >= min_conf:
            na, nb = MP_POSE_NAMES[a], MP_POSE_NAMES[b]
            color = side_color(na) if side_color(na) == side_color(nb) else CENTER_COLOR
            cv2.line(img, pt(body[a]), pt(body[b]), color, th, cv2.LINE_AA)
    for i, p in enumerate(body):
        if p[2] >= min_conf:
            cv2.circle(img, pt(p), th + 1, side_color(MP_POSE_NAMES[i]), -1, cv2.LINE_AA)
    for hand, color in ((det.lhand_kp[t], LEFT_COLOR), (det.rhand_kp[t], RIGHT_COLOR)):
        if hand[0, 2] <= 0:
            continue
        for a, b in HAND_EDGES:
            cv2.line(img, pt(hand[a]), pt(hand[b]), color, max(1, th // 2), cv2.LINE_AA)
        for p in hand:
            cv2.circle(img, pt(p), th, (255, 255, 255), -1, cv2.LINE_AA)
    for name, p in zip(FACE_KEYPOINT_NAMES, det.face_kp[t]):
        if p[2] > 0:
            cv2.circle(img, pt(p), th, side_color(name), -1, cv2.LINE_AA)
    if boxes:
        if det.valid[t]:
            x0, y0, x1, y1 = det.bboxes[t]
            cv2.rectangle(img, pt((x0, y0)), pt((x1, y1)), (60, 220, 60), th)
        x0, y0, x1, y1 = det.crops[t]
        cv2.rectangle(img, pt((x0, y0)), pt((x1, y1)), (240, 220, 40), th)
    return img
