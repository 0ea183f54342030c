"""The :class:`Motion` a stage plays: SMPL-X joint rotations in this project's world (+Y up, metres).

Reading the files people have (AMASS, SMPL, SMPL+H, SMPL-X, smplx keywords, AIST++) is
:mod:`animation.motion_files`; a motion tracked from a video is :func:`motion_from_tracks`.
:meth:`Motion.save` writes the AMASS SMPL-X layout (Z-up), which every tool of that ecosystem reads.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from foundation.body.params import NUM_JOINTS, SMPLXParams
from foundation.io.atomic import atomic_save_npz

if TYPE_CHECKING:
    from foundation.body.model import BodyModel
    from tracking.artifact import Tracks

log = logging.getLogger(__name__)

__all__ = ["Motion", "MotionError", "DEFAULT_FPS", "NUM_JOINTS", "Z_UP_TO_Y_UP", "up_rotation", "resample_motion",
           "motion_from_tracks", "body_rest", "standing_height", "write_demo_motion"]

DEFAULT_FPS = 30.0  # frame rate of motion files that store none
# rotation about +X by -90 deg: (x, y, z) -> (x, z, -y): AMASS Z-up -> Y-up
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]], np.float64)


class MotionError(ValueError):
    """A motion file is unreadable or has missing / badly shaped keys."""


@dataclass(frozen=True, eq=False)
class Motion:
    """A body motion in SMPL-X joint order, world frame +Y up.

    Attributes:
        poses: (T, 55, 3) float32 axis-angle, local to the parent joint (joint 0 = global orient).
        trans: (T, 3) float32 metres, the root translation (SMPL-X ``transl``).
        fps: frames per second.
        betas: (NB,) float32 shape of the mocap subject, or None (the avatar's own shape is used).
        gender: as stored in the file ("neutral" when absent).
        source: file it came from; layout: which file layout it was read from ("smpl", "smplh",
            "smplx", "amass_smplx", "smplx_kwargs", "aist", "video").
        height: standing height (m) of the performer in this project's body model, when known (a
            tracked video); the player scales the translation by its own height over this one.
    """

    poses: np.ndarray
    trans: np.ndarray
    fps: float
    betas: np.ndarray | None = None
    gender: str = "neutral"
    source: str = ""
    layout: str = "smplx"
    height: float | None = None

    def __post_init__(self) -> None:
        T = self.poses.shape[0]
        if T < 1:
            raise MotionError("Motion: no frames")
        if self.poses.shape != (T, NUM_JOINTS, 3):
            raise MotionError(f"Motion.poses must be (T, {NUM_JOINTS}, 3), got {self.poses.shape}")
        if self.trans.shape != (T, 3):
            raise MotionError(f"Motion.trans must be ({T}, 3), got {self.trans.shape}")
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise MotionError(f"Motion.fps must be > 0, got {self.fps}")

    def __len__(self) -> int:
        return self.poses.shape[0]

    @property
    def duration(self) -> float:
        """Seconds from the first to the last frame."""
        return (len(self) - 1) / self.fps

    def to_params(self, betas: torch.Tensor, num_expression: int = 10) -> SMPLXParams:
        """SMPL-X parameters (B = T) with the given (NB,) or (1, NB) betas (the avatar's shape)."""
        T = len(self)
        b = betas.reshape(1, -1).float().expand(T, -1).clone()
        p = SMPLXParams.from_full_pose(torch.from_numpy(self.poses).float(), betas=b,
                                       transl=torch.from_numpy(self.trans).float())
        p.expression = torch.zeros(T, num_expression)
        return p

    def rotated(self, R: np.ndarray, pelvis: np.ndarray | None = None) -> "Motion":
        """The motion seen in a world rotated by ``R`` (3, 3): root orientation and translation.

        ``pelvis`` (3,) is the canonical pelvis joint of the body that will play it (SMPL-X rotates
        the root about it); zero for the Anny backend.
        """
        R = np.asarray(R, np.float64)
        j0 = np.zeros(3) if pelvis is None else np.asarray(pelvis, np.float64).reshape(3)
        Rg = _rotvec_to_matrix(self.poses[:, 0].astype(np.float64))
        poses = self.poses.copy()
        poses[:, 0] = _matrix_to_rotvec(R @ Rg).astype(np.float32)
        trans = (self.trans.astype(np.float64) @ R.T + R @ j0 - j0).astype(np.float32)
        return replace(self, poses=poses, trans=trans)

    def save(self, path: str | Path, pelvis: np.ndarray | None = None) -> None:
        """Write the AMASS SMPL-X layout (Z-up, ``poses`` (T, 165) and the split keys), atomically.

        ``pelvis``: (3,) canonical pelvis of the body that played it (the root rotates about it).
        """
        m = self.rotated(up_rotation("z").T, pelvis)  # +Y up -> AMASS's +Z up
        p = m.poses.reshape(len(m), -1)
        d = dict(poses=p, root_orient=p[:, :3], pose_body=p[:, 3:66], pose_jaw=p[:, 66:69], pose_eye=p[:, 69:75],
                 pose_hand=p[:, 75:165], trans=m.trans, mocap_frame_rate=np.float64(m.fps),
                 gender=np.array(m.gender), surface_model_type=np.array("smplx"))
        if m.betas is not None:
            d["betas"] = m.betas
        atomic_save_npz(path, **d)


# ---------------------------------------------------------------------------------------------- rotations
def _rotvec_to_matrix(rv: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(rv.reshape(-1, 3)).as_matrix().reshape(*rv.shape[:-1], 3, 3)


def _matrix_to_rotvec(m: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(m.reshape(-1, 3, 3)).as_rotvec().reshape(*m.shape[:-2], 3)


def up_rotation(axis: str) -> np.ndarray:
    """(3, 3) rotation taking a world whose up axis is ``axis`` ("y", "-y", "z", "-z", "x", "-x") to +Y up.

    Y and Z axes turn about X (so +Z-up AMASS keeps its forward direction), X axes about Z.
    """
    c = {"y": np.eye(3),
         "-y": np.array([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]]),
         "z": Z_UP_TO_Y_UP,
         "-z": np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]]),
         "x": np.array([[0, -1.0, 0], [1.0, 0, 0], [0, 0, 1.0]]),
         "-x": np.array([[0, 1.0, 0], [-1.0, 0, 0], [0, 0, 1.0]])}
    if axis not in c:
        raise MotionError(f"up axis must be one of {sorted(c)}, got {axis!r}")
    return c[axis].astype(np.float64)


