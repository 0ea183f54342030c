"""Benchmark the tracking stage on the synthetic benchmark video (ground truth from the generator).

    python tools/bench_tracking.py [--root data/benchmark] [--clip DIR] [--runs 3] [--out DIR] [--no-overlay]

The clip: ``load_or_make_benchmark(root).video`` (``avatar/synthetic``: a clothed Anny subject walking
in place while turning -35..+35 degrees, then raising the arms; 384 x 512, 30 frames, fixed
perspective camera with a 45 degree vertical field of view, which the tracker does not know), or
any folder written by ``make_synthetic_video`` (``--clip DIR``: ``clip.mp4`` + ``gt.npz`` + ``gt.json``).

Prints (JSON):

* ``pa_mpjpe_mm``: Procrustes-aligned (rotation, translation, scale) mean error of the 22 SMPL-X
  body joints, fitted vs ground truth, mean and median over frames.
* ``mpjpe_cam_mm``: camera-frame joint error after aligning the pelvis (each body in its own
  camera: the fitted one in the fitted camera, the ground truth in the generator's), so global
  orientation errors relative to the viewer count, depth scale does not.
* ``mask_iou_body``: silhouette of the fitted (naked) body in the fitted camera vs the silhouette of
  the ground-truth body parameters (naked Anny body, no clothes) in the generator's camera;
  ``mask_iou_clothed``: the same fitted silhouette vs the generator's masks, which are of the
  CLOTHED mesh (loose clothes and hair make them larger than any body: expect lower values);
  ``mediapipe_mask_iou_clothed``: the detector's person mask vs the clothed mask, for reference.
* ``focal_fit_vs_gt``: fitted vs true focal length, pixels.
* speed, frames/s, over ``--runs`` runs of the whole stage (best and median): ``fps_tracking``
  (read + detect + fit: what the pipeline needs per clip, without the one-time ~2 s mediapipe import),
  ``fps_total`` (wall time of ``run_tracking``: + import on the first run + overlay video), and the
  per-step seconds (setup (open + import) / read_detect (decode and detection, overlapped; graph
  construction included) / fit / overlay)
  of the best run. The machine load (``uptime``) is printed alongside, since other processes share
  the CPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from foundation.body import build_body_model  # noqa: E402
from tracking.fit import pa_mpjpe  # noqa: E402
from tracking.overlay import render_body  # noqa: E402
from foundation.config import build  # noqa: E402
from foundation.metrics import mask_iou  # noqa: E402
from tracking.stage import TrackingConfig, body_vertices, run_tracking  # noqa: E402


class _Recorder:
    """Logger that keeps the stage's scalars (per-step seconds)."""

    def __init__(self):
        self.scalars: dict[str, float] = {}

    def log_scalars(self, d, step=None):
        self.scalars.update(d)

    def log_image(self, name, image, step=None):
        pass

    def log_mesh(self, name, verts, faces, step=None):
        pass


