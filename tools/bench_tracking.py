"""Benchmark the tracking stage on a synthetic clip with ground-truth SMPL-X parameters.

    python tools/bench_tracking.py [--frames 60] [--height 640] [--width 480] [--out outputs/bench_tracking]

The clip: the Anny body driven by a procedural SMPL-X motion (walking in place, arm swings,
elbow/knee flexion, a slow turn), ray cast with the project's ``raycast`` and Lambert shaded
over a textured background, seen by a perspective camera whose field of view (45 deg) differs
from the fitter's default guess (55 deg), so the focal estimate is exercised too. (The clothed
generator in ``avatar/synthetic`` can replace it via ``--clip DIR`` once it writes
``clip.mp4`` + ``gt_params.npz`` + ``gt_masks.npz`` + ``camera.json``.)

Prints: PA-MPJPE (mm, Procrustes-aligned 22 body joints vs ground truth), mask IoU (the fitted
body's silhouette in the fitted camera vs the ground-truth body mask), the mediapipe mask's
IoU for reference, and speed in frames/s (whole stage: decode + detection + fit + overlay;
and each step).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar.body import JOINT_INDEX as JI  # noqa: E402
from avatar.body import SMPLXParams, build_body_model  # noqa: E402
from avatar.geometry.camera import Camera  # noqa: E402
from tracking.fit import pa_mpjpe  # noqa: E402
from tracking.overlay import render_body  # noqa: E402
from tracking.stage import TrackingConfig, body_vertices, run_tracking  # noqa: E402
from tracking.video import write_video  # noqa: E402

SKIN = np.array([225, 185, 160], np.float32)


def motion(T: int, fps: float = 30.0) -> SMPLXParams:
    """Procedural clip: walking in place with arm swings and a slow turn (SMPL-X world)."""
    t = torch.arange(T, dtype=torch.float32) / fps
    w = 2 * math.pi * 0.8  # gait frequency (Hz -> rad/s)
    p = SMPLXParams.zeros(T)
    bp = torch.zeros(T, 21, 3)
    sw = torch.sin(w * t)
    bp[:, JI["left_hip"] - 1, 0] = -0.45 * sw
    bp[:, JI["right_hip"] - 1, 0] = 0.45 * sw
    bp[:, JI["left_knee"] - 1, 0] = 0.35 + 0.35 * torch.sin(w * t + 1.2)
    bp[:, JI["right_knee"] - 1, 0] = 0.35 + 0.35 * torch.sin(w * t + 1.2 + math.pi)
    bp[:, JI["left_shoulder"] - 1, 2] = -1.15
    bp[:, JI["right_shoulder"] - 1, 2] = 1.15
    bp[:, JI["left_shoulder"] - 1, 1] = 0.45 * sw
    bp[:, JI["right_shoulder"] - 1, 1] = 0.45 * sw
    bp[:, JI["left_elbow"] - 1, 1] = -0.5 - 0.3 * torch.sin(w * t + 0.5)
    bp[:, JI["right_elbow"] - 1, 1] = 0.5 + 0.3 * torch.sin(w * t + 0.5 + math.pi)
    bp[:, JI["spine2"] - 1, 1] = 0.12 * sw
    bp[:, JI["head"] - 1, 1] = 0.25 * torch.sin(0.5 * w * t)
    p.body_pose = bp
    p.global_orient[:, 1] = 0.9 * torch.sin(2 * math.pi * 0.12 * t)
    p.transl[:, 0] = 0.25 * torch.sin(2 * math.pi * 0.1 * t)
    p.transl[:, 1] = 0.03 * torch.sin(2 * w * t)
    p.transl[:, 2] = -0.3 * torch.sin(2 * math.pi * 0.07 * t)
    p.betas[:, 0], p.betas[:, 1] = 0.6, -0.4
    return p


def background(H: int, W: int, seed: int = 0) -> np.ndarray:
    """A smooth colour gradient with soft blobs (so the person is not on a flat colour)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W] / max(H, W)
    img = np.zeros((H, W, 3), np.float32)
    for c in range(3):
        img[..., c] = 90 + 60 * (rng.uniform() * x + rng.uniform() * y)
    for _ in range(6):
        cx, cy, r = rng.uniform(0, W / max(H, W)), rng.uniform(0, H / max(H, W)), rng.uniform(0.05, 0.2)
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / r ** 2)
        img += blob[..., None] * rng.uniform(-50, 50, 3)
    return np.clip(img, 0, 255)