# ---------------------------------------------------------------------------------------------- resampling
def _slerp(q0: np.ndarray, q1: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Quaternion slerp, q (..., 4), t broadcastable to (..., 1); shortest arc."""
    dot = (q0 * q1).sum(-1, keepdims=True)
    q1 = np.where(dot < 0, -q1, q1)
    dot = np.abs(dot).clip(max=1.0)
    theta = np.arccos(dot)
    s = np.sin(theta)
    small = s < 1e-6
    w0 = np.where(small, 1 - t, np.sin((1 - t) * theta) / np.where(small, 1, s))
    w1 = np.where(small, t, np.sin(t * theta) / np.where(small, 1, s))
    q = w0 * q0 + w1 * q1
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def resample_motion(motion: Motion, fps: float) -> Motion:
    """Resample to ``fps`` over the same duration: slerp of joint rotations, linear translation.

    Frame k of the result is at time k / fps from the first frame; T' = floor(duration * fps) + 1.
    """
    from scipy.spatial.transform import Rotation

    if not fps > 0:
        raise MotionError(f"resample_motion: fps must be > 0, got {fps}")
    if abs(fps - motion.fps) < 1e-6 or len(motion) == 1:
        return replace(motion, fps=float(fps))
    T = len(motion)
    n = int(math.floor(motion.duration * fps + 1e-6)) + 1
    src = np.arange(n) / fps * motion.fps  # fractional source frame
    i0 = np.clip(np.floor(src).astype(int), 0, T - 1)
    i1 = np.clip(i0 + 1, 0, T - 1)
    a = (src - i0).astype(np.float64)
    q = Rotation.from_rotvec(motion.poses.reshape(-1, 3).astype(np.float64)).as_quat().reshape(T, NUM_JOINTS, 4)
    qi = _slerp(q[i0], q[i1], a[:, None, None])
    poses = Rotation.from_quat(qi.reshape(-1, 4)).as_rotvec().reshape(n, NUM_JOINTS, 3).astype(np.float32)
    trans = ((1 - a)[:, None] * motion.trans[i0] + a[:, None] * motion.trans[i1]).astype(np.float32)
    return replace(motion, poses=poses, trans=trans, fps=float(fps))


# ---------------------------------------------------------------------------------------------- video
@torch.no_grad()
def body_rest(body: BodyModel, betas) -> tuple[torch.Tensor, torch.Tensor]:
    """Canonical template of ``body`` with ``betas`` (NB,) or (1, NB): (V, 3) vertices, (55, 3) joints (metres)."""
    v, j = body.rest(torch.as_tensor(betas).reshape(1, -1).float())
    return v[0], j[0]


def standing_height(rest_verts: torch.Tensor) -> float:
    """Standing height (m) of a canonical template (V, 3): its y extent."""
    return float(rest_verts[:, 1].amax() - rest_verts[:, 1].amin())


@torch.no_grad()
def motion_from_tracks(tracks: Tracks, body: BodyModel, chunk: int = 64) -> Motion:
    """The motion of a tracked clip: its SMPL-X parameters, standing on y = 0, with the performer's height.

    The tracking world is +Y up (the clip camera at the origin), so rotations are kept as they are;
    the translation is shifted so the lowest body point over the clip (its 2nd percentile of per-frame
    minima, robust to a mis-fit frame) is the floor y = 0.

    Args:
        tracks: :class:`tracking.artifact.Tracks` (B = T rows, shared betas; frames without a person
            are bridged by the fitter, so they are part of the motion).
        body: the body model the clip was tracked with.
    """
    params = tracks.params.detach().to("cpu")
    T = params.batch_size
    lows = torch.cat([body(params[s:s + chunk]).vertices[..., 1].amin(-1) for s in range(0, T, chunk)])
    floor = float(np.percentile(lows.numpy(), 2))
    trans = params.transl.numpy().astype(np.float32).copy()
    trans[:, 1] -= floor
    height = standing_height(body_rest(body, params.betas[0])[0])
    return Motion(params.full_pose().numpy().astype(np.float32), trans, float(tracks.fps),
                  params.betas[0].numpy().astype(np.float32), "neutral", str(tracks.video), "video", height)


# ---------------------------------------------------------------------------------------------- demo
def write_demo_motion(path: str | Path, num_frames: int = 60, fps: float = 30.0) -> Path:
    """A procedural walk-in-place with arm swing, in the AMASS layout (Z-up, SMPL-H ``poses`` (T, 156))."""
    from foundation.body.skeleton import JOINT_INDEX

    t = np.arange(num_frames) / fps
    ph = 2 * np.pi * 1.0 * t  # one stride per second
    full = np.zeros((num_frames, 52, 3), np.float32)  # SMPL-H joints (55 minus jaw, eyes)
    J = JOINT_INDEX
    full[:, J["left_hip"], 0] = 0.5 * np.sin(ph)
    full[:, J["right_hip"], 0] = -0.5 * np.sin(ph)
    full[:, J["left_knee"], 0] = 0.6 * np.clip(-np.sin(ph - 0.6), 0, None)
    full[:, J["right_knee"], 0] = 0.6 * np.clip(np.sin(ph - 0.6), 0, None)
    full[:, J["left_shoulder"], 2] = -1.2  # arms down from the T-pose
    full[:, J["right_shoulder"], 2] = 1.2
    full[:, J["left_shoulder"], 0] = -0.4 * np.sin(ph)
    full[:, J["right_shoulder"], 0] = 0.4 * np.sin(ph)
    full[:, J["left_elbow"], 1] = 0.3
    full[:, J["right_elbow"], 1] = -0.3
    full[:, J["spine1"], 1] = 0.1 * np.sin(ph)
    # stand up in AMASS's Z-up world: root = rotation +90 deg about X
    root = np.tile(np.array([np.pi / 2, 0.0, 0.0], np.float32), (num_frames, 1))
    full[:, 0] = root
    trans = np.zeros((num_frames, 3), np.float32)
    trans[:, 1] = -0.3 * t  # walk along AMASS -Y, i.e. the avatar's +Z (towards the viewer)
    trans[:, 2] = 0.95 + 0.02 * np.cos(2 * ph)
    poses = np.concatenate([full[:, :22].reshape(num_frames, 66), full[:, 22:].reshape(num_frames, 90)], 1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_npz(path, poses=poses, trans=trans, betas=np.zeros(16, np.float32),
                    mocap_framerate=np.float64(fps), gender=np.array("neutral"))
    return path
