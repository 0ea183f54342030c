"""The body as the fitter sees it: which keypoints are fitted, and their cheap evaluation.

Each frame's body is posed through the body model's own kinematics (rest joints of the shared
``betas``, local rotations, ``transl``), but only what the data can see is evaluated:

* the 22 body joints, the eyes and the finger base joints (MCP knuckles), by forward kinematics,
  vectorised per tree level (no vertices: cheap for hundreds of iterations);
* "markers" for mediapipe landmarks that are not SMPL-X joints, each rigidly attached to one joint:
  surface points (nose, ears, heels, toe tips: body-model vertices chosen once on the rest mesh, exact
  LBS for vertices skinned to one joint, a close approximation otherwise) and joint-offset points
  (mediapipe's hips and shoulders sit a few centimetres from the SMPL-X joint centres, its pose-graph
  hand points near the knuckles: :data:`MP_OFFSETS`);
* a few hundred subsampled vertices (LBS restricted to the same joints) for the silhouette term.

Rest joints and marker / silhouette vertices depend on ``betas`` through the backend (Anny's
phenotype network or SMPL-X blend shapes); they are linearised around the current betas by finite
differences (one batched ``body.rest`` call), so iterations never run the full body model. For
``smplx`` the linearisation is exact.
"""

from __future__ import annotations

import numpy as np
import roma
import torch

from foundation.body.model import ANNY_BETA_TO_PHENOTYPE, BodyModel
from foundation.body.params import SMPLXParams
from foundation.body.skeleton import JOINT_INDEX as JI
from foundation.body.skeleton import fold_to_ancestor
from foundation.camera import Camera

#: Joints evaluated by the fitter: body (0-21), eyes, finger bases (index/middle/pinky/ring/thumb 1).
FIT_JOINTS: tuple[int, ...] = tuple(range(22)) + (23, 24) + (25, 28, 31, 34, 37) + (40, 43, 46, 49, 52)

#: Mediapipe pose landmarks that are offset from an SMPL-X joint: name -> (anchor joint, attached
#: joint, offset in metres in the SMPL-X rest frame (T-pose, +Y up, +Z front, +X the person's left)
#: for the LEFT side; the right side mirrors x). Mean 2D offsets of mediapipe's landmarks from the
#: projected ground-truth joints on a synthetic clothed Anny clip (person ~1.7 m tall, 3.2 m away):
#: hips 3.5 cm below the SMPL-X hip centres, shoulders 1.7 cm above the shoulder joints; the
#: "index"/"pinky" hand points are taken at the MCP knuckles (not measured yet). A calibration over
#: many subjects and poses (e.g. the benchmark's recon samples) is still to do.
MP_OFFSETS: dict[str, tuple[str, str, tuple[float, float, float]]] = {
    "hip": ("hip", "pelvis", (0.0, -0.035, 0.0)),
    "shoulder": ("shoulder", "collar", (0.0, 0.017, 0.0)),
    "index": ("index1", "wrist", (0.0, 0.0, 0.0)),
    "pinky": ("pinky1", "wrist", (0.0, 0.0, 0.0)),
}

#: Vertex markers (surface points) then joint-offset markers, in evaluation order.
VERTEX_MARKERS = ("nose", "left_ear", "right_ear", "left_heel", "right_heel", "left_toe", "right_toe")
OFFSET_MARKERS = tuple(f"mp_{side}_{k}" for k in MP_OFFSETS for side in ("left", "right"))
MARKERS = VERTEX_MARKERS + OFFSET_MARKERS