def make_clip(body, directory: Path, T: int, H: int, W: int, fps: float = 30.0):
    """Render the fallback clip; returns (video path, GT params, GT camera, GT masks (T, H, W) bool)."""
    cam = Camera.look_at((0.0, 0.1, 3.2), (0.0, -0.05, 0.0), width=W, height=H, fov_deg=45.0)
    if cam.project(torch.tensor([[0.0, 1.0, 0.0]]))[0][0, 1] > H / 2:  # guard against an upside-down look_at
        R = np.diag([1.0, -1.0, -1.0])
        c = np.array([0.0, 0.1, 3.2])
        f = 0.5 * max(H, W) / math.tan(math.radians(45.0) / 2)
        cam = Camera(W, H, f, f, W / 2, H / 2, tuple(map(tuple, R.tolist())), tuple((-R @ c).tolist()))
    params = motion(T, fps)
    verts = body_vertices(body, params)
    bg = background(H, W)
    frames, masks = [], []
    for t in range(T):
        shade, mask = render_body(verts[t], body.faces, cam)
        img = bg.copy()
        img[mask] = shade[mask, None] * SKIN
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
        masks.append(mask)
    path = write_video(directory / "clip.mp4", np.stack(frames), fps=fps, crf=18)
    return path, params, cam, np.stack(masks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--height", type=int, default=640)
    ap.add_argument("--width", type=int, default=480)
    ap.add_argument("--out", type=Path, default=None, help="keep the stage outputs (overlay.mp4) here")
    ap.add_argument("--no-overlay", action="store_true", help="skip overlay.mp4 (time the tracking alone)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)

    body = build_body_model()
    work = Path(tempfile.mkdtemp(prefix="bench_tracking_"))
    out = args.out or work / "tracking"
    t0 = time.perf_counter()
    video, gt, gt_cam, gt_masks = make_clip(body, work, args.frames, args.height, args.width)
    print(f"clip: {args.frames} frames {args.width}x{args.height}, rendered in {time.perf_counter() - t0:.1f} s")

    cfg = TrackingConfig.from_dict({"fit": {"progress": False}, "write_overlay": not args.no_overlay,
                                    "log_frames": 0})
    timings = {}
    logging.getLogger("tracking.stage").setLevel(logging.INFO)

    class _Capture(logging.Handler):
        def emit(self, record):
            timings["msg"] = record.getMessage()

    logging.getLogger("tracking.stage").addHandler(_Capture())
    t0 = time.perf_counter()
    tracks = run_tracking(video, cfg, body, out, None)
    total = time.perf_counter() - t0

    with torch.no_grad():
        j_fit = body(tracks.params).joints[:, :22]
        j_gt = body(gt).joints[:, :22]
    pa = pa_mpjpe(j_fit, j_gt) * 1000
    verts = body_vertices(body, tracks.params)
    ious, mp_ious = [], []
    for t in range(len(tracks)):
        _, m = render_body(verts[t], body.faces, tracks.camera)
        g = gt_masks[t]
        ious.append((m & g).sum() / max((m | g).sum(), 1))
        mp = tracks.masks[t] > 0.5
        mp_ious.append((mp & g).sum() / max((mp | g).sum(), 1))
    T = len(tracks)
    res = {
        "frames": T, "size": [args.width, args.height],
        "pa_mpjpe_mm": round(float(pa.mean()), 1), "pa_mpjpe_mm_median": round(float(pa.median()), 1),
        "mask_iou": round(float(np.mean(ious)), 3), "mediapipe_mask_iou": round(float(np.mean(mp_ious)), 3),
        "valid_fraction": float(tracks.valid.mean()),
        "fps_total": round(T / total, 1), "seconds_total": round(total, 2),
        "focal_fit_vs_gt": [round(tracks.camera.fx, 1), round(gt_cam.fx, 1)],
        "log": timings.get("msg", ""),
    }
    print(json.dumps(res, indent=2))
    if args.out:
        print(f"overlay: {out / 'overlay.mp4'}")


if __name__ == "__main__":
    main()
