"""SMPL-X fitting to 2D keypoints and silhouettes over a clip, batched over frames.

Model. Each frame's body is posed through the body model's own kinematics (rest joints of the
shared ``betas``, local rotations, ``transl``), but only what the data can see is evaluated:

* the 22 body joints, the eyes and the finger base joints (MCP knuckles), by forward
  kinematics, vectorised per tree level (no vertices: cheap for hundreds of iterations);
* "virtual markers" for mediapipe landmarks that are surface points, not joints (nose, ears,
  heels, toe tips): body-model vertices chosen once on the rest mesh, rigidly attached to their
  dominant joint (exact LBS for vertices skinned to one joint, a close approximation otherwise);
* a few hundred subsampled vertices (LBS restricted to the same joints) for the silhouette term.

Rest joints and marker / silhouette vertices depend on ``betas`` through the backend (Anny's
phenotype network or SMPL-X blend shapes); they are linearised around the current betas by
finite differences (one batched ``body.rest`` call) at the start of each stage, so iterations
never run the full body model. For ``smplx`` the linearisation is exact.

Mediapipe keypoints vs SMPL-X joints: shoulders, elbows, wrists, knees and ankles map to the
joints; hips map to the SMPL-X hip joints with a low weight (mediapipe's hip landmarks lie lower
and more lateral than SMPL-X's hip joint centres); face and feet use the virtual markers above;
hand landmarks (wrist + 5 MCPs) map to the wrist and finger base joints, which orients the hand
with the fingers kept at rest.

Optimisation (Adam, all frames at once):

1. global orientation + translation from torso keypoints with the body at rest, from 4 yaw
   hypotheses per frame; the per-frame choice is made by a Viterbi pass that penalises
   orientation jumps between frames.
2. body pose + shared betas + orientation + translation on all keypoints, with a quadratic pose
   prior around the rest pose, joint-angle limits (knees, elbows), a betas prior and temporal
   smoothness (velocity and acceleration of 3D joints, acceleration of pose parameters).
3. (optional) silhouette: projected subsampled vertices must fall inside the person mask
   (distance transform lookup, bilinear) and the mask boundary must be covered (2D chamfer).

Camera: one perspective camera per clip, at the world origin looking along world -Z with +Y up
(OpenCV rotation ``diag(1, -1, -1)``), focal from ``fov_deg`` over the longer image side unless
given; after fitting, the world is re-centred on the mean body translation (camera moved
accordingly) so the body sits near the world origin.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field

import numpy as np
import roma
import torch
from scipy.ndimage import distance_transform_edt, zoom
from tqdm.auto import tqdm

from avatar.body.model import ANNY_BETA_TO_PHENOTYPE, BodyModel
from avatar.body.params import SMPLXParams
from avatar.body.skeleton import JOINT_INDEX as JI
from avatar.body.skeleton import SMPLX_JOINT_NAMES
from avatar.geometry.camera import Camera

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- keypoint layout
#: Joints evaluated by the fitter: body (0-21), eyes, finger bases (index/middle/pinky/ring/thumb 1).
FIT_JOINTS: tuple[int, ...] = tuple(range(22)) + (23, 24) + (25, 28, 31, 34, 37) + (40, 43, 46, 49, 52)
#: Virtual markers: name -> (how to pick the vertex on the rest mesh, side).
MARKERS = ("nose", "left_ear", "right_ear", "left_heel", "right_heel", "left_toe", "right_toe")

# (source, source index, target kind, target name, group); source: "body" (mediapipe pose, 33),
# "lhand"/"rhand" (mediapipe hand, 21); target kind: "joint" (SMPL-X joint) or "marker".
KEYPOINTS: tuple[tuple[str, int, str, str, str], ...] = (
    ("body", 0, "marker", "nose", "face"),
    ("body", 2, "joint", "left_eye", "face"), ("body", 5, "joint", "right_eye", "face"),
    ("body", 7, "marker", "left_ear", "face"), ("body", 8, "marker", "right_ear", "face"),
    ("body", 11, "joint", "left_shoulder", "torso"), ("body", 12, "joint", "right_shoulder", "torso"),
    ("body", 13, "joint", "left_elbow", "limbs"), ("body", 14, "joint", "right_elbow", "limbs"),
    ("body", 15, "joint", "left_wrist", "limbs"), ("body", 16, "joint", "right_wrist", "limbs"),
    ("body", 23, "joint", "left_hip", "hips"), ("body", 24, "joint", "right_hip", "hips"),
    ("body", 25, "joint", "left_knee", "limbs"), ("body", 26, "joint", "right_knee", "limbs"),
    ("body", 27, "joint", "left_ankle", "limbs"), ("body", 28, "joint", "right_ankle", "limbs"),
    ("body", 29, "marker", "left_heel", "feet"), ("body", 30, "marker", "right_heel", "feet"),
    ("body", 31, "marker", "left_toe", "feet"), ("body", 32, "marker", "right_toe", "feet"),
    *[(hand, mp, "joint", f"{side}_{name}", "hands")
      for hand, side in (("lhand", "left"), ("rhand", "right"))
      for mp, name in ((0, "wrist"), (5, "index1"), (9, "middle1"), (13, "ring1"), (17, "pinky1"), (2, "thumb1"))],
)  # fmt: skip
TORSO_KEYPOINTS = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")

# Per body-pose joint (1..21) and axis: quadratic prior weights (x, y, z) around the rest pose.
# Stiff: spine, collars, feet; knees/elbows: hinge axes free (knee x, elbow y), others stiff.
_PRIOR = {
    "left_hip": (1, 1, 1), "right_hip": (1, 1, 1), "spine1": (3, 3, 3), "left_knee": (0.3, 6, 6),
    "right_knee": (0.3, 6, 6), "spine2": (3, 3, 3), "left_ankle": (2, 2, 2), "right_ankle": (2, 2, 2),
    "spine3": (3, 3, 3), "left_foot": (6, 6, 6), "right_foot": (6, 6, 6), "neck": (2, 2, 2),
    "left_collar": (6, 6, 6), "right_collar": (6, 6, 6), "head": (1, 1, 1), "left_shoulder": (0.5, 0.5, 0.5),
    "right_shoulder": (0.5, 0.5, 0.5), "left_elbow": (1, 0.3, 2), "right_elbow": (1, 0.3, 2),
    "left_wrist": (1, 1, 1), "right_wrist": (1, 1, 1),
}  # fmt: skip
# Joint-angle limits as (joint, axis, sign): penalise sign * angle < 0 (squared hinge).
# Knees flex about +x; the left elbow flexes about -y, the right about +y (SMPL-X T-pose frame).
_LIMITS = (("left_knee", 0, 1.0), ("right_knee", 0, 1.0), ("left_elbow", 1, -1.0), ("right_elbow", 1, 1.0))


@dataclass(frozen=True)
class FitConfig:
    """SMPL-X fitting options.

    Attributes:
        fov_deg: camera field of view across the longer image side (used if ``focal_px`` is None).
        focal_px: focal length in pixels; None estimates it from ``fov_deg``.
        body_height_m: assumed standing height, metres, for the initial depth when the torso is
            not visible.
        iters_global, iters_pose, iters_silhouette: Adam iterations of stages 1, 2, 3
            (0 skips a stage; stage 3 also needs ``w_silhouette > 0``).
        lr_global, lr_pose, lr_betas, lr_transl: Adam learning rates (rad, rad, 1, metres).
        lr_final: learning rates decay (cosine) to this fraction over each stage.
        min_conf: keypoints with confidence below this are ignored.
        robust_sigma: Geman-McClure scale of the keypoint residual, as a fraction of the clip's
            median person height in pixels.
        w_torso, w_hips, w_limbs, w_face, w_feet, w_hands: keypoint group weights.
        w_pose_prior: quadratic prior on body pose (per-joint weights in ``_PRIOR``).
        w_limits: squared hinge on knee/elbow hyper-extension.
        w_betas: L2 prior on betas.
        w_vel, w_acc: temporal smoothness on 3D joint velocity / acceleration (metres per frame).
        w_pose_acc: temporal smoothness on the acceleration of pose parameters (radians).
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

    fov_deg: float = 55.0
    focal_px: float | None = None
    body_height_m: float = 1.7
    iters_global: int = 60
    iters_pose: int = 200
    iters_silhouette: int = 40
    lr_global: float = 0.05
    lr_pose: float = 0.08
    lr_betas: float = 0.05
    lr_transl: float = 0.02
    lr_final: float = 0.1
    optimizer: str = "adam"  # or "lbfgs"
    min_conf: float = 0.3
    robust_sigma: float = 0.3
    w_torso: float = 1.0
    w_hips: float = 0.5
    w_limbs: float = 1.0
    w_face: float = 0.3
    w_feet: float = 0.5
    w_hands: float = 0.3
    w_pose_prior: float = 2e-4
    w_limits: float = 1e-2
    w_betas: float = 1e-4
    w_vel: float = 1e-3
    w_acc: float = 1e-1
    w_pose_acc: float = 1e-3
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
    masks: np.ndarray | None
    valid: np.ndarray
    image_size: tuple[int, int]

    @staticmethod
    def from_detections(det) -> "FitTargets":
        """Gather the fitter's keypoints from a :class:`tracking.detect.Detections`.

        The wrist comes from the hand landmarks when the hand was found (then also the
        MCP knuckles), else from the pose landmarks.
        """
        T = len(det)
        src = {"body": det.body_kp, "lhand": det.lhand_kp, "rhand": det.rhand_kp}
        kp = np.zeros((T, len(KEYPOINTS), 3), np.float32)
        for k, (s, i, _, _, _) in enumerate(KEYPOINTS):
            kp[:, k] = src[s][:, i]
        names = [k[3] for k in KEYPOINTS]
        for side in ("left", "right"):
            body_k, hand_k = names.index(f"{side}_wrist"), len(names) - 1 - names[::-1].index(f"{side}_wrist")
            found = kp[:, hand_k, 2] > 0
            kp[found, body_k] = 0.0  # use the hand's wrist where the hand was found
        kp[~np.asarray(det.valid, bool)] = 0.0
        return FitTargets(kp, np.asarray(det.masks, np.float32), np.asarray(det.valid, bool), det.image_size)


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


