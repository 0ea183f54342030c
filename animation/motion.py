"""Motion files: AMASS (SMPL-H / SMPL-X ``poses``) and SMPL-X (``root_orient``, ``pose_body``, ...) npz layouts.

Everything is converted to one :class:`Motion`: SMPL-X joint order, axis-angle, world frame of this
project (+Y up, metres).  AMASS files are Z-up (their ``poses[:, :3]`` stand the body along +Z);
``load_motion(up="auto")`` rotates them into Y-up, SMPL-X-layout files are taken as Y-up.

Layouts accepted (T frames):

* AMASS: ``poses`` (T, 156) SMPL-H [root 3, body 63, left hand 45, right hand 45] or (T, 165) SMPL-X
  [root, body, jaw, left eye, right eye, left hand, right hand]; ``trans`` (T, 3); ``betas`` (NB,) or
  (T, NB) optional; ``mocap_framerate`` or ``mocap_frame_rate``; ``gender`` optional.
* SMPL-X: ``root_orient`` (T, 3), ``pose_body`` (T, 63), ``trans`` (T, 3) required; ``pose_hand``
  (T, 90), ``pose_jaw`` (T, 3), ``pose_eye`` (T, 6), ``betas``, ``gender`` optional; frame rate from
  ``mocap_frame_rate`` / ``mocap_framerate`` / ``fps``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from foundation.body.params import NUM_JOINTS, SMPLXParams
from foundation.io.atomic import atomic_save_npz

log = logging.getLogger(__name__)

__all__ = ["Motion", "MotionError", "load_motion", "resample_motion", "write_demo_motion", "Z_UP_TO_Y_UP"]

FPS_KEYS = ("mocap_framerate", "mocap_frame_rate", "fps")
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
        source: file it came from; layout: "amass" or "smplx".
    """

    poses: np.ndarray
    trans: np.ndarray
    fps: float
    betas: np.ndarray | None = None
    gender: str = "neutral"
    source: str = ""
    layout: str = "smplx"

    def __post_init__(self) -> None:
        T = self.poses.shape[0]
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

    def save(self, path: str | Path) -> None:
        """Write in the SMPL-X layout (Y-up), atomically."""
        p = self.poses.reshape(len(self), -1)
        d = dict(root_orient=p[:, :3], pose_body=p[:, 3:66], pose_jaw=p[:, 66:69], pose_eye=p[:, 69:75],
                 pose_hand=p[:, 75:165], trans=self.trans, mocap_frame_rate=np.float32(self.fps),
                 gender=np.array(self.gender))
        if self.betas is not None:
            d["betas"] = self.betas
        atomic_save_npz(path, **d)