def evaluate(body, tracks, video) -> dict:
    """Accuracy of ``tracks`` against the :class:`SyntheticVideo` ground truth ``video``."""
    gt = video.params
    T = len(tracks)
    if gt.batch_size != T:
        raise ValueError(f"bench_tracking: {T} tracked frames but {gt.batch_size} ground-truth frames")
    with torch.no_grad():
        j_fit = body(tracks.params).joints[:, :22]
        j_gt = body(gt).joints[:, :22]
    pa = pa_mpjpe(j_fit, j_gt) * 1000
    c_fit = tracks.camera.to_camera(j_fit)
    c_gt = video.camera.to_camera(j_gt)
    mp = ((c_fit - c_fit[:, :1]) - (c_gt - c_gt[:, :1])).norm(dim=-1).mean(-1) * 1000
    v_fit = body_vertices(body, tracks.params)
    v_gt = body_vertices(body, gt)
    iou_body, iou_cloth, iou_mp = [], [], []
    for t in range(T):
        _, m = render_body(v_fit[t], body.faces, tracks.camera)
        _, g = render_body(v_gt[t], body.faces, video.camera)
        iou_body.append(mask_iou(m, g))
        iou_cloth.append(mask_iou(m, video.masks[t]))
        iou_mp.append(mask_iou(tracks.masks[t] > 0.5, video.masks[t]))
    return {
        "pa_mpjpe_mm": round(float(pa.mean()), 1), "pa_mpjpe_mm_median": round(float(pa.median()), 1),
        "mpjpe_cam_mm": round(float(mp.mean()), 1),
        "mask_iou_body": round(float(np.mean(iou_body)), 3), "mask_iou_clothed": round(float(np.mean(iou_cloth)), 3),
        "mediapipe_mask_iou_clothed": round(float(np.mean(iou_mp)), 3),
        "valid_fraction": round(float(tracks.valid.mean()), 3),
        "focal_fit_vs_gt": [round(tracks.camera.fx, 1), round(video.camera.fx, 1)],
        "per_frame_pa_mpjpe_mm": [round(float(x), 1) for x in pa],
        "per_frame_iou_body": [round(x, 3) for x in iou_body],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path("data/benchmark"), help="benchmark set (made on first use)")
    ap.add_argument("--clip", type=Path, default=None, help="a make_synthetic_video folder instead of the set's video")
    ap.add_argument("--runs", type=int, default=3, help="timed runs of the stage (best and median are printed)")
    ap.add_argument("--out", type=Path, default=None, help="keep the last run's stage outputs (overlay.mp4) here")
    ap.add_argument("--no-overlay", action="store_true", help="skip overlay.mp4")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="tracking config overrides, e.g. fit.iters_pose=60 detect.use_holistic=false")
    ap.add_argument("--per-frame", action="store_true", help="also print per-frame errors")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)

    from synthetic.benchmark import load_or_make_benchmark
    from synthetic.video import SyntheticVideo

    body = build_body_model()
    video = SyntheticVideo.load(args.clip) if args.clip else load_or_make_benchmark(args.root, body=body).video
    H, W = video.masks.shape[1:]
    print(f"clip: {video.path} ({video.num_frames} frames {W}x{H}, motion {video.motion!r})")

    d: dict = {"fit": {"progress": False}, "write_overlay": not args.no_overlay, "log_frames": 0}
    cfg = build(TrackingConfig, d, args.set)

    work = Path(tempfile.mkdtemp(prefix="bench_tracking_"))
    runs = []
    tracks = None
    for r in range(max(1, args.runs)):
        out = args.out if (args.out and r == args.runs - 1) else work / f"run{r}"
        rec = _Recorder()
        t0 = time.perf_counter()
        tracks = run_tracking(video.path, cfg, body, out, rec)
        wall = time.perf_counter() - t0
        steps = {k[len("tracking/seconds_"):]: v for k, v in rec.scalars.items() if k.startswith("tracking/seconds_")}
        runs.append((wall, steps))
    T = len(tracks)
    res = evaluate(body, tracks, video)
    per_frame = {k: res.pop(k) for k in ("per_frame_pa_mpjpe_mm", "per_frame_iou_body")}

    def fps(steps, keys):
        return T / max(sum(v for k, v in steps.items() if k in keys), 1e-9)

    trk = sorted(fps(s, ("read_detect", "fit")) for _, s in runs)
    tot = sorted(T / w for w, _ in runs)
    best = max(runs, key=lambda r: fps(r[1], ("read_detect", "fit")))[1]
    res.update({
        "frames": T, "size": [W, H], "runs": len(runs),
        "fps_tracking_best": round(trk[-1], 1), "fps_tracking_median": round(float(np.median(trk)), 1),
        "fps_total_best": round(tot[-1], 1), "fps_total_median": round(float(np.median(tot)), 1),
        "seconds_best_run": {k: round(v, 3) for k, v in best.items()},
        "ms_per_frame_best_run": {k: round(1000 * v / T, 1) for k, v in best.items()},
        "load_average": os.getloadavg()[0],
    })
    if args.per_frame:
        res.update(per_frame)
    print(json.dumps(res, indent=1))
    if args.out:
        print(f"overlay: {args.out / 'overlay.mp4'}")


if __name__ == "__main__":
    main()