@contextlib.contextmanager
def torch_threads(n: int):
    """Run a block with ``n`` torch intra-op threads (restored afterwards)."""
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(old)


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


# ----------------------------------------------------------------------------- body evaluation
class _FitBody:
    """Cheap evaluation of joints, markers and subsampled vertices (see module docstring)."""

    def __init__(self, body: BodyModel, cfg: FitConfig):
        self.body = body
        parents = body.parents
        self.joints = list(FIT_JOINTS)
        pos = {j: i for i, j in enumerate(self.joints)}
        # fold every joint outside the subset onto its nearest ancestor inside it
        fold = []
        for j in range(len(parents)):
            a = j
            while a not in pos:
                a = parents[a]
            fold.append(pos[a])
        depth = [0] * len(self.joints)
        for i, j in enumerate(self.joints[1:], 1):
            depth[i] = depth[pos[parents[j]]] + 1
        self.levels = []  # per tree level: (subset indices, parent subset indices)
        for d in range(max(depth) + 1):
            idx = [i for i in range(len(self.joints)) if depth[i] == d]
            par = [pos[parents[self.joints[i]]] if d else -1 for i in idx]
            self.levels.append((torch.tensor(idx), torch.tensor(par)))
        order = torch.cat([lv[0] for lv in self.levels])
        self.inv_order = torch.argsort(order)
        # per level: where each joint's parent sits in the previous level's tensor
        self.parent_pos = [torch.zeros(0, dtype=torch.long)]
        for d in range(1, len(self.levels)):
            prev = self.levels[d - 1][0].tolist()
            self.parent_pos.append(torch.tensor([prev.index(int(p)) for p in self.levels[d][1]]))
        # markers and silhouette vertices
        W = body.lbs_weights.detach().cpu()
        dominant = W.argmax(1)
        with torch.no_grad():
            rv, rj = body.rest(torch.zeros(1, body.num_betas, device=body.device))
        rv, rj = rv[0].cpu(), rj[0].cpu()
        self.marker_verts = _pick_markers(rv, rj, dominant)
        self.marker_joint = torch.tensor([fold[int(dominant[v])] for v in self.marker_verts])
        g = torch.Generator().manual_seed(cfg.seed)
        n = min(cfg.silhouette_vertices, rv.shape[0])
        self.sil_verts = torch.randperm(rv.shape[0], generator=g)[:n]
        Wf = torch.zeros(n, len(self.joints))
        Wf.index_add_(1, torch.tensor(fold), W[self.sil_verts])
        self.sil_weights = Wf
        self.num_betas = body.num_betas
        self.num_eff = len(ANNY_BETA_TO_PHENOTYPE) if body.name == "anny" else body.num_betas
        self.linearize(torch.zeros(1, body.num_betas))

    def linearize(self, betas: torch.Tensor, h: float = 0.5) -> None:
        """Rest joints / marker / silhouette vertices ~ x0 + D (betas - betas0), by finite differences."""
        betas = betas.detach().reshape(1, -1).float().cpu()
        B = self.num_eff + 1
        b = betas.repeat(B, 1)
        b[1:, : self.num_eff] += h * torch.eye(self.num_eff)
        with torch.no_grad():
            rv, rj = self.body.rest(b.to(self.body.device))
        rv, rj = rv.cpu(), rj.cpu()
        x = torch.cat([rj[:, self.joints], rv[:, self.marker_verts], rv[:, self.sil_verts]], 1)  # (B, N, 3)
        self.beta0 = betas[:, : self.num_eff]
        self.x0 = x[0]
        self.D = (x[1:] - x[0]) / h  # (nb, N, 3)
        self.nj, self.nm = len(self.joints), len(self.marker_verts)

    def rest(self, betas_eff: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(J, 3) rest joints, (M, 3) rest markers, (S, 3) rest silhouette vertices."""
        x = self.x0 + torch.einsum("b,bnc->nc", (betas_eff - self.beta0)[0], self.D)
        return x[: self.nj], x[self.nj: self.nj + self.nm], x[self.nj + self.nm:]

    def pose(self, R_glob: torch.Tensor, body_rot: torch.Tensor, betas_eff: torch.Tensor, transl: torch.Tensor,
             with_verts: bool = False) -> list[torch.Tensor]:
        """Pose the evaluated points, world frame.

        Args:
            R_glob: (T, 3, 3) global orientation; body_rot: (T, 21, 3, 3) local body rotations;
            betas_eff: (1, NE) effective betas; transl: (T, 3) metres.
        Returns:
            [joints (T, J, 3) in :data:`FIT_JOINTS` order, markers (T, M, 3)] and, with
            ``with_verts``, silhouette vertices (T, S, 3).
        """
        T = R_glob.shape[0]
        rj, rm, rs = self.rest(betas_eff)
        eye = torch.eye(3).expand(T, len(self.joints) - 22, 3, 3)
        rot = torch.cat([R_glob[:, None], body_rot, eye], 1)  # (T, J, 3, 3) local, subset order
        Rw, Jw = [], []
        for d, (idx, par) in enumerate(self.levels):
            if d == 0:
                Rl, Jl = rot[:, idx], rj[idx].expand(T, len(idx), 3)
            else:
                pp = self.parent_pos[d]
                Rp, Jp = Rw[-1][:, pp], Jw[-1][:, pp]
                Rl = Rp @ rot[:, idx]
                Jl = Jp + (Rp @ (rj[idx] - rj[par])[None, :, :, None])[..., 0]
            Rw.append(Rl)
            Jw.append(Jl)
        R = torch.cat(Rw, 1)[:, self.inv_order]
        J = torch.cat(Jw, 1)[:, self.inv_order]
        mj = self.marker_joint
        M = (R[:, mj] @ (rm - rj[mj])[None, :, :, None])[..., 0] + J[:, mj]
        out = [J + transl[:, None], M + transl[:, None]]
        if with_verts:
            t = J - (R @ rj[None, :, :, None])[..., 0]  # (T, J, 3)
            Rb = torch.einsum("sj,tjab->tsab", self.sil_weights, R)
            tb = torch.einsum("sj,tja->tsa", self.sil_weights, t)
            out.append((Rb @ rs[None, :, :, None])[..., 0] + tb + transl[:, None])
        return out


def _pick_markers(rv: torch.Tensor, rj: torch.Tensor, dominant: torch.Tensor) -> list[int]:
    """Vertex indices of :data:`MARKERS` on the rest mesh (T-pose, +Y up, facing +Z)."""
    def pick(mask, score):
        s = torch.where(mask, score, torch.full_like(score, -1e9))
        return int(s.argmax())

    head = dominant == JI["head"]
    eye_y = 0.5 * (rj[JI["left_eye"], 1] + rj[JI["right_eye"], 1])
    out = [pick(head, rv[:, 2])]  # nose tip: front-most head vertex
    band = head & (rv[:, 1] < eye_y + 0.01) & (rv[:, 1] > eye_y - 0.06)
    out += [pick(band, rv[:, 0]), pick(band, -rv[:, 0])]  # ears: most lateral at eye height
    for side in ("left", "right"):
        foot = (dominant == JI[f"{side}_ankle"]) | (dominant == JI[f"{side}_foot"])
        low = foot & (rv[:, 1] < rv[foot, 1].min() + 0.03)
        out.append(pick(low, -rv[:, 2]))  # heel: back-most low foot vertex
    for side in ("left", "right"):
        foot = (dominant == JI[f"{side}_ankle"]) | (dominant == JI[f"{side}_foot"])
        out.append(pick(foot, rv[:, 2]))  # toe tip: front-most foot vertex
    # order as MARKERS: nose, ears, heels, toes
    return out


def project_keypoints(body: BodyModel, params: SMPLXParams, camera: Camera) -> np.ndarray:
    """The fitter's keypoints of posed parameters, projected (e.g. synthetic targets, overlays).

    Args:
        body: the body model; params: SMPLXParams (B = T; fingers assumed at rest, betas of row 0);
        camera: perspective camera.
    Returns:
        (T, K, 2) float32 pixels in :data:`KEYPOINTS` order.
    """
    fb = _FitBody(body, FitConfig(silhouette_vertices=1))
    fb.linearize(params.betas[:1])
    sel = _keypoint_selection(fb)
    with torch.no_grad():
        J, M = fb.pose(roma.rotvec_to_rotmat(params.global_orient), roma.rotvec_to_rotmat(params.body_pose),
                       params.betas[:1, : fb.num_eff], params.transl)
        return _project(torch.cat([J, M], 1)[:, sel], camera).numpy().astype(np.float32)


def _keypoint_selection(fb: _FitBody) -> torch.Tensor:
    """(K,) index of each :data:`KEYPOINTS` entry in ``cat([joints, markers], 1)``."""
    jpos = {j: i for i, j in enumerate(fb.joints)}
    return torch.tensor([jpos[JI[n]] if kind == "joint" else len(fb.joints) + MARKERS.index(n)
                         for _, _, kind, n, _ in KEYPOINTS])


# ----------------------------------------------------------------------------- fitting
def _project(x: torch.Tensor, cam: Camera) -> torch.Tensor:
    """World points (..., 3) -> pixels (..., 2); depth clamped at 5 cm to stay finite."""
    R, t = cam.R_t()
    pc = x @ R.T + t
    xy = pc[..., :2] / pc[..., 2:].clamp(min=0.05)
    return torch.stack([xy[..., 0] * cam.fx + cam.cx, xy[..., 1] * cam.fy + cam.cy], -1)


def _robust(r2: torch.Tensor, sigma: float) -> torch.Tensor:
    """Geman-McClure on squared residuals: sigma^2 r2 / (sigma^2 + r2)."""
    s2 = sigma * sigma
    return s2 * r2 / (s2 + r2)


def _yaw(a: float) -> torch.Tensor:
    return roma.rotvec_to_rotmat(torch.tensor([0.0, a, 0.0]))


class _Problem:
    """Targets in tensor form and the loss terms shared by the stages."""

    def __init__(self, targets: FitTargets, fb: _FitBody, cam: Camera, cfg: FitConfig):
        self.cfg, self.fb, self.cam = cfg, fb, cam
        kp = torch.from_numpy(np.asarray(targets.keypoints, np.float32))
        self.T = kp.shape[0]
        self.uv = kp[..., :2]
        conf = kp[..., 2] * (kp[..., 2] >= cfg.min_conf)
        gw = {"torso": cfg.w_torso, "hips": cfg.w_hips, "limbs": cfg.w_limbs, "face": cfg.w_face,
              "feet": cfg.w_feet, "hands": cfg.w_hands}
        self.w = conf * torch.tensor([gw[k[4]] for k in KEYPOINTS])  # (T, K)
        self.sel = _keypoint_selection(fb)
        self.torso = torch.tensor([k[3] in TORSO_KEYPOINTS or k[4] == "face" for k in KEYPOINTS], dtype=torch.float32)
        # clip scale: median person height in pixels (keypoint extent)
        heights = []
        for t in range(self.T):
            ok = self.w[t] > 0
            if ok.sum() >= 4:
                heights.append(float(self.uv[t, ok, 1].max() - self.uv[t, ok, 1].min()))
        self.scale = float(np.median(heights)) if heights else 0.5 * targets.image_size[0]
        self.scale = max(self.scale, 8.0)
        self.prior_w = torch.tensor([_PRIOR[n] for n in SMPLX_JOINT_NAMES[1:22]], dtype=torch.float32)  # (21, 3)
        self.sil = None

    # ---------------------------------------------------------------- terms
    def keypoints(self, J, M, w=None) -> torch.Tensor:
        """(T,) robust keypoint loss per frame."""
        pred = _project(torch.cat([J, M], 1)[:, self.sel], self.cam)
        r2 = ((pred - self.uv) / self.scale).square().sum(-1)
        w = self.w if w is None else w
        return (w * _robust(r2, self.cfg.robust_sigma)).sum(-1)

    def priors(self, body_aa: torch.Tensor, betas: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        out = {"pose_prior": cfg.w_pose_prior * (self.prior_w * body_aa.square()).sum((1, 2)).mean()}
        lim = 0.0
        for name, axis, sign in _LIMITS:
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

    def setup_silhouette(self, masks: np.ndarray, valid: np.ndarray) -> None:
        """Distance transforms (outside the mask) and boundary samples, at reduced resolution."""
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
            m = cv2.resize(masks[t], (w, h), interpolation=cv2.INTER_AREA) > 0.5
            if not valid[t] or m.sum() < 16:
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

    def silhouette(self, V: torch.Tensor) -> torch.Tensor:
        dts, pts, pw, fw = self.sil
        uv = _project(V, self.cam)  # (T, S, 2)
        g = torch.stack([uv[..., 0] / self.cam.width * 2 - 1, uv[..., 1] / self.cam.height * 2 - 1], -1)
        d = torch.nn.functional.grid_sample(dts, g[:, None], mode="bilinear", padding_mode="border",
                                            align_corners=False)[:, 0, 0]  # (T, S)
        inside = d.square().mean(-1)
        near = torch.cdist(pts, uv).min(-1).values / self.scale  # (T, P)
        cover = (near.square() * pw).sum(-1) / pw.sum(-1).clamp(min=1)
        n = fw.sum().clamp(min=1)
        return ((inside + self.cfg.silhouette_coverage * cover) * fw).sum() / n


def _initial_transl(p: _Problem, rest_j: torch.Tensor) -> torch.Tensor:
    """(T, 3) translation placing the pelvis on the hip-centre ray at a depth from the torso size."""
    cfg, cam = p.cfg, p.cam
    names = [k[3] for k in KEYPOINTS]
    ix = {n: names.index(n) for n in TORSO_KEYPOINTS}
    torso3d = float(((rest_j[JI["left_shoulder"]] + rest_j[JI["right_shoulder"]]) / 2
                     - (rest_j[JI["left_hip"]] + rest_j[JI["right_hip"]]) / 2).norm())
    depth = np.full(p.T, np.nan)
    centre = np.full((p.T, 2), np.nan)
    for t in range(p.T):
        ok = p.w[t] > 0
        if all(ok[ix[n]] for n in TORSO_KEYPOINTS):
            sh = (p.uv[t, ix["left_shoulder"]] + p.uv[t, ix["right_shoulder"]]) / 2
            hp = (p.uv[t, ix["left_hip"]] + p.uv[t, ix["right_hip"]]) / 2
            depth[t] = cam.fy * torso3d / max(float((sh - hp).norm()), 1.0)
            centre[t] = hp.numpy()
        elif ok.sum() >= 2:
            ext = float(p.uv[t, ok, 1].max() - p.uv[t, ok, 1].min())
            depth[t] = cam.fy * cfg.body_height_m / max(ext, 0.3 * p.scale)
            centre[t] = p.uv[t, ok].mean(0).numpy()
    good = np.isfinite(depth)
    if not good.any():
        depth[:] = cam.fy * cfg.body_height_m / p.scale
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


def _viterbi(cost: np.ndarray, R: torch.Tensor, switch: float) -> np.ndarray:
    """Per-frame hypothesis choice. cost: (T, H); R: (T, H, 3, 3) rotations. Returns (T,) indices."""
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


def _run_adam(name: str, groups: list[dict], closure, iters: int, cfg: FitConfig) -> dict[str, float]:
    if cfg.optimizer == "lbfgs":
        return _run_lbfgs(name, groups, closure, iters, cfg)
    opt = torch.optim.Adam(groups)
    # cosine decay of every learning rate to lr_final * lr (coarse moves first, then precision)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * min(i / max(iters, 1), 1.0))))
    terms: dict[str, torch.Tensor] = {}
    for _ in tqdm(range(iters), desc=f"fit {name}", unit="it", leave=False, disable=not cfg.progress):
        opt.zero_grad(set_to_none=True)
        terms = closure()
        loss = sum(terms.values())
        loss.backward()
        opt.step()
        sched.step()
    return {k: float(v.detach()) for k, v in terms.items()}


def _run_lbfgs(name: str, groups: list[dict], closure, iters: int, cfg: FitConfig) -> dict[str, float]:
    params = [q for g in groups for q in g["params"]]
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=iters, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)
    last: dict[str, torch.Tensor] = {}
    bar = tqdm(total=iters, desc=f"fit {name}", unit="it", leave=False, disable=not cfg.progress)

    def step():
        opt.zero_grad(set_to_none=True)
        terms = closure()
        loss = sum(terms.values())
        loss.backward()
        last.update(terms)
        bar.update(1)
        return loss

    opt.step(step)
    bar.close()
    return {k: float(v.detach()) for k, v in last.items()}


def fit_clip(targets: FitTargets, body: BodyModel, cfg: FitConfig = FitConfig(),
             camera: Camera | None = None) -> FitResult:
    """Fit SMPL-X parameters to a clip's keypoints (and masks).

    Args:
        targets: keypoints (T, K, 3) in :data:`KEYPOINTS` order (pixels + confidence), masks,
            valid frames (see :class:`FitTargets`). Frames without keypoints are filled in by
            the temporal terms.
        body: the body model (any backend).
        cfg: options.
        camera: the clip camera; default :func:`default_camera` (OpenCV, world +Y up).

    Returns:
        :class:`FitResult` with world-frame parameters (B = T) and the (re-centred) camera.
    """
    with torch_threads(cfg.num_threads):  # small tensors: extra threads only add sync overhead
        return _fit_clip(targets, body, cfg, camera)


def _fit_clip(targets: FitTargets, body: BodyModel, cfg: FitConfig, camera: Camera | None) -> FitResult:
    import time

    T = targets.keypoints.shape[0]
    if T == 0:
        raise ValueError("fit_clip: the clip has no frames")
    if targets.keypoints.shape[1:] != (len(KEYPOINTS), 3):
        raise ValueError(f"fit_clip: keypoints must be (T, {len(KEYPOINTS)}, 3), got {targets.keypoints.shape}")
    cam = camera or default_camera(targets.image_size, cfg)
    if camera is not None and camera.ortho:
        raise ValueError("fit_clip: the fitter needs a perspective camera")
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    fb = _FitBody(body, cfg)
    p = _Problem(targets, fb, cam, cfg)
    ne = fb.num_eff
    seconds["setup"] = time.perf_counter() - t0

    # ---- stage 1: orientation + translation from the torso, 4 yaw hypotheses
    t0 = time.perf_counter()
    rest_j = fb.rest(fb.beta0)[0]
    transl0 = _initial_transl(p, torch.zeros(55, 3).index_copy(0, torch.tensor(fb.joints), rest_j))
    yaws = (0.0, 0.5 * math.pi, math.pi, -0.5 * math.pi)
    nh = len(yaws)
    R0 = torch.stack([_yaw(a) for a in yaws]).repeat_interleave(T, 0)  # (H*T, 3, 3), hypothesis-major
    delta = torch.zeros(nh * T, 3, requires_grad=True)
    transl = transl0.repeat(nh, 1).clone().requires_grad_(True)
    zero_pose = torch.eye(3).expand(nh * T, 21, 3, 3)
    betas0 = fb.beta0.clone()
    w1 = (p.w * p.torso).repeat(nh, 1)
    uv1 = p.uv.repeat(nh, 1, 1)

    def stage1():
        R = R0 @ roma.rotvec_to_rotmat(delta)
        J, M = fb.pose(R, zero_pose, betas0, transl)
        pred = _project(torch.cat([J, M], 1)[:, p.sel], cam)
        r2 = ((pred - uv1) / p.scale).square().sum(-1)
        return {"kp_torso": (w1 * _robust(r2, cfg.robust_sigma)).sum(-1).mean() * nh}

    losses = {}
    if cfg.iters_global > 0:
        losses.update(_run_adam("global", [{"params": [delta], "lr": cfg.lr_global},
                                           {"params": [transl], "lr": cfg.lr_transl}], stage1, cfg.iters_global, cfg))
    with torch.no_grad():
        R = (R0 @ roma.rotvec_to_rotmat(delta)).reshape(nh, T, 3, 3)
        J, M = fb.pose(R.reshape(-1, 3, 3), zero_pose, betas0, transl)
        pred = _project(torch.cat([J, M], 1)[:, p.sel], cam)
        r2 = ((pred - uv1) / p.scale).square().sum(-1)
        cost = (w1 * _robust(r2, cfg.robust_sigma)).sum(-1).reshape(nh, T).T.numpy()
        cost = cost / max(cfg.robust_sigma ** 2, 1e-12)
        choice = _viterbi(cost, R.transpose(0, 1), cfg.yaw_switch_cost)
        tt = torch.arange(T)
        R_init = R[choice, tt].clone()
        transl_init = transl.detach().reshape(nh, T, 3)[choice, tt].clone()
    seconds["global"] = time.perf_counter() - t0

    # ---- stage 2: body pose + betas on all keypoints, priors, temporal smoothness
    t0 = time.perf_counter()
    delta = torch.zeros(T, 3, requires_grad=True)
    transl = transl_init.clone().requires_grad_(True)
    body_aa = torch.zeros(T, 21, 3, requires_grad=True)
    betas = fb.beta0.clone().requires_grad_(cfg.fit_betas)

    def objective(with_sil: bool):
        R = R_init @ roma.rotvec_to_rotmat(delta)
        out = fb.pose(R, roma.rotvec_to_rotmat(body_aa), betas, transl, with_verts=with_sil)
        J, M = out[0], out[1]
        terms = {"kp": p.keypoints(J, M).mean()}
        terms.update(p.priors(body_aa, betas))
        terms.update(p.temporal(J, body_aa, R))
        if with_sil:
            terms["silhouette"] = cfg.w_silhouette * p.silhouette(out[2])
        return terms

    groups = [{"params": [delta], "lr": cfg.lr_pose}, {"params": [body_aa], "lr": cfg.lr_pose},
              {"params": [transl], "lr": cfg.lr_transl}]
    if cfg.fit_betas:
        groups.append({"params": [betas], "lr": cfg.lr_betas})
    if cfg.iters_pose > 0:
        losses = _run_adam("pose", groups, lambda: objective(False), cfg.iters_pose, cfg)
    seconds["pose"] = time.perf_counter() - t0

    # ---- stage 3: silhouette
    t0 = time.perf_counter()
    if cfg.iters_silhouette > 0 and cfg.w_silhouette > 0 and targets.masks is not None:
        if cfg.fit_betas:  # re-linearise the shape model around the current betas
            full = torch.zeros(1, fb.num_betas)
            full[:, :ne] = betas.detach()
            fb.linearize(full)
        p.setup_silhouette(np.asarray(targets.masks, np.float32), np.asarray(targets.valid, bool))
        if float(p.sil[3].sum()) > 0:
            losses = _run_adam("silhouette", groups, lambda: objective(True), cfg.iters_silhouette, cfg)
    seconds["silhouette"] = time.perf_counter() - t0

    with torch.no_grad():
        R = R_init @ roma.rotvec_to_rotmat(delta)
        J, M = fb.pose(R, roma.rotvec_to_rotmat(body_aa), betas, transl)
        joints2d = _project(torch.cat([J, M], 1)[:, p.sel], cam).numpy()
        # re-centre the world on the mean body position (camera moved accordingly)
        c = transl.mean(0)
        Rc, tc = cam.R_t()
        cam = Camera(cam.width, cam.height, cam.fx, cam.fy, cam.cx, cam.cy, cam.R,
                     tuple((tc + Rc @ c).tolist()), False)
        params = SMPLXParams.zeros(T, body.num_betas, body.num_expression)
        params.global_orient = roma.rotmat_to_rotvec(R)
        params.body_pose = body_aa.detach().clone()
        params.betas[:, :ne] = betas.detach()
        params.transl = transl.detach() - c
    log.info("fit %d frames: %s (%s)", T, ", ".join(f"{k}={v:.3g}" for k, v in losses.items()),
             ", ".join(f"{k} {v:.2f}s" for k, v in seconds.items()))
    return FitResult(params, cam, joints2d, losses, seconds)
