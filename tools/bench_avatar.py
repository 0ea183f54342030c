"""Benchmark of the avatar + animation stages on a synthetic clothed subject with known ground truth.

Trains the SCANimate-style avatar on T posed frames of a toy clothed subject (the body inflated by
1-4 cm, exact posed ground truth), then measures on *held-out* poses (not used for training):

* Chamfer (cm, point-to-surface, symmetric) of the posed avatar vs the ground-truth clothed surface,
  next to two baselines: the naked body and the avatar without its pose-dependent correction;
* PSNR / SSIM of flat-shaded renders vs ground-truth renders, inside the ground-truth mask;
* animation throughput (posing fps, render fps) and export timings.

    python tools/bench_avatar.py              # default config (a few minutes on 2 CPU cores)
    python tools/bench_avatar.py --fast       # smoke run
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=24, help="training frames")
    ap.add_argument("--heldout", type=int, default=8, help="held-out poses")
    ap.add_argument("--fast", action="store_true", help="AvatarConfig(fast=True)")
    ap.add_argument("--anim-frames", type=int, default=60)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)

    from animation.animate import animate
    from animation.export import render_sequence, write_glb, write_mesh_sequence
    from animation.motion import load_motion, resample_motion, write_demo_motion
    from avatar.body import build_body_model
    from avatar.logger import NullLogger
    from avatar.metrics import chamfer_cm, psnr, ssim
    from avatar.scanimate.render import render_mesh
    from avatar.scanimate.stage import AvatarConfig, run_avatar
    from avatar.scanimate.toy import make_toy_subject, random_poses, toy_recon, toy_tracks

    body = build_body_model()
    subject = make_toy_subject(body)
    recon = toy_recon(body, subject, random_poses(body, args.frames, seed=0))
    tracks = toy_tracks(body, subject, recon, size=256)
    cfg = AvatarConfig(fast=args.fast, holdout_every=0)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / ".avatar.tmp"
        out.mkdir()
        t0 = time.perf_counter()
        av = run_avatar(tracks, recon, cfg, body, out, NullLogger())
        train_s = time.perf_counter() - t0

        held = random_poses(body, args.heldout, seed=7, smooth=False)
        held.betas = subject.betas.expand(args.heldout, -1).clone()
        gt = subject.posed(body, held)
        with torch.no_grad():
            naked = body(held).vertices
        posed = av.pose(held, body, correct=True)
        lbs_only = av.pose(held, body, correct=False)
        F_gt, F_av, F_body = subject.faces.numpy(), av.mesh.faces.numpy(), body.faces.numpy()
        ch = lambda v, f, k: chamfer_cm(v[k].numpy(), f, gt[k].numpy(), F_gt)  # noqa: E731
        res = {name: np.mean([ch(v, f, k) for k in range(args.heldout)])
               for name, v, f in (("avatar", posed, F_av), ("avatar_lbs_only", lbs_only, F_av), ("naked_body", naked, F_body))}
        cam = tracks.camera
        ps, ss = [], []
        col_gt, col_av = torch.from_numpy(subject.colors), av.mesh.colors
        for k in range(args.heldout):
            ref, m = render_mesh(gt[k], subject.faces, cam, col_gt, shading="flat", background=(0, 0, 0))
            img, _ = render_mesh(posed[k], av.mesh.faces, cam, col_av, shading="flat", background=(0, 0, 0))
            ps.append(psnr(img, ref, m)), ss.append(ssim(img, ref, m))

        motion = resample_motion(load_motion(write_demo_motion(Path(tmp) / "m.npz", args.anim_frames)), 30.0)
        seq = animate(av, motion, body)
        seq_lbs = animate(av, motion, body, correct=False)
        t1 = time.perf_counter()
        frames = render_sequence(seq.verts, seq.faces, seq.colors, cam)
        render_fps = len(frames) / (time.perf_counter() - t1)
        t2 = time.perf_counter()
        write_mesh_sequence(Path(tmp) / "ply", seq.verts, seq.faces, seq.colors)
        ply_s = time.perf_counter() - t2
        t3 = time.perf_counter()
        write_glb(Path(tmp) / "a.glb", av.mesh.verts, av.mesh.faces, seq.colors, av.mesh.weights, seq.rest_joints,
                  body.parents, motion.poses, motion.trans, motion.fps)
        glb_s = time.perf_counter() - t3

    cfgname = "fast" if args.fast else "default"
    print(f"avatar benchmark ({cfgname} config, {args.frames} training frames, {args.heldout} held-out poses, "
          f"{torch.get_num_threads()} threads)")
    print(f"  training (run_avatar)          {train_s:8.1f} s   canonical mesh {len(av.mesh.verts)} vertices")
    print(f"  cycle error (median)           {av.stats['cycle_err_mm_median']:8.3f} mm")
    print(f"  held-out Chamfer avatar        {res['avatar']:8.3f} cm")
    print(f"  held-out Chamfer LBS only      {res['avatar_lbs_only']:8.3f} cm   (no pose-dependent correction)")
    print(f"  held-out Chamfer naked body    {res['naked_body']:8.3f} cm   (baseline)")
    print(f"  held-out PSNR / SSIM (mask)    {np.mean(ps):8.2f} dB / {np.mean(ss):.4f}")
    print(f"  animation posing               {len(seq) / seq.seconds:8.1f} fps   (LBS only {len(seq_lbs) / seq_lbs.seconds:.1f} fps), "
          f"{len(seq)} frames")
    print(f"  animation render ({cam.width}px)      {render_fps:8.1f} fps")
    print(f"  export PLY sequence            {ply_s:8.2f} s   glTF {glb_s:.2f} s")


if __name__ == "__main__":
    main()