# (source, source index, target kind, target name, group); source: "body" (mediapipe pose, 33),
# "lhand"/"rhand" (mediapipe hand, 21); target kind: "joint" (SMPL-X joint) or "marker".
KEYPOINTS: tuple[tuple[str, int, str, str, str], ...] = (
    ("body", 0, "marker", "nose", "face"),
    ("body", 2, "joint", "left_eye", "face"), ("body", 5, "joint", "right_eye", "face"),
    ("body", 7, "marker", "left_ear", "face"), ("body", 8, "marker", "right_ear", "face"),
    ("body", 11, "marker", "mp_left_shoulder", "torso"), ("body", 12, "marker", "mp_right_shoulder", "torso"),
    ("body", 13, "joint", "left_elbow", "limbs"), ("body", 14, "joint", "right_elbow", "limbs"),
    ("body", 15, "joint", "left_wrist", "limbs"), ("body", 16, "joint", "right_wrist", "limbs"),
    ("body", 23, "marker", "mp_left_hip", "hips"), ("body", 24, "marker", "mp_right_hip", "hips"),
    ("body", 25, "joint", "left_knee", "limbs"), ("body", 26, "joint", "right_knee", "limbs"),
    ("body", 27, "joint", "left_ankle", "limbs"), ("body", 28, "joint", "right_ankle", "limbs"),
    ("body", 29, "marker", "left_heel", "feet"), ("body", 30, "marker", "right_heel", "feet"),
    ("body", 31, "marker", "left_toe", "feet"), ("body", 32, "marker", "right_toe", "feet"),
    ("body", 19, "marker", "mp_left_index", "knuckles"), ("body", 20, "marker", "mp_right_index", "knuckles"),
    ("body", 17, "marker", "mp_left_pinky", "knuckles"), ("body", 18, "marker", "mp_right_pinky", "knuckles"),
    *[(hand, mp, "joint", f"{side}_{name}", "hands")
      for hand, side in (("lhand", "left"), ("rhand", "right"))
      for mp, name in ((0, "wrist"), (5, "index1"), (9, "middle1"), (13, "ring1"), (17, "pinky1"), (2, "thumb1"))],
)  # fmt: skip
KEYPOINT_NAMES = tuple(k[3] for k in KEYPOINTS)
TORSO_KEYPOINTS = ("mp_left_shoulder", "mp_right_shoulder", "mp_left_hip", "mp_right_hip")
#: Keypoint groups that decide the global orientation (stage 1 of the fit: body at rest; the feet
#: enter there only as heel -> toe directions, which do not depend much on the leg pose).
GLOBAL_GROUPS = ("torso", "hips", "face")


