"""Loss terms, initialisation and optimiser loops of the clip fitter (:mod:`tracking.fit`).

Terms (per frame unless noted), on pixel residuals divided by the clip's median person height:

* keypoints: Geman-McClure robust squared residual, weighted by the landmark confidence and group;
* priors: quadratic pose prior around the rest pose (per-joint weights; not in a gap between frames with
  keypoints, which the temporal terms fill alone), squared hinge on knee / elbow hyper-extension, L2 on betas;
* temporal: velocity and acceleration of the 3D joints, acceleration of the pose parameters;
* silhouette: projected subsampled body vertices must fall inside the person mask (distance
  transform, bilinear lookup) and the mask boundary must be covered (2D chamfer).
"""

from __future__ import annotations

import math

import numpy as np
import roma
import torch
from scipy.ndimage import distance_transform_edt
from tqdm.auto import tqdm

from foundation.body.skeleton import JOINT_INDEX as JI
from foundation.body.skeleton import SMPLX_JOINT_NAMES
from foundation.camera import Camera
from tracking.fit_body import KEYPOINT_NAMES, KEYPOINTS, TORSO_KEYPOINTS, FitBody, project

# Per body-pose joint (1..21) and axis: quadratic prior weights (x, y, z) around the rest pose.
# Stiff: spine, collars, feet; knees/elbows: hinge axes free (knee x, elbow y), others stiff.
PRIOR = {
    "left_hip": (1, 1, 1), "right_hip": (1, 1, 1), "spine1": (3, 3, 3), "left_knee": (0.3, 6, 6),
    "right_knee": (0.3, 6, 6), "spine2": (3, 3, 3), "left_ankle": (2, 2, 2), "right_ankle": (2, 2, 2),
    "spine3": (3, 3, 3), "left_foot": (6, 6, 6), "right_foot": (6, 6, 6), "neck": (2, 2, 2),
    "left_collar": (6, 6, 6), "right_collar": (6, 6, 6), "head": (1, 1, 1), "left_shoulder": (0.5, 0.5, 0.5),
    "right_shoulder": (0.5, 0.5, 0.5), "left_elbow": (1, 0.3, 2), "right_elbow": (1, 0.3, 2),
    "left_wrist": (1, 1, 1), "right_wrist": (1, 1, 1),
}  # fmt: skip
# Joint-angle limits as (joint, axis, sign): penalise sign * angle < 0 (squared hinge).
# Knees flex about +x; the left elbow flexes about -y, the right about +y (SMPL-X T-pose frame).
LIMITS = (("left_knee", 0, 1.0), ("right_knee", 0, 1.0), ("left_elbow", 1, -1.0), ("right_elbow", 1, 1.0))


def robust(r2: torch.Tensor, sigma: float) -> torch.Tensor:
    """Geman-McClure on squared residuals: sigma^2 r2 / (sigma^2 + r2)."""
    s2 = sigma * sigma
    return s2 * r2 / (s2 + r2)


def yaw_rotation(a: float) -> torch.Tensor:
    """(3, 3) rotation by ``a`` radians about world +Y."""
    return roma.rotvec_to_rotmat(torch.tensor([0.0, a, 0.0]))


