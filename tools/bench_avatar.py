"""Benchmark of the avatar + animation stages on the synthetic benchmark subject (known ground truth).

The subject, its training clip and a held-out motion come from
:func:`synthetic.benchmark.load_or_make_benchmark` (``data/benchmark``, built on first use):

* training input: the per-frame GT clothed meshes of the training clip (``video``, motion "walk_turn"),
  with the GT SMPL-X parameters, so the avatar stage is measured apart from tracking / recon errors
  (``--recon DIR`` trains on a recon stage output instead, e.g. ``outputs/clip/recon`` of
  ``python -m avatar.run video=data/benchmark/video/clip.mp4 stages=[tracking,recon]``: the whole
  pipeline; the avatar then has the tracked body shape, so it is scaled and shifted onto GT on the body
  joints before the metrics, and compared with its own naked body aligned the same way);
* evaluation on the *held-out* motion (``heldout``, "arms_squat", poses never seen in training):
  Chamfer (cm, symmetric point-to-surface) of the posed avatar vs the GT clothed mesh, next to the
  baselines "naked body" and "avatar without pose-dependent correction" (LBS only), plus the fit on
  the training frames; PSNR / SSIM of flat-shaded renders vs flat renders of the GT (albedo, GT mask);
* timings: training (per phase), animation posing fps (with / without correction), render fps,
  PLY and glTF export.

PNG renders (GT | avatar) are written to ``--out`` (default ``outputs/bench_avatar``).

    python tools/bench_avatar.py                     # default config (a few minutes on 2 CPU cores)
    python tools/bench_avatar.py --fast              # smoke run
    python tools/bench_avatar.py --set sdf.iters=300 --set samples_per_frame=3000
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _gt_recon(video, frames: list[int]):
    """A ``Recon`` whose frames are the video's GT clothed meshes (world frame, GT colours)."""
    from recon.artifact import FrameRecon, Recon

    c = video.canonical
    verts = video.posed_clothed()
    faces, colors = c.faces.numpy().astype(np.int64), c.colors.numpy().astype(np.uint8)
    fr = [FrameRecon(verts[t].numpy().astype(np.float32), faces, colors, t) for t in frames]
    return Recon(fr, video.params[torch.tensor(frames)], {"source": "synthetic GT"})