class FitBody:
    """Cheap evaluation of joints, markers and subsampled vertices (see the module docstring).

    Args:
        body: the body model (any backend).
        silhouette_vertices: number of subsampled vertices for the silhouette term.
        seed: RNG seed of the vertex subsampling.
    """

    def __init__(self, body: BodyModel, silhouette_vertices: int = 400, seed: int = 0):
        self.body = body
        parents = body.parents
        self.joints = list(FIT_JOINTS)
        pos = {j: i for i, j in enumerate(self.joints)}
        # fold every joint outside the subset onto its nearest ancestor inside it
        fold = fold_to_ancestor(parents, pos)
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
        # markers: vertices (attached to their dominant joint) and joint offsets
        W = body.lbs_weights.detach().cpu()
        dominant = W.argmax(1)
        with torch.no_grad():
            rv, rj = body.rest(torch.zeros(1, body.num_betas, device=body.device))
        rv, rj = rv[0].cpu(), rj[0].cpu()
        self.marker_verts = _pick_markers(rv, rj, dominant)
        attach = [fold[int(dominant[v])] for v in self.marker_verts]
        anchors, offsets = [], []
        for name in OFFSET_MARKERS:
            side, key = name.split("_")[1:3]
            anchor, parent, off = MP_OFFSETS[key]
            anchors.append(JI[f"{side}_{anchor}"])
            offsets.append((off[0] if side == "left" else -off[0], off[1], off[2]))
            attach.append(fold[JI[parent if parent == "pelvis" else f"{side}_{parent}"]])
        self.offset_anchor = torch.tensor(anchors, dtype=torch.long)
        self.offset = torch.tensor(offsets, dtype=torch.float32)
        self.marker_joint = torch.tensor(attach, dtype=torch.long)
        g = torch.Generator().manual_seed(seed)
        n = max(1, min(silhouette_vertices, rv.shape[0]))
        self.sil_verts = torch.randperm(rv.shape[0], generator=g)[:n]
        Wf = torch.zeros(n, len(self.joints))
        Wf.index_add_(1, torch.tensor(fold), W[self.sil_verts])
        self.sil_weights = Wf
        self.num_betas = body.num_betas
        self.num_eff = len(ANNY_BETA_TO_PHENOTYPE) if body.name == "anny" else body.num_betas
        self.linearize(torch.zeros(1, body.num_betas))

    def linearize(self, betas: torch.Tensor, h: float = 0.5) -> None:
        """Rest joints / markers / silhouette vertices ~ x0 + D (betas - betas0), by finite differences.

        Args:
            betas: (1, num_betas) or (num_betas,) the expansion point.
        """
        betas = betas.detach().reshape(1, -1).float().cpu()
        B = self.num_eff + 1
        b = betas.repeat(B, 1)
        b[1:, : self.num_eff] += h * torch.eye(self.num_eff)
        with torch.no_grad():
            rv, rj = self.body.rest(b.to(self.body.device))
        rv, rj = rv.cpu(), rj.cpu()
        off = rj[:, self.offset_anchor] + self.offset
        x = torch.cat([rj[:, self.joints], rv[:, self.marker_verts], off, rv[:, self.sil_verts]], 1)  # (B, N, 3)
        self.beta0 = betas[:, : self.num_eff]
        self.x0 = x[0]
        self.D = (x[1:] - x[0]) / h  # (nb, N, 3)
        self.nj, self.nm = len(self.joints), len(MARKERS)

    def rest(self, betas_eff: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(J, 3) rest joints, (M, 3) rest markers, (S, 3) rest silhouette vertices for (1, NE) betas."""
        x = self.x0 + torch.einsum("b,bnc->nc", (betas_eff - self.beta0)[0], self.D)
        return x[: self.nj], x[self.nj: self.nj + self.nm], x[self.nj + self.nm:]

    def pose(self, R_glob: torch.Tensor, body_rot: torch.Tensor, betas_eff: torch.Tensor, transl: torch.Tensor,
             with_verts: bool = False) -> list[torch.Tensor]:
        """Pose the evaluated points, world frame.

        Args:
            R_glob: (T, 3, 3) global orientation; body_rot: (T, 21, 3, 3) local body rotations;
            betas_eff: (1, NE) effective betas; transl: (T, 3) metres.
        Returns:
            [joints (T, J, 3) in :data:`FIT_JOINTS` order, markers (T, M, 3) in :data:`MARKERS` order]
            and, with ``with_verts``, silhouette vertices (T, S, 3).
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

    def selection(self) -> torch.Tensor:
        """(K,) index of each :data:`KEYPOINTS` entry in ``cat([joints, markers], 1)``."""
        jpos = {j: i for i, j in enumerate(self.joints)}
        return torch.tensor([jpos[JI[n]] if kind == "joint" else self.nj + MARKERS.index(n)
                             for _, _, kind, n, _ in KEYPOINTS])


def _pick_markers(rv: torch.Tensor, rj: torch.Tensor, dominant: torch.Tensor) -> list[int]:
    """Vertex indices of :data:`VERTEX_MARKERS` on the rest mesh (T-pose, +Y up, facing +Z)."""
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
    return out


def project(x: torch.Tensor, cam: Camera, focal_scale: torch.Tensor | None = None) -> torch.Tensor:
    """World points (..., 3) -> pixels (..., 2); depth clamped at 5 cm to stay finite.

    ``focal_scale`` (scalar tensor) multiplies both focal lengths (focal estimation).
    """
    R, t = cam.R_t()
    pc = x @ R.T + t
    xy = pc[..., :2] / pc[..., 2:].clamp(min=0.05)
    fx, fy = (cam.fx, cam.fy) if focal_scale is None else (cam.fx * focal_scale, cam.fy * focal_scale)
    return torch.stack([xy[..., 0] * fx + cam.cx, xy[..., 1] * fy + cam.cy], -1)


def project_keypoints(body: BodyModel, params: SMPLXParams, camera: Camera) -> np.ndarray:
    """The fitter's keypoints of posed parameters, projected (e.g. synthetic targets, overlays).

    Args:
        body: the body model; params: SMPLXParams (B = T; fingers assumed at rest, betas of row 0);
        camera: perspective camera.
    Returns:
        (T, K, 2) float32 pixels in :data:`KEYPOINTS` order.
    """
    fb = FitBody(body, silhouette_vertices=1)
    fb.linearize(params.betas[:1])
    with torch.no_grad():
        J, M = fb.pose(roma.rotvec_to_rotmat(params.global_orient), roma.rotvec_to_rotmat(params.body_pose),
                       params.betas[:1, : fb.num_eff], params.transl)
        return project(torch.cat([J, M], 1)[:, fb.selection()], camera).numpy().astype(np.float32)