class Problem:
    """Targets in tensor form and the loss terms shared by the fitting stages.

    Args:
        keypoints: (T, K, 3) pixel x, y, confidence in :data:`KEYPOINTS` order.
        fb: the evaluated body; cam: the clip camera; cfg: :class:`tracking.fit.FitConfig`.
    """

    def __init__(self, keypoints: np.ndarray, fb: FitBody, cam: Camera, cfg):
        self.cfg, self.fb, self.cam = cfg, fb, cam
        kp = torch.from_numpy(np.asarray(keypoints, np.float32))
        self.T = kp.shape[0]
        self.uv = kp[..., :2]
        conf = kp[..., 2] * (kp[..., 2] >= cfg.min_conf)
        gw = {"torso": cfg.w_torso, "hips": cfg.w_hips, "limbs": cfg.w_limbs, "face": cfg.w_face,
              "feet": cfg.w_feet, "hands": cfg.w_hands, "knuckles": cfg.w_knuckles}
        self.w = conf * torch.tensor([gw[k[4]] for k in KEYPOINTS])  # (T, K)
        self.sel = fb.selection()
        # clip scale: median person height in pixels (keypoint extent)
        heights = []
        for t in range(self.T):
            ok = self.w[t] > 0
            if ok.sum() >= 4:
                heights.append(float(self.uv[t, ok, 1].max() - self.uv[t, ok, 1].min()))
        self.scale = max(float(np.median(heights)) if heights else 0.5 * cam.height, 8.0)
        self.prior_w = torch.tensor([PRIOR[n] for n in SMPLX_JOINT_NAMES[1:22]], dtype=torch.float32)  # (21, 3)
        # (T,) per-frame weight of the pose prior: 0 in a gap between frames with keypoints (the temporal
        # terms interpolate it alone; the prior would pull the gap towards the rest pose), 1 elsewhere
        seen = np.flatnonzero((self.w > 0).any(-1).numpy())
        self.prior_frames = torch.ones(self.T)
        if len(seen):
            gap = torch.zeros(self.T, dtype=torch.bool)
            gap[int(seen[0]): int(seen[-1]) + 1] = True
            gap[torch.from_numpy(seen)] = False
            self.prior_frames[gap] = 0.0
        self.sil = None

    # ---------------------------------------------------------------- terms
    def residuals(self, J: torch.Tensor, M: torch.Tensor, focal: torch.Tensor | None = None) -> torch.Tensor:
        """(T, K) squared keypoint residuals in units of the person height."""
        pred = project(torch.cat([J, M], 1)[:, self.sel], self.cam, focal)
        return ((pred - self.uv) / self.scale).square().sum(-1)

    def keypoints(self, J, M, focal=None, w=None) -> torch.Tensor:
        """(T,) robust keypoint loss per frame."""
        w = self.w if w is None else w
        return (w * robust(self.residuals(J, M, focal), self.cfg.robust_sigma)).sum(-1)

    def priors(self, body_aa: torch.Tensor, betas: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        per_frame = (self.prior_w * body_aa.square()).sum((1, 2))
        out = {"pose_prior": cfg.w_pose_prior * (self.prior_frames * per_frame).mean()}
        lim = 0.0
        for name, axis, sign in LIMITS:
            a = body_aa[:, JI[name] - 1, axis] * sign
            lim = lim + torch.relu(-a).square().mean()
        out["limits"] = cfg.w_limits * lim
        out["betas"] = cfg.w_betas * betas.square().sum()
        return out

    def temporal(self, J: torch.Tensor, body_aa: torch.Tensor, R: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        if self.T < 3:
            return {}
        vel = J[1:] - J[:-1]
        acc = J[2:] - 2 * J[1:-1] + J[:-2]
        pacc = body_aa[2:] - 2 * body_aa[1:-1] + body_aa[:-2]
        racc = R[2:] - 2 * R[1:-1] + R[:-2]
        return {"vel": cfg.w_vel * vel.square().sum(-1).mean() * J.shape[1],
                "acc": cfg.w_acc * acc.square().sum(-1).mean() * J.shape[1],
                "pose_acc": cfg.w_pose_acc * (pacc.square().sum((1, 2)).mean() + racc.square().sum((1, 2)).mean())}

    def setup_silhouette(self, masks, valid: np.ndarray) -> bool:
        """Distance transforms (outside the mask) and boundary samples at reduced resolution.

        Args:
            masks: (T, H, W) float32 person masks in [0, 1] (array or frame store: read a frame at a time);
                valid: (T,) bool.
        Returns:
            whether any frame has a usable mask.
        """
        import cv2

        cfg = self.cfg
        T, H, W = masks.shape
        s = min(1.0, cfg.silhouette_res / max(H, W))
        h, w = max(2, round(H * s)), max(2, round(W * s))
        dts = np.zeros((T, 1, h, w), np.float32)
        pts = np.zeros((T, cfg.silhouette_points, 2), np.float32)
        pw = np.zeros((T, cfg.silhouette_points), np.float32)
        fw = np.zeros(T, np.float32)
        rng = np.random.default_rng(cfg.seed)
        for t in range(T):
            if not valid[t]:
                continue
            m = cv2.resize(np.asarray(masks[t], np.float32), (w, h), interpolation=cv2.INTER_AREA) > 0.5
            if m.sum() < 16:
                continue
            dts[t, 0] = distance_transform_edt(~m) * (W / w) / self.scale
            edge = m & ~cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            yx = np.argwhere(edge)
            k = min(len(yx), cfg.silhouette_points)
            pick = yx[rng.choice(len(yx), k, replace=False)]
            pts[t, :k] = (pick[:, ::-1] + 0.5) * np.array([W / w, H / h])
            pw[t, :k] = 1.0
            fw[t] = 1.0
        self.sil = tuple(torch.from_numpy(a) for a in (dts, pts, pw, fw))
        return bool(fw.sum() > 0)

    def silhouette(self, V: torch.Tensor, focal: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar silhouette loss of (T, S, 3) world vertices."""
        dts, pts, pw, fw = self.sil
        uv = project(V, self.cam, focal)  # (T, S, 2)
        g = torch.stack([uv[..., 0] / self.cam.width * 2 - 1, uv[..., 1] / self.cam.height * 2 - 1], -1)
        d = torch.nn.functional.grid_sample(dts, g[:, None], mode="bilinear", padding_mode="border",
                                            align_corners=False)[:, 0, 0]  # (T, S)
        inside = d.square().mean(-1)
        near = torch.cdist(pts, uv).min(-1).values / self.scale  # (T, P)
        cover = (near.square() * pw).sum(-1) / pw.sum(-1).clamp(min=1)
        n = fw.sum().clamp(min=1)
        return ((inside + self.cfg.silhouette_coverage * cover) * fw).sum() / n


def initial_transl(p: Problem, rest_j: torch.Tensor, body_height_m: float) -> torch.Tensor:
    """(T, 3) world translation placing the pelvis on the hip-centre ray, at a depth from the torso size.

    Args:
        p: the problem; rest_j: (55, 3) rest joints (SMPL-X order) of the current betas.
        body_height_m: assumed standing height for frames without a visible torso.
    """
    cam = p.cam
    ix = {n: KEYPOINT_NAMES.index(n) for n in TORSO_KEYPOINTS}
    torso3d = float(((rest_j[JI["left_shoulder"]] + rest_j[JI["right_shoulder"]]) / 2
                     - (rest_j[JI["left_hip"]] + rest_j[JI["right_hip"]]) / 2).norm())
    depth = np.full(p.T, np.nan)
    centre = np.full((p.T, 2), np.nan)
    for t in range(p.T):
        ok = p.w[t] > 0
        if all(ok[ix[n]] for n in TORSO_KEYPOINTS):
            sh = (p.uv[t, ix["mp_left_shoulder"]] + p.uv[t, ix["mp_right_shoulder"]]) / 2
            hp = (p.uv[t, ix["mp_left_hip"]] + p.uv[t, ix["mp_right_hip"]]) / 2
            depth[t] = cam.fy * torso3d / max(float((sh - hp).norm()), 1.0)
            centre[t] = hp.numpy()
        elif ok.sum() >= 2:
            ext = float(p.uv[t, ok, 1].max() - p.uv[t, ok, 1].min())
            depth[t] = cam.fy * body_height_m / max(ext, 0.3 * p.scale)
            centre[t] = p.uv[t, ok].mean(0).numpy()
    good = np.isfinite(depth)
    if not good.any():
        depth[:] = cam.fy * body_height_m / p.scale
        centre[:] = (cam.cx, cam.cy)
    else:
        tt = np.arange(p.T)
        depth = np.interp(tt, tt[good], depth[good])
        centre = np.stack([np.interp(tt, tt[good], centre[good, k]) for k in range(2)], 1)
    x = (centre[:, 0] - cam.cx) / cam.fx * depth
    y = (centre[:, 1] - cam.cy) / cam.fy * depth
    pc = torch.tensor(np.stack([x, y, depth], 1), dtype=torch.float32)
    R, t = cam.R_t()
    pelvis = (pc - t) @ R  # camera -> world
    return pelvis - rest_j[0]


def viterbi(cost: np.ndarray, R: torch.Tensor, switch: float) -> np.ndarray:
    """Per-frame hypothesis choice. cost: (T, H); R: (T, H, 3, 3) rotations. Returns (T,) indices.

    Minimises the sum of the per-frame costs plus ``switch`` times the rotation angle (radians)
    between consecutive frames' choices.
    """
    T, Hn = cost.shape
    acc = cost[0].copy()
    back = np.zeros((T, Hn), np.int64)
    for t in range(1, T):
        rel = R[t - 1][:, None].transpose(-1, -2) @ R[t][None]  # (H, H, 3, 3)
        ang = roma.rotmat_to_rotvec(rel).norm(dim=-1).numpy()
        tot = acc[:, None] + switch * ang
        back[t] = tot.argmin(0)
        acc = tot.min(0) + cost[t]
    path = np.zeros(T, np.int64)
    path[-1] = int(acc.argmin())
    for t in range(T - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def run_adam(name: str, groups: list[dict], closure, iters: int, lr_final: float, progress: bool
             ) -> dict[str, float]:
    """``iters`` Adam steps on ``closure() -> dict of loss terms``, cosine decay to ``lr_final * lr``."""
    opt = torch.optim.Adam(groups)
    base = [g["lr"] for g in opt.param_groups]
    terms: dict[str, torch.Tensor] = {}
    for i in tqdm(range(iters), desc=f"fit {name}", unit="it", leave=False, disable=not progress):
        k = lr_final + (1 - lr_final) * 0.5 * (1 + math.cos(math.pi * i / max(iters, 1)))
        for g, lr in zip(opt.param_groups, base):
            g["lr"] = lr * k
        opt.zero_grad(set_to_none=True)
        terms = closure()
        loss = sum(terms.values())
        loss.backward()
        opt.step()
    return {k: float(v.detach()) for k, v in terms.items()}


def run_lbfgs(name: str, groups: list[dict], closure, iters: int, progress: bool) -> dict[str, float]:
    """L-BFGS (strong Wolfe line search) with at most ``iters`` evaluations of ``closure``.

    Parameters of every group are optimised jointly; the groups' learning rates act as per-group
    variable scales (the optimiser sees ``x / lr``), which conditions angles vs metres vs betas.
    """
    params = [q for g in groups for q in g["params"]]
    scales = [g["lr"] for g in groups for _ in g["params"]]
    z = [(q.detach() / s).clone().requires_grad_(True) for q, s in zip(params, scales)]
    opt = torch.optim.LBFGS(z, lr=1.0, max_iter=iters, max_eval=iters, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-10, tolerance_change=1e-14)
    last: dict[str, torch.Tensor] = {}
    bar = tqdm(total=iters, desc=f"fit {name}", unit="it", leave=False, disable=not progress)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for q, zq, s in zip(params, z, scales):
                q.copy_(zq * s)
        for q in params:
            q.grad = None
        terms = closure()
        loss = sum(terms.values())
        loss.backward()
        for q, zq, s in zip(params, z, scales):
            zq.grad = torch.zeros_like(zq) if q.grad is None else q.grad * s
        last.update(terms)
        bar.update(1)
        return loss.detach()

    opt.step(step)
    with torch.no_grad():
        for q, zq, s in zip(params, z, scales):
            q.copy_(zq * s)
    bar.close()
    return {k: float(v.detach()) for k, v in last.items()}
