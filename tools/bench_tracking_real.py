"""Score tracking runs on a real clip with a frozen fitted avatar as the yardstick (no ground truth needed).

    python tools/bench_tracking_real.py AVATAR_RUN TRACKING_RUN [TRACKING_RUN ...] [--max-side 256]

A real clip has no ground-truth poses, but a finished run's avatar fitted to the video (:mod:`avatar.video_fit`)
has the person's shape. Posed by another tracking run's poses over *all* its frames (its betas replaced by the
avatar's, no pose-dependent offsets) and rendered with that run's own camera, its silhouette is compared with the
run's person masks: a better tracker gives a higher mask IoU. A tracking change (``python -m avatar.run
video=CLIP "stages=[tracking]" run_dir=... tracking.fit.X=...``) is then scored in seconds, without recon or a fit.
The naked body's IoU (each run's own betas) is printed beside it: clothes and hair keep it lower.

Prints a line per tracking run, then one JSON object: ``{"avatar_run": ..., "runs": {RUN: {"avatar_iou": ...,
"body_iou": ..., "frames": N}}}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar.artifact import Avatar  # noqa: E402
from foundation.body.model import BodyModelConfig, build_body_model  # noqa: E402
from foundation.config import build  # noqa: E402
from foundation.metrics import mask_iou  # noqa: E402
from foundation.render import render_mesh  # noqa: E402
from tracking.artifact import Tracks  # noqa: E402


def score(avatar: Avatar, body, tracks: Tracks, max_side: int) -> dict:
    """Mean mask IoU over the frames with a person: the frozen avatar and the naked body in the tracked poses."""
    cam = tracks.camera
    s = min(1.0, max_side / max(cam.width, cam.height))
    cam = cam.resized(max(2, round(cam.width * s)), max(2, round(cam.height * s)))
    with torch.no_grad():
        av = avatar.pose(avatar.params_for(tracks.params), body, correct=False)
        bv = body(tracks.params).vertices
    a, b = [], []
    for t in range(tracks.params.batch_size):
        mask = cv2.resize(np.asarray(tracks.masks[t], np.float32), (cam.width, cam.height),
                          interpolation=cv2.INTER_AREA) > 0.5
        if mask.sum() < 16:
            continue
        a.append(mask_iou(render_mesh(av[t], avatar.mesh.faces, cam, shading="flat", background=(0, 0, 0))[1], mask))
        b.append(mask_iou(render_mesh(bv[t], body.faces, cam, shading="flat", background=(0, 0, 0))[1], mask))
    if not a:
        return {"avatar_iou": None, "body_iou": None, "frames": 0}
    return {"avatar_iou": round(float(np.mean(a)), 4), "body_iou": round(float(np.mean(b)), 4), "frames": len(a)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("avatar_run", type=Path, help="a finished run whose avatar was fitted to the video")
    ap.add_argument("tracking_runs", type=Path, nargs="+", help="run directories with a tracking stage (same clip)")
    ap.add_argument("--max-side", type=int, default=256, help="render size, long side, pixels")
    args = ap.parse_args()
    if args.max_side < 2:
        ap.error(f"--max-side must be >= 2, got {args.max_side}")
    logging.basicConfig(level=logging.WARNING)
    avatar = Avatar.load(args.avatar_run / "avatar")
    if avatar.atlas is None:
        sys.exit(f"{args.avatar_run}: the avatar was not fitted to the video (avatar.video_fit.enabled=false)")
    from omegaconf import OmegaConf

    cfg_path = args.avatar_run / "config.yaml"
    run_cfg = OmegaConf.to_container(OmegaConf.load(cfg_path)) if cfg_path.exists() else {}
    body = build_body_model(build(BodyModelConfig, run_cfg.get("body") or {}))
    runs = {}
    for run in args.tracking_runs:
        r = score(avatar, body, Tracks.load(run / "tracking"), args.max_side)
        runs[str(run)] = r
        print(f"{run}: avatar IoU {r['avatar_iou']}, naked body IoU {r['body_iou']} over {r['frames']} frames")
    print(json.dumps({"avatar_run": str(args.avatar_run), "runs": runs}))


if __name__ == "__main__":
    main()