# ---------------------------------------------------------------------------------------------- loading
def _rotvec_to_matrix(rv: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(rv.reshape(-1, 3)).as_matrix().reshape(*rv.shape[:-1], 3, 3)


def _matrix_to_rotvec(m: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(m.reshape(-1, 3, 3)).as_rotvec().reshape(*m.shape[:-2], 3)


def _array(d: dict, key: str, path: Path, T: int | None, width: int | None) -> np.ndarray:
    """d[key] as float32 (T, width) (accepting (T, width/3, 3)); errors name file, key, shapes."""
    a = np.asarray(d[key])
    if not np.issubdtype(a.dtype, np.number):
        raise MotionError(f"{path}: key '{key}' must be numeric, got dtype {a.dtype}")
    if a.ndim == 3 and width is not None and a.shape[1] * a.shape[2] == width:
        a = a.reshape(a.shape[0], width)
    if a.ndim != 2 or (width is not None and a.shape[1] != width) or (T is not None and a.shape[0] != T):
        want = f"({T if T is not None else 'T'}, {width})"
        raise MotionError(f"{path}: key '{key}' must have shape {want}, got {a.shape}")
    if not np.isfinite(a).all():
        raise MotionError(f"{path}: key '{key}' contains NaN or inf values")
    return a.astype(np.float32)


def _fps(d: dict, path: Path, default: float | None) -> float:
    for k in FPS_KEYS:
        if k in d:
            v = float(np.asarray(d[k]).reshape(-1)[0])
            if not (v > 0 and math.isfinite(v)):
                raise MotionError(f"{path}: key '{k}' must be a positive frame rate, got {v}")
            return v
    if default is not None:
        return float(default)
    raise MotionError(f"{path}: no frame rate: expected one of the keys {list(FPS_KEYS)} "
                      f"(or pass fps=... / animation.motion_fps=...)")


def _betas(d: dict, path: Path) -> np.ndarray | None:
    if "betas" not in d:
        return None
    b = np.asarray(d["betas"], np.float32)
    if b.ndim == 2:
        b = b[0]
    if b.ndim != 1:
        raise MotionError(f"{path}: key 'betas' must have shape (NB,) or (T, NB), got {np.asarray(d['betas']).shape}")
    return b


def _gender(d: dict) -> str:
    if "gender" not in d:
        return "neutral"
    g = np.asarray(d["gender"]).reshape(-1)[0] if np.asarray(d["gender"]).ndim else np.asarray(d["gender"]).item()
    return g.decode() if isinstance(g, bytes) else str(g)


def _load_amass(d: dict, path: Path, fps: float | None) -> Motion:
    poses = np.asarray(d["poses"])
    if poses.ndim != 2 or poses.shape[1] not in (156, 165):
        raise MotionError(f"{path}: key 'poses' must have shape (T, 156) (SMPL-H) or (T, 165) (SMPL-X), "
                          f"got {poses.shape}")
    T = poses.shape[0]
    poses = _array(d, "poses", path, T, poses.shape[1])
    if "trans" not in d:
        raise MotionError(f"{path}: AMASS layout is missing key 'trans' (T, 3)")
    trans = _array(d, "trans", path, T, 3)
    full = np.zeros((T, NUM_JOINTS, 3), np.float32)
    if poses.shape[1] == 156:  # SMPL-H: 22 body joints + 2 x 15 hand joints, no jaw / eyes
        full[:, :22] = poses[:, :66].reshape(T, 22, 3)
        full[:, 25:55] = poses[:, 66:156].reshape(T, 30, 3)
    else:
        full[:] = poses.reshape(T, NUM_JOINTS, 3)
    return Motion(full, trans, _fps(d, path, fps), _betas(d, path), _gender(d), str(path), "amass")


def _load_smplx(d: dict, path: Path, fps: float | None) -> Motion:
    missing = [k for k in ("root_orient", "pose_body", "trans") if k not in d]
    if missing:
        raise MotionError(f"{path}: SMPL-X layout is missing keys {missing} (needs root_orient (T, 3), "
                          f"pose_body (T, 63), trans (T, 3))")
    root = _array(d, "root_orient", path, None, 3)
    T = root.shape[0]
    full = np.zeros((T, NUM_JOINTS, 3), np.float32)
    full[:, 0] = root
    full[:, 1:22] = _array(d, "pose_body", path, T, 63).reshape(T, 21, 3)
    if "pose_jaw" in d:
        full[:, 22] = _array(d, "pose_jaw", path, T, 3)
    if "pose_eye" in d:
        full[:, 23:25] = _array(d, "pose_eye", path, T, 6).reshape(T, 2, 3)
    if "pose_hand" in d:
        full[:, 25:55] = _array(d, "pose_hand", path, T, 90).reshape(T, 30, 3)
    trans = _array(d, "trans", path, T, 3)
    return Motion(full, trans, _fps(d, path, fps), _betas(d, path), _gender(d), str(path), "smplx")


ACCEPTED_LAYOUTS = ("accepted: an .npz in AMASS layout ('poses' (T, 156) SMPL+H or (T, 165) SMPL-X, 'trans', "
                    "'mocap_framerate') or SMPL-X layout ('root_orient', 'pose_body', 'trans', ...)")


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def load_motion(path: str | Path, *, up: str = "auto", fps: float | None = None,
                pelvis: np.ndarray | None = None) -> Motion:
    """Read an AMASS- or SMPL-X-layout motion ``.npz`` into a Y-up :class:`Motion`.

    Args:
        path: the ``.npz`` file.
        up: the file's up axis: "auto" (AMASS -> "z", SMPL-X layout -> "y"), "y" or "z".
        fps: frame rate to use when the file stores none.
        pelvis: (3,) canonical pelvis of the playing body, for the exact Z-up rotation (zero for Anny).

    Raises:
        MotionError: naming the file and the missing / badly shaped key.
    """
    path = Path(path)
    if up not in ("auto", "y", "z"):
        raise MotionError(f"load_motion: up must be 'auto', 'y' or 'z', got {up!r}")
    if not path.exists():
        raise MotionError(f"motion file {path} does not exist")
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise MotionError(f"{path}: not a readable .npz motion file ({_one_line(e)}); {ACCEPTED_LAYOUTS}") from e
    if not isinstance(z, np.lib.npyio.NpzFile):  # a bare .npy array
        raise MotionError(f"{path}: a single array of shape {tuple(np.shape(z))} ({np.asarray(z).dtype}), not a "
                          f"motion .npz; {ACCEPTED_LAYOUTS}")
    try:
        with z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise MotionError(f"{path}: not a readable .npz motion file ({_one_line(e)}); {ACCEPTED_LAYOUTS}") from e
    if "poses" in d:
        m = _load_amass(d, path, fps)
    elif "root_orient" in d or "pose_body" in d:
        m = _load_smplx(d, path, fps)
    else:
        raise MotionError(f"{path}: unknown motion layout, keys {sorted(d)}; {ACCEPTED_LAYOUTS}")
    if len(m) < 1:
        raise MotionError(f"{path}: the motion has no frames")
    src_up = up if up != "auto" else ("z" if m.layout == "amass" else "y")
    if src_up == "z":
        m = m.rotated(Z_UP_TO_Y_UP, pelvis)
    log.info("motion %s: %d frames at %.1f fps (%s layout, %s-up)", path.name, len(m), m.fps, m.layout, src_up)
    return m


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
