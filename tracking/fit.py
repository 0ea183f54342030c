"""SMPL-X fitting to 2D keypoints (and silhouettes) over a clip, batched over frames.

What is evaluated (joints by forward kinematics, markers for mediapipe landmarks that are not
SMPL-X joints, subsampled vertices, shape linearised around the current betas) is described in
:mod:`tracking.fit_body`; the loss terms in :mod:`tracking.fit_terms`.

Optimisation (Adam, all frames at once):

1. global orientation + translation with the body at rest, from ``num_yaw`` yaw hypotheses per
   frame, on the torso, hips, face and feet keypoints (the face and the feet tell a body turned by
   +a from one turned by -a, which the shoulders and hips alone do not); the per-frame choice is a
   Viterbi pass that penalises orientation jumps between frames.
2. body pose + shared betas + orientation + translation (+ the focal length, ``fit_focal``) on all
   keypoints, with a quadratic pose prior, joint-angle limits (knees, elbows), a betas prior and
   temporal smoothness (velocity and acceleration of 3D joints, acceleration of pose parameters).
3. (optional) silhouette: projected subsampled vertices must fall inside the person mask and the
   mask boundary must be covered (clothes make the mask larger than the body: keep it weak).

Camera: one perspective camera per clip, at the world origin looking along world -Z with +Y up
(OpenCV rotation ``diag(1, -1, -1)``), focal from ``fov_deg`` over the longer image side unless
given, refined in stage 2 with ``fit_focal`` (a log-normal prior around the initial value); after
fitting, the world is re-centred on the mean body translation (camera moved accordingly) so the body
sits near the world origin. A tilted real camera shows up as a tilted body orientation.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import roma
import torch

from foundation.body.model import BodyModel
from foundation.body.params import SMPLXParams
from foundation.camera import Camera
from foundation.io.frames import FrameSeq
from foundation.threads import torch_threads
from tracking.fit_body import (  # noqa: F401  (re-exported: the fitter's public names)
    FIT_JOINTS, GLOBAL_GROUPS, KEYPOINT_NAMES, KEYPOINTS, MARKERS, FitBody, project, project_keypoints,
)
from tracking.fit_terms import Problem, initial_transl, robust, run_adam, run_lbfgs, viterbi, yaw_rotation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitConfig:
    """SMPL-X fitting options.

    Attributes:
        fov_deg: camera field of view across the longer image side (used if ``focal_px`` is None).
        focal_px: focal length in pixels; None estimates it from ``fov_deg``.
        fit_focal: refine the focal length in stage 2 (one per clip).
        w_focal: log-normal prior on the focal refinement (squared log ratio).
        body_height_m: assumed standing height, metres, for the initial depth when the torso is
            not visible.
        num_yaw: yaw hypotheses of stage 1 (evenly spaced over 360 degrees).
        w_upright: stage 1 prior on the body's up axis staying along the world's (people stand
            upright, cameras are roughly level): ``w_upright * (1 - cos(tilt))`` per frame; with the
            body at rest, tilt and depth trade off otherwise. Stage 2 is free of it.
        iters_global, iters_pose, iters_silhouette: Adam iterations of stages 1, 2, 3
            (0 skips a stage; stage 3 also needs ``w_silhouette > 0``).
        lr_global, lr_pose, lr_betas, lr_transl, lr_focal: Adam learning rates (rad, rad, 1, metres,
            log focal).
        lr_final: learning rates decay (cosine) to this fraction over each stage.
        optimizer: stage 2's optimiser: "adam" or "lbfgs" (``iters_pose`` then counts objective
            evaluations; the learning rates act as variable scales).
        min_conf: keypoints with confidence below this are ignored.
        robust_sigma: Geman-McClure scale of the keypoint residual, as a fraction of the clip's
            median person height in pixels.
        w_torso, w_hips, w_limbs, w_face, w_feet, w_hands, w_knuckles: keypoint group weights
            (``knuckles``: the pose graph's index / pinky hand points, used where no hand was found).
        w_pose_prior: quadratic prior on body pose (per-joint weights in ``fit_terms.PRIOR``).
        w_limits: squared hinge on knee/elbow hyper-extension.
        w_betas: L2 prior on betas.
        w_vel, w_acc: temporal smoothness on 3D joint velocity / acceleration (metres per sampled frame).
        w_pose_acc: temporal smoothness on the acceleration of pose parameters (radians per sampled frame).
            1e-3 / 1e-4 (10x weaker than before 2026-12-04): the fitted avatar posed by the tracked poses
            matches the person masks better at both 6 and 30 fps on the real clips (studio / taiji at 6 fps,
            mask IoU over all frames 0.722 / 0.842 -> 0.735 / 0.851; 30 fps 0.786 / 0.881 -> 0.788 / 0.879),
            and the synthetic benchmark's PA-MPJPE is 35.4 -> 35.2 mm; 10x stronger still hurts at 30 fps.
        w_silhouette: weight of the silhouette term (0 disables stage 3).
        silhouette_coverage: relative weight of "mask boundary covered by the body" vs
            "body inside the mask" (clothes make the mask larger than the body: keep < 1).
        silhouette_vertices: subsampled body vertices for the silhouette term.
        silhouette_points: mask boundary points per frame for the coverage term.
        silhouette_res: long side, pixels, of the distance transforms.
        fit_betas: optimise the shared betas (else keep zeros).
        yaw_switch_cost: Viterbi cost per radian of orientation change between frames (stage 1).
        seed: RNG seed for vertex / point subsampling.
        num_threads: torch threads while fitting (the tensors are small: 1 is fastest).
        progress: show tqdm progress bars.
    """

    fov_deg: float = 50.0
    focal_px: float | None = None
    fit_focal: bool = False
    w_focal: float = 0.1
    body_height_m: float = 1.7
    num_yaw: int = 8
    w_upright: float = 0.5
    iters_global: int = 20
    iters_pose: int = 100
    iters_silhouette: int = 0
    lr_global: float = 0.05
    lr_pose: float = 0.08
    lr_betas: float = 0.05
    lr_transl: float = 0.02
    lr_focal: float = 0.02
    lr_final: float = 0.1
    optimizer: str = "lbfgs"
    min_conf: float = 0.3
    robust_sigma: float = 0.3
    w_torso: float = 1.0
    w_hips: float = 1.0
    w_limbs: float = 1.0
    w_face: float = 0.3
    w_feet: float = 0.5
    w_hands: float = 0.3
    w_knuckles: float = 0.2
    w_pose_prior: float = 2e-3
    w_limits: float = 1e-2
    w_betas: float = 1e-4
    w_vel: float = 0.0
    w_acc: float = 1e-3
    w_pose_acc: float = 1e-4
    w_silhouette: float = 1.0
    silhouette_coverage: float = 0.3
    silhouette_vertices: int = 400
    silhouette_points: int = 96
    silhouette_res: int = 160
    fit_betas: bool = True
    yaw_switch_cost: float = 0.5
    seed: int = 0
    num_threads: int = 1
    progress: bool = True

    def __post_init__(self):
        if self.focal_px is None and not 1.0 < self.fov_deg < 179.0:
            raise ValueError(f"FitConfig.fov_deg must be in (1, 179), got {self.fov_deg}")
        if self.focal_px is not None and not self.focal_px > 0:
            raise ValueError(f"FitConfig.focal_px must be > 0 or None, got {self.focal_px}")
        for name in ("iters_global", "iters_pose", "iters_silhouette"):
            if getattr(self, name) < 0:
                raise ValueError(f"FitConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.optimizer not in ("adam", "lbfgs"):
            raise ValueError(f"FitConfig.optimizer must be 'adam' or 'lbfgs', got {self.optimizer!r}")
        if self.num_yaw < 1:
            raise ValueError(f"FitConfig.num_yaw must be >= 1, got {self.num_yaw}")


@dataclass
class FitTargets:
    """What the fitter fits to, for T frames of an H x W clip.

    Attributes:
        keypoints: (T, K, 3) float32 pixel x, y, confidence in :data:`KEYPOINTS` order.
        masks: (T, H, W) float32 person masks in [0, 1], or None (no silhouette term).
        valid: (T,) bool frames with a person.
        image_size: (H, W) pixels.
    """

    keypoints: np.ndarray
    masks: FrameSeq | None
    valid: np.ndarray
    image_size: tuple[int, int]

    @staticmethod
    def from_detections(det) -> "FitTargets":
        """Gather the fitter's keypoints from a :class:`tracking.detect.Detections`.

        Where a hand was found (holistic), its wrist and knuckles replace the pose graph's wrist
        and index / pinky points; elsewhere those come from the pose graph.
        """
        T = len(det)
        src = {"body": det.body_kp, "lhand": det.lhand_kp, "rhand": det.rhand_kp}
        kp = np.zeros((T, len(KEYPOINTS), 3), np.float32)
        for k, (s, i, _, _, _) in enumerate(KEYPOINTS):
            kp[:, k] = src[s][:, i]
        names = KEYPOINT_NAMES
        for side, hand in (("left", "lhand"), ("right", "rhand")):
            found = src[hand][:, 0, 2] > 0
            for k in (names.index(f"{side}_wrist"), names.index(f"mp_{side}_index"), names.index(f"mp_{side}_pinky")):
                kp[found, k] = 0.0
        kp[~np.asarray(det.valid, bool)] = 0.0
        return FitTargets(kp, det.masks, np.asarray(det.valid, bool), det.image_size)


@dataclass
class FitResult:
    """Fitted clip.

    Attributes:
        params: SMPLXParams, B = T, world frame (betas equal on every row).
        camera: the clip's camera (world -> OpenCV camera).
        joints2d: (T, K, 2) model keypoints projected, pixels, :data:`KEYPOINTS` order.
        losses: final value of each loss term.
        seconds: wall time per stage.
    """

    params: SMPLXParams
    camera: Camera
    joints2d: np.ndarray
    losses: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def default_camera(image_size: tuple[int, int], cfg: FitConfig) -> Camera:
    """The clip camera: at the world origin, looking along -Z, +Y up (body facing it at zero orientation)."""
    H, W = image_size
    f = cfg.focal_px or 0.5 * max(H, W) / math.tan(math.radians(cfg.fov_deg) / 2)
    R = ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0))
    return Camera(W, H, float(f), float(f), W / 2, H / 2, R, (0.0, 0.0, 0.0))


def pa_mpjpe(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Procrustes-aligned (rotation, translation, scale) mean per-joint position error.

    Args:
        pred, gt: (T, J, 3) joints, metres.
    Returns:
        (T,) error per frame, metres.
    """
    p = pred - pred.mean(1, keepdim=True)
    g = gt - gt.mean(1, keepdim=True)
    U, S, Vh = torch.linalg.svd(p.transpose(1, 2) @ g)
    d = torch.sign(torch.linalg.det(U @ Vh))
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    R = U @ D @ Vh  # p @ R ~ g
    s = (S * torch.diagonal(D, dim1=1, dim2=2)).sum(-1) / (p ** 2).sum((1, 2))
    return ((s[:, None, None] * p @ R - g).norm(dim=-1)).mean(-1)


def fit_clip(targets: FitTargets, body: BodyModel, cfg: FitConfig = FitConfig(),
             camera: Camera | None = None) -> FitResult:
    """Fit SMPL-X parameters to a clip's keypoints (and masks).

    Args:
        targets: keypoints (T, K, 3) in :data:`KEYPOINTS` order (pixels + confidence), masks,
            valid frames (see :class:`FitTargets`). Frames without keypoints are filled in by
            the temporal terms.
        body: the body model (any backend).
        cfg: options.
        camera: the clip camera; default :func:`default_camera` (OpenCV, world +Y up). Its focal
            length is refined if ``cfg.fit_focal``.

    Returns:
        :class:`FitResult` with world-frame parameters (B = T) and the (re-centred) camera.
    """
    with torch_threads(cfg.num_threads):  # small tensors: extra threads only add sync overhead
        return _fit_clip(targets, body, cfg, camera)


def _global_stage(p: Problem, fb: FitBody, cfg: FitConfig, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 1: (T, 3, 3) orientation and (T, 3) translation of the body at rest, yaw hypotheses + Viterbi.

    Each frame's hypotheses are independent until the Viterbi pass, so they are optimised ``chunk`` frames at
    a time (memory bounded in the clip length; Adam is invariant to the loss's per-chunk scale).
    """
    T = p.T
    rest_j = fb.rest(fb.beta0)[0]
    transl0 = initial_transl(p, torch.zeros(55, 3).index_copy(0, torch.tensor(fb.joints), rest_j),
                             cfg.body_height_m)
    Rs, ts, cs = [], [], []
    for s in range(0, T, chunk):
        R, t, c = _global_chunk(p, fb, cfg, transl0, slice(s, min(s + chunk, T)))
        Rs.append(R), ts.append(t), cs.append(c)
    R, transl, c = torch.cat(Rs, 1), torch.cat(ts, 1), np.concatenate(cs, 0)  # (H, T, 3, 3), (H, T, 3), (T, H)
    choice = viterbi(c, R.transpose(0, 1), cfg.yaw_switch_cost)
    tt = torch.arange(T)
    return R[choice, tt].clone(), transl[choice, tt].clone()


def _global_chunk(p: Problem, fb: FitBody, cfg: FitConfig, transl0: torch.Tensor, sl: slice):
    """Stage 1 on frames ``sl``: (H, t, 3, 3) rotations, (H, t, 3) translations, (t, H) costs per hypothesis."""
    cam = p.cam
    uv, w = p.uv[sl], p.w[sl]
    T = uv.shape[0]
    nh = cfg.num_yaw
    R0 = torch.stack([yaw_rotation(2 * math.pi * k / nh) for k in range(nh)]).repeat_interleave(T, 0)  # (H*T, 3, 3)
    delta = torch.zeros(nh * T, 3, requires_grad=True)
    transl = transl0[sl].repeat(nh, 1).clone().requires_grad_(True)
    zero_pose = torch.eye(3).expand(nh * T, 21, 3, 3)
    betas0 = fb.beta0.clone()
    use = torch.tensor([k[4] in GLOBAL_GROUPS for k in KEYPOINTS], dtype=torch.float32)
    w1 = (w * use).repeat(nh, 1)
    uv1 = uv.repeat(nh, 1, 1)
    # feet: heel -> toe vectors (at rest they point where the body faces, whatever the legs do)
    heel = [KEYPOINT_NAMES.index(f"{s}_heel") for s in ("left", "right")]
    toe = [KEYPOINT_NAMES.index(f"{s}_toe") for s in ("left", "right")]
    foot_uv = (uv[:, toe] - uv[:, heel]).repeat(nh, 1, 1)  # (H*T, 2, 2)
    foot_w = torch.minimum(w[:, toe], w[:, heel]).repeat(nh, 1)  # feet group weight included

    def cost():
        R = R0 @ roma.rotvec_to_rotmat(delta)
        J, M = fb.pose(R, zero_pose, betas0, transl)
        pred = project(torch.cat([J, M], 1)[:, p.sel], cam)
        r2 = ((pred - uv1) / p.scale).square().sum(-1)
        f2 = ((pred[:, toe] - pred[:, heel] - foot_uv) / p.scale).square().sum(-1)
        upright = cfg.w_upright * (1.0 - R[:, 1, 1])  # body up axis vs world up (a level camera)
        return R, (w1 * robust(r2, cfg.robust_sigma)).sum(-1) + (foot_w * robust(f2, cfg.robust_sigma)).sum(-1) + upright

    if cfg.iters_global > 0:
        run_adam("global", [{"params": [delta], "lr": cfg.lr_global}, {"params": [transl], "lr": cfg.lr_transl}],
                 lambda: {"kp_global": cost()[1].mean() * nh}, cfg.iters_global, cfg.lr_final, cfg.progress)
    with torch.no_grad():
        R, c = cost()
        c = c.reshape(nh, T).T.numpy() / max(cfg.robust_sigma ** 2, 1e-12)
        return R.reshape(nh, T, 3, 3), transl.detach().reshape(nh, T, 3), c


def _fit_clip(targets: FitTargets, body: BodyModel, cfg: FitConfig, camera: Camera | None) -> FitResult:
    T = targets.keypoints.shape[0]
    if T == 0:
        raise ValueError("fit_clip: the clip has no frames")
    if targets.keypoints.shape[1:] != (len(KEYPOINTS), 3):
        raise ValueError(f"fit_clip: keypoints must be (T, {len(KEYPOINTS)}, 3), got {targets.keypoints.shape}")
    if camera is not None and camera.ortho:
        raise ValueError("fit_clip: the fitter needs a perspective camera")
    cam = camera or default_camera(targets.image_size, cfg)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    fb = FitBody(body, cfg.silhouette_vertices, cfg.seed)
    p = Problem(targets.keypoints, fb, cam, cfg)
    ne = fb.num_eff
    seconds["setup"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    R_init, transl_init = _global_stage(p, fb, cfg)
    seconds["global"] = time.perf_counter() - t0

    # ---- stage 2: body pose + betas (+ focal) on all keypoints, priors, temporal smoothness
    t0 = time.perf_counter()
    delta = torch.zeros(T, 3, requires_grad=True)
    transl = transl_init.clone().requires_grad_(True)
    body_aa = torch.zeros(T, 21, 3, requires_grad=True)
    betas = fb.beta0.clone().requires_grad_(cfg.fit_betas)
    log_f = torch.zeros((), requires_grad=cfg.fit_focal)

    def objective(with_sil: bool):
        R = R_init @ roma.rotvec_to_rotmat(delta)
        out = fb.pose(R, roma.rotvec_to_rotmat(body_aa), betas, transl, with_verts=with_sil)
        J, M = out[0], out[1]
        focal = log_f.exp() if cfg.fit_focal else None
        terms = {"kp": p.keypoints(J, M, focal).mean()}
        terms.update(p.priors(body_aa, betas))
        terms.update(p.temporal(J, body_aa, R))
        if cfg.fit_focal:
            terms["focal"] = cfg.w_focal * log_f.square()
        if with_sil:
            terms["silhouette"] = cfg.w_silhouette * p.silhouette(out[2], focal)
        return terms

    groups = [{"params": [delta], "lr": cfg.lr_pose}, {"params": [body_aa], "lr": cfg.lr_pose},
              {"params": [transl], "lr": cfg.lr_transl}]
    if cfg.fit_betas:
        groups.append({"params": [betas], "lr": cfg.lr_betas})
    if cfg.fit_focal:
        groups.append({"params": [log_f], "lr": cfg.lr_focal})
    losses: dict[str, float] = {}
    if cfg.iters_pose > 0 and cfg.optimizer == "lbfgs":
        losses = run_lbfgs("pose", groups, lambda: objective(False), cfg.iters_pose, cfg.progress)
    elif cfg.iters_pose > 0:
        losses = run_adam("pose", groups, lambda: objective(False), cfg.iters_pose, cfg.lr_final, cfg.progress)
    seconds["pose"] = time.perf_counter() - t0

    # ---- stage 3: silhouette
    t0 = time.perf_counter()
    if cfg.iters_silhouette > 0 and cfg.w_silhouette > 0 and targets.masks is not None:
        if cfg.fit_betas:  # re-linearise the shape model around the current betas
            full = torch.zeros(1, fb.num_betas)
            full[:, :ne] = betas.detach()
            fb.linearize(full)
        if p.setup_silhouette(targets.masks, np.asarray(targets.valid, bool)):
            losses = run_adam("silhouette", groups, lambda: objective(True), cfg.iters_silhouette, cfg.lr_final,
                              cfg.progress)
    seconds["silhouette"] = time.perf_counter() - t0

    with torch.no_grad():
        if cfg.fit_focal:
            s = float(log_f.exp())
            cam = replace(cam, fx=cam.fx * s, fy=cam.fy * s)
        R = R_init @ roma.rotvec_to_rotmat(delta)
        J, M = fb.pose(R, roma.rotvec_to_rotmat(body_aa), betas, transl)
        joints2d = project(torch.cat([J, M], 1)[:, p.sel], cam).numpy()
        # re-centre the world on the mean body position (camera moved accordingly)
        c = transl.mean(0)
        Rc, tc = cam.R_t()
        cam = replace(cam, t=tuple((tc + Rc @ c).tolist()))
        params = SMPLXParams.zeros(T, body.num_betas, body.num_expression)
        params.global_orient = roma.rotmat_to_rotvec(R)
        params.body_pose = body_aa.detach().clone()
        params.betas[:, :ne] = betas.detach()
        params.transl = transl.detach() - c
    log.info("fit %d frames: %s (%s)", T, ", ".join(f"{k}={v:.3g}" for k, v in losses.items()),
             ", ".join(f"{k} {v:.2f}s" for k, v in seconds.items()))
    return FitResult(params, cam, joints2d, losses, seconds)
