"""The avatar stage: per-frame clothed surfaces (``Recon``) -> animatable ``Avatar``.

1. Sample each training frame's surface (points, normals, colours).
2. Train the cycle-consistent skinning fields and un-skin the samples to canonical space.
3. Train the canonical SDF (pose-conditioned, IGR losses) (and the colour field if ``color_mode="field"``).
4. Extract the canonical mesh once (colours baked from the canonicalised samples); evaluate on held-out frames (Chamfer to their reconstructions,
   PSNR/SSIM of the rendered avatar against the input frame inside the person mask).

Resume: training state is checkpointed to ``<run_dir>/.avatar_checkpoint`` (outside the stage's
temporary output directory, which the pipeline deletes on failure) and picked up when the stage is
re-run with the same config and inputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from foundation.metrics import chamfer_cm, image_metrics
from foundation.body.model import BodyModel
from foundation.logger import RunLogger
from foundation.threads import torch_threads
from recon.artifact import Recon
from tracking.artifact import Tracks
from avatar.artifact import Avatar
from avatar.canonicalize import Samples, SkinningConfig, canonicalize, sample_colored_surface, train_skinning
from avatar.extract import bake_colors, extract_canonical_mesh
from avatar.fields import BodySkinPrior, CanonicalSDF, ColorField, body_sdf_grid, pose_features, spread_matrix
from avatar.train import Checkpointer, SDFConfig, train_sdf
from avatar.video_fit import VideoFitConfig, fit_avatar_to_video

log = logging.getLogger(__name__)

__all__ = ["AvatarConfig", "run_avatar", "train_avatar"]


@dataclass(frozen=True)
class AvatarConfig:
    """Avatar-stage settings (the schema of ``avatar.*`` in the pipeline config; defaults here only).

    fast: tiny settings for tests / smoke runs (overrides iterations, samples and resolution).
    samples_per_frame: surface samples drawn from each training frame.
    holdout_every: every k-th frame (offset k//2) is held out for evaluation; 0 keeps all for training.
    max_train_frames: cap on training frames (evenly spaced), None for all.
    extract_voxel / extract_band: marching-cubes spacing and MLP band around the body (m).
    max_offset: clamp of the pose-dependent correction (m).
    correction_spacing: anchor spacing (m) of the fast pose correction (the MLP runs on one vertex per
        cell and is interpolated; 0 = every vertex, exact, slow).
    color_mode: "samples" bakes the canonicalised samples' colours onto the mesh (sharp, no training);
        "field" trains the colour MLP with the SDF.  color_radius: baking neighbourhood (m).
    threads: torch CPU threads while training / evaluating (None, the default: every core this process may
        use).  On 2 cores with the machine to itself (2026-12-03, studio clip) the fusion trains in 65 s on two
        threads against 103 s on one; set 1 where other processes compete for the cores, which can cost a
        second thread up to 10x (measured earlier: a skinning iteration 0.45 s on one thread vs 6.4 s on two
        with a load average of 7 on 2 cores).
    eval_max_side: held-out renders are made at most this many pixels on a side.
    select_correction: keep the pose-dependent correction only if it lowers the held-out Chamfer
        (``Avatar.arch["pose_correction"]``; needs held-out frames).
    checkpoint_dir: resume state (None: ``<run_dir>/.avatar_checkpoint``); resume: use it.
    video_fit: the fit of the avatar to the video after the fusion (:mod:`avatar.video_fit`; needs the
        tracks' frames; ``video_fit.enabled=false`` keeps the fusion avatar).
    """

    fast: bool = False
    samples_per_frame: int = 6000
    holdout_every: int = 5
    max_train_frames: int | None = None
    skinning: SkinningConfig = field(default_factory=SkinningConfig)
    sdf: SDFConfig = field(default_factory=SDFConfig)
    extract_voxel: float = 0.01
    extract_band: float = 0.1
    max_offset: float = 0.05
    correction_spacing: float = 0.04
    color_mode: str = "samples"
    color_radius: float = 0.015
    threads: int | None = None
    eval_max_side: int = 512
    select_correction: bool = True
    checkpoint_dir: str | None = None
    resume: bool = True
    seed: int = 0
    video_fit: VideoFitConfig = field(default_factory=VideoFitConfig)

    def effective(self) -> "AvatarConfig":
        """The settings actually used (``fast`` applied)."""
        if not self.fast:
            return self
        return dataclasses.replace(
            self, samples_per_frame=min(self.samples_per_frame, 1500), extract_voxel=max(self.extract_voxel, 0.02),
            skinning=dataclasses.replace(self.skinning, iters=min(self.skinning.iters, 40), batch=1024, hidden=64),
            sdf=dataclasses.replace(self.sdf, iters=min(self.sdf.iters, 80), batch=1024, hidden=64, layers=3,
                                    color_hidden=64, grid_voxel=max(self.sdf.grid_voxel, 0.025)),
            eval_max_side=min(self.eval_max_side, 160),
            video_fit=dataclasses.replace(self.video_fit, subdivide=0, iters=min(self.video_fit.iters, 10),
                                          pose_iters=min(self.video_fit.pose_iters, 5),
                                          refit_iters=min(self.video_fit.refit_iters, 10),
                                          residual_iters=min(self.video_fit.residual_iters, 3),
                                          texture_size=min(self.video_fit.texture_size, 256),
                                          max_side=min(self.video_fit.max_side, 128),
                                          bake_max_side=min(self.video_fit.bake_max_side, 256)))


def _split(n: int, holdout_every: int, max_train: int | None) -> tuple[list[int], list[int]]:
    held = [i for i in range(n) if holdout_every > 0 and i % holdout_every == holdout_every // 2]
    if n - len(held) < 2:
        held = []
    train = [i for i in range(n) if i not in held]
    if max_train and len(train) > max_train:
        train = [train[int(round(k))] for k in np.linspace(0, len(train) - 1, max_train)]
    return train, held


def _fingerprint(cfg: AvatarConfig, recon, body) -> str:
    h = hashlib.sha1(json.dumps(asdict(cfg), sort_keys=True, default=str).encode())
    h.update(body.name.encode())
    for fr in recon.frames:
        h.update(np.ascontiguousarray(fr.verts[:: max(1, len(fr.verts) // 500)]).tobytes())
    h.update(recon.params.full_pose().numpy().tobytes())
    return h.hexdigest()[:16]


def train_avatar(recon: Recon, cfg: AvatarConfig, body: BodyModel, logger: RunLogger | None = None,
                 checkpoint_dir: str | Path | None = None,
                 frames: list[int] | None = None) -> Avatar:
    """Train an avatar on ``recon.frames[frames]`` (all by default).  See the module doc.

    Args:
        recon: ``Recon`` (frames with world-frame verts (N, 3), faces, colours; params B = #frames).
        cfg: config (``fast`` applied here); body: the body model of the reconstruction.
        checkpoint_dir: resume state directory (None: no checkpoints).
    """
    if cfg.color_mode not in ("samples", "field"):
        raise ValueError(f"AvatarConfig.color_mode must be 'samples' or 'field', got {cfg.color_mode!r}")
    with torch_threads(cfg.threads):
        return _train_avatar(recon, cfg, body, logger, checkpoint_dir, frames)


def _train_avatar(recon, cfg: AvatarConfig, body, logger, checkpoint_dir, frames) -> Avatar:
    ecfg = cfg.effective()
    frames = list(range(len(recon.frames))) if frames is None else frames
    if len(frames) < 1:
        raise ValueError("train_avatar: no training frames")
    torch.manual_seed(ecfg.seed)
    rng = np.random.default_rng(ecfg.seed)
    t0 = time.perf_counter()
    params = recon.params[torch.tensor(frames)]
    betas = recon.params.betas[:1].float()
    params.betas = betas.expand(len(frames), -1).clone()
    with torch.no_grad():
        bo = body(params)
        rest = bo.rest_vertices[0]
    W = body.lbs_weights.float()
    T = bo.joint_transforms.float()
    pts, nrm, col, cws, fid = [], [], [], [], []
    for k, i in enumerate(frames):
        fr = recon.frames[i]
        p, n, c, cw = sample_colored_surface(fr.verts, fr.faces, fr.colors, ecfg.samples_per_frame, rng,
                                     fr.color_weight)
        pts.append(p), nrm.append(n), col.append(c), cws.append(cw), fid.append(np.full(len(p), k))
    cat = lambda a: torch.from_numpy(np.concatenate(a))  # noqa: E731
    samples = Samples(cat(pts), cat(nrm), cat(col), cat(fid).long(), cat(cws))
    phase = {"sample": time.perf_counter() - t0}
    tick = time.perf_counter()
    sk = ecfg.skinning
    prior_c = BodySkinPrior(rest, W, sk.knn, sk.sigma)
    priors_p = [BodySkinPrior(bo.vertices[k], W, sk.knn, sk.sigma) for k in range(len(frames))]
    lo, hi = rest.min(0).values, rest.max(0).values
    center, scale = 0.5 * (lo + hi), float(0.5 * (hi - lo).max()) + 0.1

    ckpt = Checkpointer(checkpoint_dir if ecfg.resume else None,
                        _fingerprint(ecfg, recon, body) + "-" + ",".join(map(str, frames)))
    state = ckpt.load()

    # ---- 1. skinning fields
    from avatar.fields import SkinningField

    fc = SkinningField(center, scale, W.shape[1], sk.hidden, sk.layers, sk.freqs)
    fp = SkinningField(center, scale, W.shape[1], sk.hidden, sk.layers, sk.freqs, num_frames=len(frames),
                       latent_dim=sk.latent_dim)
    start = 0
    if state is not None:
        fc.load_state_dict(state["modules"]["skin_c"])
        fp.load_state_dict(state["modules"]["skin_p"])
        start = sk.iters if state["phase"] == "sdf" else state["iteration"]
    save_skin = lambda f, it: ckpt.save("skinning", it, {"skin_c": f[0], "skin_p": f[1]})  # noqa: E731
    if start < sk.iters:
        train_skinning(samples, T, prior_c, priors_p, rest, bo.vertices, W, sk, center, scale, logger,
                       fields=(fc, fp), start_iter=start, on_checkpoint=save_skin)
        save_skin((fc, fp), sk.iters)
    fc.eval(), fp.eval()
    phase["skinning"], tick = time.perf_counter() - tick, time.perf_counter()
    xc, nc, wc, err = canonicalize(samples, T, fc, fp, prior_c, priors_p, sk.refine_iters)
    keep = err < ecfg.sdf.max_cycle_err
    log.info("canonicalised %d samples, cycle error median %.2f mm, %.1f%% kept", len(err),
             1000 * err.median().item(), 100 * keep.float().mean().item())
    spread = spread_matrix(W.shape[1])
    feats = pose_features(wc[keep], params.full_pose()[samples.frame[keep]], spread)
    phase["canonicalise"], tick = time.perf_counter() - tick, time.perf_counter()

    # ---- 2. canonical SDF + colour
    sc = ecfg.sdf
    grid, glo, ghi = body_sdf_grid(rest, body.faces, sc.grid_voxel, sc.grid_margin)
    sdf = CanonicalSDF(grid, glo, ghi, center, scale, sc.hidden, sc.layers, sc.freqs, sc.pose_dim)
    color = ColorField(center, scale, sc.color_hidden, sc.color_layers, sc.color_freqs) \
        if ecfg.color_mode == "field" else None
    modules = {"skin_c": fc, "skin_p": fp, "sdf": sdf, **({"color": color} if color is not None else {})}
    start, opt_state = 0, None
    if state is not None and state["phase"] == "sdf":
        for k in ("sdf", "color"):
            if k in modules:
                modules[k].load_state_dict(state["modules"][k])
        start, opt_state = state["iteration"], state["extra"].get("optimizer")

    def save_sdf(it, opt):
        ckpt.save("sdf", it, modules, {"optimizer": opt.state_dict()})

    losses = train_sdf(xc[keep], nc[keep], feats, samples.colors[keep], sdf, color, sc, logger, start, opt_state,
                       on_checkpoint=save_sdf, color_weight=samples.color_weight[keep])
    sdf.eval()
    if color is not None:
        color.eval()
    phase["sdf"], tick = time.perf_counter() - tick, time.perf_counter()

    # ---- 3. canonical mesh (+ colours baked from the samples)
    mesh = extract_canonical_mesh(sdf, color, fc, prior_c, ecfg.extract_voxel, ecfg.extract_band)
    if color is None:
        mesh = dataclasses.replace(mesh, colors=bake_colors(mesh.verts, mesh.normals, xc[keep], nc[keep],
                                                            samples.colors[keep], ecfg.color_radius,
                                                            weights=samples.color_weight[keep]))
    phase["extract"] = time.perf_counter() - tick
    arch = {"sdf_hidden": sc.hidden, "sdf_layers": sc.layers, "sdf_freqs": sc.freqs, "pose_dim": sc.pose_dim,
            "color_hidden": sc.color_hidden, "color_layers": sc.color_layers, "color_freqs": sc.color_freqs,
            "skin_hidden": sk.hidden, "skin_layers": sk.layers, "skin_freqs": sk.freqs, "skin_knn": sk.knn,
            "skin_sigma": sk.sigma, "max_offset": ecfg.max_offset, "correction_spacing": ecfg.correction_spacing}
    stats = {"train_frames": frames, "train_clip_frames": [recon.frames[i].frame for i in frames],
             "num_samples": int(keep.sum()), "cycle_err_mm_median": 1000 * err.median().item(),
             "final_losses": losses, "mesh_vertices": len(mesh.verts), "train_seconds": time.perf_counter() - t0,
             "phase_seconds": phase}
    avatar = Avatar(sdf, color, fc, mesh, rest.detach().clone(), W.clone(), betas, arch,
                    json.loads(json.dumps(asdict(cfg), default=str)), stats, body.name)
    ckpt.clear()
    return avatar


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    from skimage.transform import resize

    out = resize(img, (h, w) + img.shape[2:], anti_aliasing=True, preserve_range=True)
    return out.round().astype(np.uint8) if img.dtype == np.uint8 else out.astype(img.dtype)


def evaluate_holdout(avatar: Avatar, recon: Recon, tracks: Tracks | None, held: list[int], body: BodyModel,
                     cfg: AvatarConfig, logger: RunLogger | None = None,
                     out_dir: Path | None = None) -> dict:
    """Held-out metrics: Chamfer (cm) to the frames' reconstructions; PSNR/SSIM vs input frames in the mask.

    ``pose_correction`` in the result: whether the pose-dependent correction is kept (``cfg.select_correction``:
    only if it does not raise the held-out Chamfer; else the avatar's current choice); the metrics use it.
    """
    from foundation.render import render_mesh

    if not held:
        return {}
    params = recon.params[torch.tensor(held)]
    faces = avatar.mesh.faces
    lbs = avatar.pose(params, body, correct=False)
    corrected_too = cfg.select_correction or bool(avatar.arch.get("pose_correction", True))
    verts = avatar.pose(params, body, correct=True) if corrected_too else lbs

    def chamfers(posed: torch.Tensor) -> list[float]:
        return [chamfer_cm(posed[k].numpy(), faces.numpy(), recon.frames[i].verts, recon.frames[i].faces, n=10000)
                for k, i in enumerate(held)]

    ch_lbs = chamfers(lbs)
    ch = chamfers(verts) if corrected_too else ch_lbs
    corrected = {"holdout_chamfer_cm_corrected": float(np.mean(ch)), "holdout_chamfer_cm_lbs": float(np.mean(ch_lbs))}
    keep = bool(avatar.arch.get("pose_correction", True))
    if cfg.select_correction:
        keep = bool(np.mean(ch) <= np.mean(ch_lbs))
        log.info("avatar: pose-dependent correction %s (held-out Chamfer %.3f cm with, %.3f cm without)",
                 "kept" if keep else "switched off", np.mean(ch), np.mean(ch_lbs))
    if not keep:
        verts, ch = lbs, ch_lbs
    ps, ss = [], []
    poses = params.full_pose()
    for k, i in enumerate(held):
        fr = recon.frames[i]
        if tracks is None or not (0 <= fr.frame < len(tracks.images)):
            continue
        cam = tracks.camera
        s = min(1.0, cfg.eval_max_side / max(cam.width, cam.height))
        cam = cam.resized(max(1, round(cam.width * s)), max(1, round(cam.height * s)))
        img, _ = render_mesh(verts[k], faces, cam, avatar.render_colors(poses[k], correct=keep), shading="flat",
                             background=(0, 0, 0))
        ref = _resize(tracks.images[fr.frame], cam.height, cam.width)
        mask = _resize(tracks.masks[fr.frame].astype(np.float32), cam.height, cam.width) > 0.5
        if mask.any():
            m = image_metrics(img, ref, mask)
            ps.append(m["psnr"]), ss.append(m["ssim"])
        if logger is not None:
            logger.log_image(f"avatar/holdout_{i:03d}", np.concatenate([ref, img], 1))
    out = {"holdout_frames": held, "holdout_chamfer_cm": float(np.mean(ch)), **corrected, "pose_correction": keep}
    if ps:
        out.update(holdout_psnr=float(np.mean(ps)), holdout_ssim=float(np.mean(ss)))
    return out


def run_avatar(tracks: Tracks, recon: Recon, cfg: AvatarConfig, body: BodyModel, out_dir: Path,
               logger: RunLogger | None = None) -> Avatar:
    """Stage entry (called by the pipeline): train on non-held-out frames, evaluate on held-out ones.

    Args:
        tracks: ``Tracks`` (images, masks, camera; may be None: no image metrics).
        recon: ``Recon`` with per-frame clothed surfaces and refined params (one row per frame);
            only its frames are used (frames without a person were never reconstructed).
        out_dir: the stage's temporary output directory (renders are written there).
    Returns:
        the trained :class:`Avatar` (the pipeline saves it into ``out_dir``).
    """
    from foundation.render import front_camera, render_mesh

    n = len(recon.frames)  # Recon guarantees n >= 1 and one parameter row per frame
    if recon.params.betas.shape[1] != body.num_betas:
        raise ValueError(f"avatar stage: recon betas have {recon.params.betas.shape[1]} entries, the body model "
                         f"{body.num_betas}; use the body model the reconstruction was made with")
    out_dir = Path(out_dir)
    train, held = _split(n, cfg.holdout_every, cfg.max_train_frames)
    ckpt_dir = cfg.checkpoint_dir or (out_dir.parent / ".avatar_checkpoint")
    log.info("avatar: training on %d frames, %d held out", len(train), len(held))
    avatar = train_avatar(recon, cfg, body, logger, ckpt_dir, train)
    with torch_threads(cfg.threads):
        held_out = evaluate_holdout(avatar, recon, tracks, held, body, cfg.effective(), logger, out_dir)
    arch = {**avatar.arch, "pose_correction": held_out["pose_correction"]} if held_out else avatar.arch
    avatar = dataclasses.replace(avatar, arch=arch, stats={**avatar.stats, **held_out})
    if not held:
        log.info("avatar: %d reconstructed frames are too few to hold any out: no held-out metrics", n)
    vf = cfg.effective().video_fit
    if vf.enabled and tracks is not None:
        with torch_threads(cfg.threads):
            fitted = fit_avatar_to_video(avatar, tracks, recon, train, body, vf, progress=True)
            if fitted is not avatar:
                fused = {f"fusion_{k}": v for k, v in held_out.items() if k.startswith("holdout_")}
                if "pose_correction" in held_out:
                    fused["fusion_pose_correction"] = held_out["pose_correction"]
                ev = dataclasses.replace(cfg.effective(), select_correction=False)
                held_fit = evaluate_holdout(fitted, recon, tracks, held, body, ev, logger, out_dir)
                avatar = dataclasses.replace(fitted, stats={**fitted.stats, **fused, **held_fit})
                if held_fit:
                    log.info("avatar: held-out PSNR fusion %.2f -> fitted %.2f dB",
                             held_out.get("holdout_psnr", float("nan")), held_fit.get("holdout_psnr", float("nan")))
    log.info("avatar: %s", {k: v for k, v in avatar.stats.items() if isinstance(v, float)})
    if logger is not None:
        logger.log_scalars({f"avatar/{k}": v for k, v in avatar.stats.items() if isinstance(v, float)})
        v, f = avatar.mesh.verts, avatar.mesh.faces
        cam = front_camera(v.numpy(), 384)
        img_c, _ = render_mesh(v, f, cam, avatar.render_colors())
        img_n, _ = render_mesh(v, f, cam, shading="normals")
        logger.log_image("avatar/canonical", np.concatenate([img_c, img_n], 1))
        logger.log_mesh("avatar/canonical_mesh", v, f)
        import imageio.v3 as iio

        iio.imwrite(out_dir / "canonical.png", np.concatenate([img_c, img_n], 1))
    return avatar
