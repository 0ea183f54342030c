"""Held-out evaluation of a finished run's avatar against the video, as the video-avatar papers do it.

    python tools/bench_video.py RUN_DIR [--max-side 512] [--ssaa 3] [--refit-iters N]

The avatar stage holds out every 5th reconstructed frame (``avatar.holdout_every``). On each held-out
frame the avatar is posed and rendered with the tracking camera at <= ``--max-side`` px on the long side,
anti-aliased (``--ssaa`` x ``--ssaa`` rays per pixel, averaged: an edge pixel shows its coverage times the colour,
as a camera's does; ``--ssaa 1`` renders one ray per pixel, as this benchmark did before 2026-12-03):

* ``body``: the naked fitted body (mask IoU only);
* ``fusion``: the ICON-fusion avatar (its canonical mesh and vertex colours, LBS);
* ``fitted``: the avatar fitted to the video (:mod:`avatar.video_fit`: textured mesh), tracked poses;
* ``fitted_refit``: the same avatar, frozen, with each held-out pose refit to that frame's person mask
  (silhouette only, no colour).

Metrics: mask IoU of the rendered silhouette against the tracked person mask; PSNR / SSIM (and LPIPS
when its weights are there; else null) over the person mask's bounding box, with the background zeroed
in both images (the frame masked by the person mask, the render black off the avatar). Poses: the tracked
ones (``Tracks.params``, with the avatar's shape).

Prints a table, then one JSON line: ``{"clip", "heldout", "body": {"mask_iou"}, "fusion": {...},
"fitted": {...}, "fitted_refit": {...}, "fit_seconds"}`` (``fitted`` / ``fitted_refit`` null for a run
whose avatar was not fitted; ``heldout`` 0 and metrics null when the clip was too short to hold out).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar.artifact import Avatar  # noqa: E402
from avatar.extract import pose_canonical_mesh  # noqa: E402
from avatar.posing import pose_transforms  # noqa: E402
from avatar.video_fit import VideoFitConfig, refit_poses  # noqa: E402
from foundation.body.model import BodyModelConfig, build_body_model  # noqa: E402
from foundation.geometry.diff_render import edge_topology  # noqa: E402
from foundation.metrics import lpips, lpips_status, mask_iou, psnr, ssim  # noqa: E402
from foundation.render import render_mesh  # noqa: E402
from recon.artifact import Recon  # noqa: E402
from tracking.artifact import Tracks  # noqa: E402


def frame_metrics(img: np.ndarray, cover: np.ndarray, ref: np.ndarray, mask: np.ndarray, with_color: bool) -> dict:
    """IoU of ``cover`` vs ``mask``; PSNR/SSIM/LPIPS in the mask's box with both backgrounds zeroed.

    img: (H, W, 3) uint8 render over a black background; cover: (H, W) bool, or float coverage (supersampled
    render: a pixel counts as covered when more than half of its rays hit); ref, mask: the frame and person mask."""
    if cover.dtype != bool:
        cover = cover > 0.5
    out = {"mask_iou": mask_iou(cover, mask)}
    if not with_color:
        return out
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    a = img[y0:y1, x0:x1]  # black off the avatar (an anti-aliased edge pixel: its coverage times its colour)
    b = (ref * mask[..., None])[y0:y1, x0:x1]
    out["psnr"], out["ssim"] = psnr(a, b), ssim(a, b)
    out["lpips"] = lpips(a, b) if lpips_status()[0] else None
    se = np.square((a.astype(np.float64) - b.astype(np.float64)) / 255.0).mean(-1)
    both = (cover & mask)[y0:y1, x0:x1]
    out["_colour_share"] = float(se[both].sum() / max(se.sum(), 1e-12))  # printed, not in the JSON line
    return out


def mean_metrics(rows: list[dict]) -> dict | None:
    if not rows:
        return None
    keys = rows[0].keys()
    return {k: (None if any(r[k] is None for r in rows) else round(float(np.mean([r[k] for r in rows])), 4))
            for k in keys}


def public(m: dict | None) -> dict | None:
    """The metrics that go in the JSON line (not the ``_`` diagnostics)."""
    return None if m is None else {k: v for k, v in m.items() if not k.startswith("_")}


def pixelate(img: np.ndarray, cx: float, cy: float, r: float, block: int = 6) -> np.ndarray:
    """``img`` with the square of half-side ``r`` around (cx, cy) pixelated (faces of real people)."""
    out = img.copy()
    H, W = img.shape[:2]
    x0, x1 = int(max(cx - r, 0)), int(min(cx + r, W))
    y0, y1 = int(max(cy - r, 0)), int(min(cy + r, H))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return out
    roi = out[y0:y1, x0:x1]
    small = cv2.resize(roi, (max(1, (x1 - x0) // block), max(1, (y1 - y0) // block)), interpolation=cv2.INTER_AREA)
    out[y0:y1, x0:x1] = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
    return out


def edge_stretch(avatar: Avatar, body, motion_file: Path, max_frames: int = 300) -> dict:
    """Largest posed / rest edge length of the canonical mesh over a motion (topology check: > 3 tears)."""
    from animation.animate import animate
    from animation.motion_files import load_motion

    m = load_motion(motion_file)
    if len(m) > max_frames:
        m = dataclasses.replace(m, poses=m.poses[:: len(m) // max_frames + 1], trans=m.trans[:: len(m) // max_frames + 1])
    seq = animate(avatar, m, body)
    f = avatar.mesh.faces
    e, _ = edge_topology(f)
    rest = (avatar.mesh.verts[e[:, 0]] - avatar.mesh.verts[e[:, 1]]).norm(dim=-1).clamp(min=1e-6)
    ratio = torch.stack([(v[e[:, 0]] - v[e[:, 1]]).norm(dim=-1) / rest for v in seq.verts])  # (T, E)
    return {"frames": len(seq), "max_stretch": round(float(ratio.max()), 2),
            "edges_over_3x": int((ratio.max(0).values > 3).sum()), "edges": len(e)}


def write_picture(path: Path, pics, avatar: Avatar, body, count: int = 3) -> None:
    """Held-out frames (frame | fusion | fitted | refit), person-cropped, faces pixelated; then the textured
    canonical avatar front and back with a headlight (faces pixelated too)."""
    from foundation.render import HEADLIGHT, front_camera

    pick = np.unique(np.linspace(0, len(pics) - 1, min(count, len(pics))).round().astype(int))
    rows = []
    for i in pick:
        panels, mask, (hx, hy) = pics[i]
        ys, xs = np.nonzero(mask)
        h = ys.max() - ys.min()
        y0, y1 = max(ys.min() - h // 20, 0), min(ys.max() + h // 20, mask.shape[0])
        cx = (xs.min() + xs.max()) // 2
        half = int(0.3 * (y1 - y0))
        x0, x1 = max(cx - half, 0), min(cx + half, mask.shape[1])
        r = 0.07 * h
        rows.append(np.concatenate([pixelate(p, hx, hy, r)[y0:y1, x0:x1] for p in panels], 1))
    width = min(r.shape[1] for r in rows)
    rows = [cv2.resize(r, (width, round(r.shape[0] * width / r.shape[1]))) for r in rows]
    strip = np.concatenate(rows, 0)
    v, f = avatar.mesh.verts, avatar.mesh.faces
    views = []
    for yaw in (0.0, np.pi):
        c, s_ = np.cos(yaw), np.sin(yaw)
        R = torch.tensor([[c, 0, s_], [0, 1, 0], [-s_, 0, c]], dtype=torch.float32)
        vv = v @ R.T
        cam = front_camera(vv.numpy(), strip.shape[0])
        img, _ = render_mesh(vv, f, cam, avatar.render_colors(), light=HEADLIGHT, ambient=0.45, background=(255, 255, 255))
        if yaw == 0.0:
            head = cam.project(body.rest(avatar.betas.float())[1][0, 15][None])[0][0].numpy()
            img = pixelate(img, head[0], head[1], 0.06 * strip.shape[0])
        ys, xs = np.nonzero((img < 250).any(-1))
        views.append(img[:, max(xs.min() - 10, 0): xs.max() + 10])
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate([strip] + views, 1), cv2.COLOR_RGB2BGR))
    print(f"picture: {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--max-side", type=int, default=512)
    ap.add_argument("--refit-iters", type=int, default=None,
                    help="iterations of the held-out pose refit (default: the avatar's video_fit.refit_iters)")
    ap.add_argument("--ssaa", type=int, default=3,
                    help="supersampling of the evaluation renders (n x n rays per pixel, edges anti-aliased; "
                         "1: one ray per pixel)")
    ap.add_argument("--save", type=Path, default=None, help="write a picture strip per held-out frame here")
    ap.add_argument("--motions", type=Path, nargs="*", default=[],
                    help="motion files to play on the avatar: prints the largest edge stretch (posed / rest length)")
    ap.add_argument("--picture", type=Path, default=None,
                    help="write one picture (3 held-out frames: frame | fusion | fitted | refit, cropped to the "
                         "person, faces pixelated) and a viewer-like render of the textured avatar beside it")
    args = ap.parse_args()
    if args.ssaa < 1 or args.max_side < 2:
        ap.error(f"--ssaa must be >= 1 and --max-side >= 2, got {args.ssaa}, {args.max_side}")
    logging.basicConfig(level=logging.WARNING)
    run = args.run_dir
    tracks = Tracks.load(run / "tracking")
    recon = Recon.load(run / "recon")
    avatar = Avatar.load(run / "avatar")
    from omegaconf import OmegaConf

    from foundation.config import build

    run_cfg = OmegaConf.to_container(OmegaConf.load(run / "config.yaml")) if (run / "config.yaml").exists() else {}
    body = build_body_model(build(BodyModelConfig, run_cfg.get("body") or {}))
    held = [int(i) for i in avatar.stats.get("holdout_frames", [])]
    clip = Path(tracks.video).name
    fitted = avatar.atlas is not None
    fit_seconds = avatar.stats.get("video_fit", {}).get("fit_seconds") if fitted else None
    if not held:
        print(f"{clip}: no held-out frames (the clip was too short to hold any out)")
        print(json.dumps({"clip": clip, "heldout": 0, "body": None, "fusion": None, "fitted": None,
                          "fitted_refit": None, "fit_seconds": fit_seconds}))
        return
    frames = [recon.frames[i].frame for i in held]
    params = avatar.params_for(tracks.params[torch.tensor(frames)])
    cam = tracks.camera
    s = min(1.0, args.max_side / max(cam.width, cam.height))
    cam = cam.resized(max(2, round(cam.width * s)), max(2, round(cam.height * s)))
    fusion_mesh = avatar.fusion_mesh if fitted else avatar.mesh
    rest_j = avatar.rest_joints(body)

    def pose_fusion(p):
        T = pose_transforms(body, p, rest_j)
        return pose_canonical_mesh(None, fusion_mesh, p.full_pose(), T, avatar.spread, correct=False)

    with torch.no_grad():
        body_v = body(params).vertices
        fus_v = pose_fusion(params)
        fit_v = avatar.pose(params, body) if fitted else None  # its own pose-dependent offsets, if any
    refit_v = None
    if fitted:
        names = {f.name for f in dataclasses.fields(VideoFitConfig)}  # a run made before a setting was renamed
        rc = VideoFitConfig(**{k: v for k, v in (avatar.config.get("video_fit") or {}).items() if k in names})
        rc = dataclasses.replace(rc, max_side=args.max_side, **({} if args.refit_iters is None
                                                                else {"refit_iters": args.refit_iters}))
        kept, refit = refit_poses(avatar, body, tracks, tracks.params[torch.tensor(frames)], frames, rc)
        with torch.no_grad():
            rv = avatar.pose(refit, body)
        refit_v = {t: rv[k] for k, t in enumerate(kept)}
        refit_pose = dict(zip(kept, refit.full_pose()))
    tracked_pose = params.full_pose()
    rows: dict[str, list[dict]] = {"body": [], "fusion": [], "fitted": [], "fitted_refit": []}
    strips, pics = [], []
    with torch.no_grad():
        heads, _ = cam.project(body(params).joints[:, 15])  # head joint: where faces get pixelated
    for k, t in enumerate(frames):
        ref = cv2.resize(np.asarray(tracks.images[t]), (cam.width, cam.height), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(np.asarray(tracks.masks[t], np.float32), (cam.width, cam.height),
                          interpolation=cv2.INTER_AREA) > 0.5
        if mask.sum() < 16:
            continue
        row = []
        _, cov = render_mesh(body_v[k], body.faces, cam, shading="flat", background=(0, 0, 0), ssaa=args.ssaa)
        rows["body"].append(frame_metrics(None, cov, ref, mask, with_color=False))
        img, cov = render_mesh(fus_v[k], fusion_mesh.faces, cam, fusion_mesh.colors, shading="flat",
                               background=(0, 0, 0), ssaa=args.ssaa)
        rows["fusion"].append(frame_metrics(img, cov, ref, mask, True))
        row += [ref * mask[..., None], img]
        if fitted:
            img, cov = render_mesh(fit_v[k], avatar.mesh.faces, cam, avatar.render_colors(tracked_pose[k]),
                                   shading="flat", background=(0, 0, 0), ssaa=args.ssaa)
            rows["fitted"].append(frame_metrics(img, cov, ref, mask, True))
            row.append(img)
            if t in refit_v:
                img, cov = render_mesh(refit_v[t], avatar.mesh.faces, cam, avatar.render_colors(refit_pose[t]),
                                       shading="flat", background=(0, 0, 0), ssaa=args.ssaa)
                rows["fitted_refit"].append(frame_metrics(img, cov, ref, mask, True))
                row.append(img)
        strips.append(np.concatenate(row, 1))
        pics.append((row, mask, heads[k].numpy()))
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        for k, im in enumerate(strips):
            cv2.imwrite(str(args.save / f"heldout_{k:02d}.png"), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    if args.picture and pics:
        write_picture(args.picture, pics, avatar, body)
    for mf in args.motions:
        print(f"{mf.name}: {edge_stretch(avatar, body, mf)}")
    res = {name: mean_metrics(r) for name, r in rows.items()}
    print(f"{clip}: {len(rows['body'])} held-out frames (clip frames {frames}), render {cam.width}x{cam.height}")
    print(f"{'':14s}{'mask IoU':>10s}{'PSNR':>8s}{'SSIM':>8s}{'LPIPS':>8s}")
    for name, m in res.items():
        if m is None:
            continue
        f = lambda key, fmt: (fmt.format(m[key]) if m.get(key) is not None else "-")  # noqa: E731
        print(f"{name:14s}{f('mask_iou', '{:.3f}'):>10s}{f('psnr', '{:.2f}'):>8s}{f('ssim', '{:.3f}'):>8s}"
              f"{f('lpips', '{:.3f}'):>8s}")
    for name in ("fusion", "fitted", "fitted_refit"):
        if res.get(name) and res[name].get("_colour_share") is not None:
            print(f"{name}: {100 * res[name]['_colour_share']:.0f}% of the squared error in the box is colour where "
                  f"render and mask overlap, the rest where only one of them covers")
    if fit_seconds is not None:
        print(f"fit: {fit_seconds:.0f} s")
    res = {k: public(v) for k, v in res.items()}
    print(json.dumps({"clip": clip, "heldout": len(rows["body"]), "body": res["body"], "fusion": res["fusion"],
                      "fitted": res["fitted"], "fitted_refit": res["fitted_refit"], "fit_seconds": fit_seconds}))


if __name__ == "__main__":
    main()