@torch.no_grad()
def _joint_alignment(av, body, params) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame scale + translation taking the avatar's own body (its betas, posed by ``params``) onto
    the GT body (``params`` with GT betas), least squares on the 22 body joints.

    A monocular fit only knows the body's size up to its distance from the camera, so an avatar trained
    on tracked frames is compared with GT after this similarity (no rotation: the pose is GT's).
    Returns: scale (B, 1, 1), translation (B, 1, 3); identity when the avatar has GT's betas.
    """
    ja = body(av.params_for(params)).joints[:, :22]
    jg = body(params).joints[:, :22]
    ca, cg = ja.mean(1, keepdim=True), jg.mean(1, keepdim=True)
    s = ((ja - ca) * (jg - cg)).sum((1, 2), keepdim=True) / (ja - ca).pow(2).sum((1, 2), keepdim=True)
    return s, cg - s * ca


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="data/benchmark", help="benchmark set folder")
    ap.add_argument("--frames", type=int, default=None, help="training frames (evenly spaced; default all)")
    ap.add_argument("--heldout", type=int, default=8, help="held-out poses evaluated (evenly spaced)")
    ap.add_argument("--recon", default=None, help="train on this recon stage output instead of GT meshes")
    ap.add_argument("--fast", action="store_true", help="AvatarConfig(fast=True)")
    ap.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    ap.add_argument("--anim-frames", type=int, default=60)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: AvatarConfig.threads)")
    ap.add_argument("--out", default="outputs/bench_avatar", help="PNG renders go here")
    ap.add_argument("--save-avatar", default=None, help="also save the trained avatar into this folder")
    ap.add_argument("--load-avatar", default=None, help="skip training: evaluate this saved avatar")
    ap.add_argument("--video-fit", action="store_true",
                    help="with --recon: also fit the avatar to the video (avatar.video_fit; the tracking stage beside "
                         "the recon gives frames and masks) and evaluate both, the fusion and the fitted avatar")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import imageio.v3 as iio

    from animation.animate import animate
    from animation.export import render_sequence, write_glb, write_mesh_sequence
    from animation.motion import resample_motion, write_demo_motion
    from animation.motion_files import load_motion
    from foundation.body import build_body_model
    from foundation.metrics import chamfer_cm, psnr, ssim
    from foundation.render import front_camera, render_mesh
    from avatar.stage import AvatarConfig, train_avatar
    from foundation.config import build
    from synthetic.benchmark import load_or_make_benchmark

    body = build_body_model()
    bench = load_or_make_benchmark(args.root, body=body)
    video, held_video = bench.video, bench.heldout
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    n = video.num_frames
    frames = list(range(n)) if not args.frames else sorted({int(round(k)) for k in np.linspace(0, n - 1, args.frames)})
    if args.recon:
        from recon.artifact import Recon

        recon = Recon.load(args.recon)
        frames = recon.frame_indices  # clip frames (a frame without a person is not in the recon)
        source = f"recon output {args.recon}"
    else:
        recon = _gt_recon(video, frames)
        source = "GT clothed meshes"
    cfg = build(AvatarConfig, {"fast": args.fast, "holdout_every": 0}, args.set)
    if args.threads:
        cfg = dataclasses.replace(cfg, threads=args.threads)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)  # the stages' default (AvatarConfig / AnimationConfig.threads)
    t0 = time.perf_counter()
    if args.load_avatar:
        from avatar.artifact import Avatar

        av = Avatar.load(args.load_avatar)
    else:
        av = train_avatar(recon, cfg, body, frames=list(range(len(recon.frames))))
    train_s = time.perf_counter() - t0
    fusion_av = None
    if args.video_fit:
        if not args.recon:
            raise SystemExit("--video-fit needs --recon RUN_DIR/recon (the tracking stage beside it has the frames)")
        from avatar.video_fit import fit_avatar_to_video
        from tracking.artifact import Tracks

        tracks = Tracks.load(Path(args.recon).parent / "tracking")
        fusion_av = av
        av = fit_avatar_to_video(av, tracks, recon, list(range(len(recon.frames))), body, cfg.effective().video_fit)
        print(f"video fit: {av.stats['video_fit']['fit_seconds']:.0f} s")
    if args.save_avatar:
        av.save(args.save_avatar)

    # ---- held-out poses (another motion) and a few training poses
    hk = sorted({int(round(k)) for k in np.linspace(0, held_video.num_frames - 1, min(args.heldout, held_video.num_frames))})
    held = held_video.params[torch.tensor(hk)]
    gt = held_video.posed_clothed()[hk]
    F_gt = video.canonical.faces.numpy()
    with torch.no_grad():
        naked = body(held).vertices
    t1 = time.perf_counter()
    posed = av.pose(held, body)  # the avatar's own choice (a fitted avatar: LBS)
    pose_s = time.perf_counter() - t1
    lbs_only = av.pose(held, body, correct=False)
    # the exact correction (MLP on every vertex), for reference
    exact = dataclasses.replace(av, arch={**av.arch, "correction_spacing": 0.0}).pose(held, body, correct=True)
    F_av, F_body = av.mesh.faces.numpy(), body.faces.numpy()
    raw_avatar = posed
    if args.recon:  # tracked shape: align size/position on the body joints (see _joint_alignment)
        sc, tr = _joint_alignment(av, body, held)
        posed, lbs_only, exact = (v * sc + tr for v in (posed, lbs_only, exact))
        with torch.no_grad():
            naked_own = body(av.params_for(held)).vertices * sc + tr
    ch = lambda v, f, k: chamfer_cm(v[k].numpy(), f, gt[k].numpy(), F_gt, n=20000)  # noqa: E731
    meshes = [("avatar", posed, F_av), ("lbs_only", lbs_only, F_av), ("naked", naked, F_body), ("exact", exact, F_av)]
    if args.recon:
        meshes += [("raw", raw_avatar, F_av), ("naked_own", naked_own, F_body)]
    if fusion_av is not None:  # the fusion avatar the fit started from, aligned the same way
        fus = fusion_av.pose(held, body)
        sc_f, tr_f = _joint_alignment(fusion_av, body, held)
        meshes.append(("fusion", fus * sc_f + tr_f, fusion_av.mesh.faces.numpy()))
    res = {name: float(np.mean([ch(v, f, k) for k in range(len(hk))])) for name, v, f in meshes}
    corr_mm = 1000 * float((posed - lbs_only).norm(dim=-1).mean())
    tk = frames[:: max(1, len(frames) // 4)][:4]

    def _posed_aligned(p):
        v = av.pose(p, body)
        if args.recon:
            sc, tr = _joint_alignment(av, body, p)
            v = v * sc + tr
        return v[0].numpy()

    train_fit = float(np.mean([chamfer_cm(_posed_aligned(video.params[t : t + 1]), F_av,
                                          video.posed_clothed(t)[0].numpy(), F_gt, n=20000) for t in tk]))

    cam = held_video.camera
    col_gt, col_av = video.canonical.colors, av.mesh.colors
    ps, ss, panels = [], [], []
    for k in range(len(hk)):
        ref, m = render_mesh(gt[k], video.canonical.faces, cam, col_gt, shading="flat", background=(0, 0, 0))
        img, _ = render_mesh(posed[k], av.mesh.faces, cam, col_av, shading="flat", background=(0, 0, 0))
        ps.append(psnr(img, ref, m)), ss.append(ssim(img, ref, m))
        if k % max(1, len(hk) // 3) == 0:
            panels.append(np.concatenate([ref, img], 1))
    iio.imwrite(out_dir / "heldout_gt_vs_avatar.png", np.concatenate(panels[:3], 0))
    v, f = av.mesh.verts, av.mesh.faces
    ccam = front_camera(v.numpy(), 512)
    iio.imwrite(out_dir / "canonical.png", np.concatenate([render_mesh(v, f, ccam, col_av)[0],
                                                           render_mesh(v, f, ccam, shading="normals")[0]], 1))
    bcam = front_camera(v.numpy() * np.array([-1.0, 1.0, -1.0], np.float32), 512)  # the back: mirror x and z
    vb = v * torch.tensor([-1.0, 1.0, -1.0])
    iio.imwrite(out_dir / "canonical_back.png", render_mesh(vb, f[:, [0, 2, 1]], bcam, col_av, shading="flat")[0])

    # ---- animation throughput
    with tempfile.TemporaryDirectory() as tmp:
        motion = resample_motion(load_motion(write_demo_motion(Path(tmp) / "m.npz", args.anim_frames)), 30.0)
        animate(av, motion, body)  # warm-up (lazy caches, thread pools)
        seq = animate(av, motion, body)
        seq_lbs = animate(av, motion, body, correct=False)
        rcam = front_camera(seq.verts[:, ::10].reshape(-1, 3).numpy(), 512)
        t2 = time.perf_counter()
        frames_r = render_sequence(seq.verts, seq.faces, seq.colors, rcam)
        render_fps = len(frames_r) / (time.perf_counter() - t2)
        iio.imwrite(out_dir / "animation_frames.png", np.concatenate([frames_r[i] for i in (0, len(frames_r) // 2, -1)], 1))
        t3 = time.perf_counter()
        write_mesh_sequence(Path(tmp) / "ply", seq.verts, seq.faces, seq.colors)
        ply_s = time.perf_counter() - t3
        t4 = time.perf_counter()
        write_glb(Path(tmp) / "a.glb", av.mesh.verts, av.mesh.faces, seq.colors, av.mesh.weights, seq.rest_joints,
                  body.parents, motion.poses, motion.trans, motion.fps)
        glb_s = time.perf_counter() - t4

    cfgname = ("fast" if args.fast else "default") + (f" + {' '.join(args.set)}" if args.set else "")
    st = av.stats
    load = os.getloadavg()[0]
    print(f"avatar benchmark ({cfgname} config; trained on {source}, {len(recon.frames)} frames; "
          f"{len(hk)} held-out poses of '{held_video.motion}'; {torch.get_num_threads()} threads, load {load:.1f})")
    phases = st.get("phase_seconds", {})
    ph = ", ".join(f"{k} {v:.0f} s" for k, v in phases.items())
    print(f"  training (train_avatar)         {train_s:8.1f} s   ({ph})" if ph else
          f"  training (train_avatar)         {train_s:8.1f} s")
    print(f"  canonical mesh                  {len(av.mesh.verts):8d} vertices, correction anchors "
          f"{av.corrector().num_anchors} (spacing {av.arch.get('correction_spacing', 0.03)} m)")
    print(f"  cycle error (median)            {st['cycle_err_mm_median']:8.3f} mm")
    print(f"  train-pose Chamfer avatar       {train_fit:8.3f} cm")
    print(f"  held-out Chamfer avatar         {res['avatar']:8.3f} cm")
    print(f"  held-out Chamfer exact corr.    {res['exact']:8.3f} cm   (correction MLP on every vertex; "
          f"mean anchored correction {corr_mm:.2f} mm)")
    print(f"  held-out Chamfer LBS only       {res['lbs_only']:8.3f} cm   (no pose-dependent correction)")
    print(f"  held-out Chamfer naked body     {res['naked']:8.3f} cm   (baseline: GT shape)")
    if "fusion" in res:
        print(f"  held-out Chamfer fusion avatar  {res['fusion']:8.3f} cm   (before the fit to the video; 'avatar' is "
              f"the fitted one)")
    if args.recon:
        print(f"  held-out Chamfer naked own body {res['naked_own']:8.3f} cm   (baseline: the avatar's tracked shape, "
              f"aligned alike)")
        print(f"  held-out Chamfer avatar, raw    {res['raw']:8.3f} cm   (before the joint alignment; "
              f"scale {float(sc.mean()):.3f})")
    print(f"  held-out PSNR / SSIM (GT mask)  {np.mean(ps):8.2f} dB / {np.mean(ss):.4f}   (flat albedo vs GT albedo)")
    print(f"  posing (Avatar.pose, corrected) {len(hk) / pose_s:8.1f} fps   ({len(hk)} frames, incl. body model)")
    print(f"  animation posing                {len(seq) / seq.seconds:8.1f} fps   (LBS only "
          f"{len(seq_lbs) / seq_lbs.seconds:.1f} fps), {len(seq)} frames")
    print(f"  animation render (512 px)       {render_fps:8.1f} fps")
    print(f"  export PLY sequence             {ply_s:8.2f} s   ({len(seq) / ply_s:.1f} fps)   glTF {glb_s:.2f} s")
    print(f"  renders: {out_dir}/heldout_gt_vs_avatar.png, canonical.png, canonical_back.png, animation_frames.png")


if __name__ == "__main__":
    main()
