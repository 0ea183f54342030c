"""A toy clothed subject for tests and benchmarks: the body inflated along its normals.

The canonical "clothed" surface is the body's rest mesh pushed out by 1-4 cm (thicker on the
torso and thighs, like a shirt and shorts) and coloured by body part; posed frames are its LBS with
the body's weights, so the ground truth in any pose is known exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from avatar.body.params import SMPLXParams
from avatar.body.skeleton import JOINT_INDEX
from avatar.geometry.normals import vertex_normals

__all__ = ["ToySubject", "make_toy_subject", "random_poses", "tiny_avatar_config", "toy_recon", "toy_tracks"]

_TORSO = ("pelvis", "spine1", "spine2", "spine3", "left_hip", "right_hip", "left_collar", "right_collar")
_LEGS = ("left_knee", "right_knee")
_ARMS = ("left_shoulder", "right_shoulder", "left_elbow", "right_elbow")


@dataclass
class ToySubject:
    """canonical_verts: (V, 3) clothed T-pose; faces: (F, 3); colors: (V, 3) uint8; betas: (1, NB)."""

    canonical_verts: torch.Tensor
    faces: torch.Tensor
    colors: np.ndarray
    betas: torch.Tensor

    def posed(self, body, params: SMPLXParams) -> torch.Tensor:
        """(B, V, 3) ground-truth clothed surface in the world frame for ``params`` (B frames)."""
        from avatar.body.lbs import skin_points

        with torch.no_grad():
            T = body(params).joint_transforms
        return skin_points(self.canonical_verts.expand(params.batch_size, -1, -1), body.lbs_weights, T)


def make_toy_subject(body, betas: torch.Tensor | None = None) -> ToySubject:
    """Build the inflated subject on ``body`` (B=1 rest shape with ``betas`` (1, NB), default zeros)."""
    betas = torch.zeros(1, body.num_betas) if betas is None else betas.reshape(1, -1)
    with torch.no_grad():
        rest, _ = body.rest(betas)
    rest = rest[0]
    W = body.lbs_weights
    faces = body.faces
    pick = lambda names: W[:, [JOINT_INDEX[n] for n in names]].sum(1)  # noqa: E731
    torso, legs, arms = pick(_TORSO), pick(_LEGS), pick(_ARMS)
    offset = 0.012 + 0.025 * torso + 0.015 * legs + 0.01 * arms
    n = vertex_normals(rest, faces)
    verts = rest + offset[:, None] * n
    skin = np.array([224, 180, 150], np.float32)
    shirt = np.array([40, 90, 200], np.float32)
    pants = np.array([60, 60, 70], np.float32)
    t, l, a = torso.numpy()[:, None], legs.numpy()[:, None], arms.numpy()[:, None]
    up = (rest[:, 1].numpy() > -0.05)[:, None]  # above the hips: shirt, below: pants
    cloth = np.where(up, shirt, pants)
    col = (np.clip(t + l + a, 0, 1) * cloth + (1 - np.clip(t + l + a, 0, 1)) * skin)
    return ToySubject(verts.float(), faces.long(), col.round().astype(np.uint8), betas.float())


def random_poses(body, num: int, seed: int = 0, scale: float = 1.0, smooth: bool = True) -> SMPLXParams:
    """Plausible random poses (arms down-ish and swinging, legs stepping), B = ``num``.

    ``smooth``: a continuous sequence (a video); otherwise independent poses.
    """
    g = np.random.default_rng(seed)
    tt = np.linspace(0, 2 * np.pi, num, endpoint=False) if smooth else g.uniform(0, 2 * np.pi, num)
    ph = g.uniform(0, 2 * np.pi, 8)
    amp = g.uniform(0.5, 1.0, 8) * scale
    p = SMPLXParams.zeros(num, body.num_betas, body.num_expression)
    J = lambda n: JOINT_INDEX[n] - 1  # noqa: E731 - body_pose index
    s = lambda k: torch.from_numpy(np.sin(tt + ph[k]) * amp[k]).float()  # noqa: E731
    p.body_pose[:, J("left_shoulder"), 2] = -0.9 + 0.5 * s(0)
    p.body_pose[:, J("right_shoulder"), 2] = 0.9 - 0.5 * s(1)
    p.body_pose[:, J("left_shoulder"), 0] = 0.4 * s(2)
    p.body_pose[:, J("right_shoulder"), 0] = -0.4 * s(2)
    p.body_pose[:, J("left_elbow"), 1] = -0.5 * s(3).abs()
    p.body_pose[:, J("right_elbow"), 1] = 0.5 * s(4).abs()
    p.body_pose[:, J("left_hip"), 0] = -0.4 * s(5)
    p.body_pose[:, J("right_hip"), 0] = 0.4 * s(5)
    p.body_pose[:, J("left_knee"), 0] = 0.6 * s(6).clamp(min=0)
    p.body_pose[:, J("right_knee"), 0] = 0.6 * (-s(6)).clamp(min=0)
    p.body_pose[:, J("spine2"), 1] = 0.2 * s(7)
    p.global_orient[:, 1] = 0.3 * s(7)
    return p


def toy_recon(body, subject: ToySubject, params: SMPLXParams):
    """A ``Recon`` whose frames are the subject's exact posed surfaces (B = params.batch_size)."""
    from recon.artifact import FrameRecon, Recon

    p = params.clone()
    p.betas = subject.betas.expand(p.batch_size, -1).clone()
    V = subject.posed(body, p)
    frames = [FrameRecon(V[i].numpy().astype(np.float32), subject.faces.numpy(), subject.colors, i)
              for i in range(p.batch_size)]
    return Recon(frames, p, {"source": "toy"})


def toy_tracks(body, subject: ToySubject, recon, size: int = 128):
    """``Tracks`` with flat-shaded renders of the recon frames (images, masks) from a front camera."""
    from avatar.geometry.camera import Camera
    from avatar.scanimate.render import render_mesh
    from tracking.artifact import Tracks

    cam = Camera.look_at((0.0, -0.2, 4.0), (0.0, -0.2, 0.0), width=size, height=size, fov_deg=35.0)
    imgs, masks = [], []
    col = torch.from_numpy(subject.colors)
    for fr in recon.frames:
        img, m = render_mesh(torch.from_numpy(fr.verts), subject.faces, cam, col, shading="flat", background=(0, 0, 0))
        imgs.append(img), masks.append(m.astype(np.float32))
    T = len(recon.frames)
    return Tracks(params=recon.params.clone(), camera=cam, images=np.stack(imgs), masks=np.stack(masks),
                  keypoints=np.zeros((T, 55, 3), np.float32), crops=np.tile([0, 0, size, size], (T, 1)).astype(np.float32),
                  valid=np.ones(T, bool), frame_indices=np.arange(T), fps=30.0, video="toy")


def tiny_avatar_config(**overrides):
    """An :class:`~avatar.scanimate.stage.AvatarConfig` small enough for unit tests (seconds on CPU)."""
    from avatar.scanimate.canonicalize import SkinningConfig
    from avatar.scanimate.stage import AvatarConfig
    from avatar.scanimate.train import SDFConfig

    cfg = AvatarConfig(samples_per_frame=800, extract_voxel=0.03, eval_max_side=96, holdout_every=0,
                       skinning=SkinningConfig(iters=15, batch=512, hidden=32, layers=2, latent_dim=4),
                       sdf=SDFConfig(iters=40, batch=512, hidden=48, layers=3, color_hidden=32, color_layers=2,
                                     grid_voxel=0.03))
    import dataclasses

    return dataclasses.replace(cfg, **overrides)
