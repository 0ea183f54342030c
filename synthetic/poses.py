"""Random SMPL-X poses and smooth keyframed motions for the synthetic people.

Conventions (SMPL-X rest T-pose, rotations about the parent frame's axes, radians): the left arm lies
along +X, the right along -X, legs along -Y, the body faces +Z. So, for the left arm, ``Rz(-a)`` lowers
it, ``Rz(+a)`` raises it, ``Ry(-b)`` swings it forward; the right arm mirrors (flip the sign of Y and
Z rotations). Hip flexion (thigh forward) is ``Rx(-a)``, knee flexion ``Rx(+a)``, forward spine bend
``Rx(+a)``, torso twist ``Ry``. Elbow flexion is ``Ry(-c)`` on the left, ``Ry(+c)`` on the right.
"""

from __future__ import annotations

import math

import numpy as np
import roma
import torch

from foundation.body.params import NUM_BODY_JOINTS, SMPLXParams
from foundation.body.skeleton import JOINT_INDEX

__all__ = ["ARCHETYPES", "HARD_ARCHETYPES", "rot", "aim_arm", "archetype_pose", "random_pose", "keyframe_motion",
           "MOTIONS", "motion_params"]

_AX = {"x": 0, "y": 1, "z": 2}


def rot(*steps: tuple[str, float]) -> np.ndarray:
    """Axis-angle (3,) of rotations applied in order (first step first), each about a parent-frame axis."""
    R = torch.eye(3, dtype=torch.float64)
    for axis, angle in steps:
        v = torch.zeros(3, dtype=torch.float64)
        v[_AX[axis]] = angle
        R = roma.rotvec_to_rotmat(v) @ R
    return roma.rotmat_to_rotvec(R).numpy()


def aim_arm(upper: tuple, fore: tuple, elbow: float) -> np.ndarray:
    """Left-shoulder axis-angle pointing the upper arm along ``upper`` (world, rest frame) with the forearm
    (after an elbow flexion of ``elbow`` rad) as close as possible to ``fore`` (TRIAD alignment)."""
    def frame(a, b):
        a = np.asarray(a, np.float64) / np.linalg.norm(a)
        c = np.cross(a, b)
        c /= np.linalg.norm(c)
        return np.stack([a, np.cross(c, a), c], 1)

    rest_fore = np.array([math.cos(elbow), 0.0, math.sin(elbow)])  # Ry(-elbow) applied to +X
    R = frame(upper, fore) @ frame((1.0, 0.0, 0.0), rest_fore).T
    return roma.rotmat_to_rotvec(torch.tensor(R)).numpy()


def _mirror(aa: np.ndarray) -> np.ndarray:
    """Left-side rotation -> the mirrored right-side one (reflection x -> -x flips the Y and Z components)."""
    return np.array([aa[0], -aa[1], -aa[2]])


def _arms(p: dict, left: np.ndarray, right: np.ndarray | None = None, elbow_l: float = 0.0,
          elbow_r: float | None = None) -> None:
    p["left_shoulder"] = left
    p["right_shoulder"] = _mirror(left) if right is None else right
    p["left_elbow"] = rot(("y", -elbow_l))
    p["right_elbow"] = rot(("y", elbow_l if elbow_r is None else elbow_r))


def _legs(p: dict, hip_l: float, knee_l: float, hip_r: float | None = None, knee_r: float | None = None,
          spread: float = 0.0) -> None:
    hip_r = hip_l if hip_r is None else hip_r
    knee_r = knee_l if knee_r is None else knee_r
    p["left_hip"] = rot(("z", spread), ("x", -hip_l))
    p["right_hip"] = rot(("z", -spread), ("x", -hip_r))
    p["left_knee"] = rot(("x", knee_l))
    p["right_knee"] = rot(("x", knee_r))


def _relaxed(p: dict, a: float = 1.25, elbow: float = 0.15) -> None:
    _arms(p, rot(("z", -a)), elbow_l=elbow)


# ------------------------------------------------------------------------------------ archetypes
def _a_relaxed(p, r):
    _relaxed(p, r.uniform(1.1, 1.4), r.uniform(0.0, 0.4))


def _a_apose(p, r):
    _relaxed(p, r.uniform(0.5, 0.9), r.uniform(0.0, 0.3))


def _a_tpose(p, r):
    _relaxed(p, r.uniform(-0.15, 0.2), r.uniform(0.0, 0.3))


def _a_arms_up(p, r):
    _arms(p, rot(("z", r.uniform(0.9, 1.3))), elbow_l=r.uniform(0.0, 0.5))


def _a_one_arm_up(p, r):
    up = rot(("z", r.uniform(0.8, 1.3)))
    down = _mirror(rot(("z", -r.uniform(1.0, 1.35))))
    if r.uniform() < 0.5:
        _arms(p, up, down, r.uniform(0, 0.6), r.uniform(0, 0.4))
    else:
        _arms(p, rot(("z", -r.uniform(1.0, 1.35))), _mirror(up), r.uniform(0, 0.4), r.uniform(0, 0.6))


def _a_crossed_arms(p, r):
    e = r.uniform(1.9, 2.2)
    _arms(p, aim_arm((0.3, -0.85, r.uniform(0.3, 0.5)), (-0.9, r.uniform(0.0, 0.2), 0.35), e), elbow_l=e)


def _a_hands_on_hips(p, r):
    e = r.uniform(1.4, 1.8)
    _arms(p, aim_arm((0.55, -0.8, -r.uniform(0.1, 0.35)), (-0.5, -0.7, 0.3), e), elbow_l=e)


def _a_reach_forward(p, r):
    _arms(p, rot(("y", -r.uniform(1.2, 1.5)), ("z", -r.uniform(0.0, 0.4))), elbow_l=r.uniform(0.0, 0.4))


def _a_walk(p, r):
    s = r.uniform(0.3, 0.55) * (1 if r.uniform() < 0.5 else -1)
    _legs(p, s, 0.1 + max(0, -s) * 0.8, -s, 0.1 + max(0, s) * 0.8)
    _arms(p, rot(("z", -1.25), ("x", -0.6 * s)), rot(("z", 1.25), ("x", 0.6 * s)), 0.3, 0.3)
    p["spine2"] = rot(("y", 0.15 * s))


def _a_sit(p, r):
    h = r.uniform(1.3, 1.6)
    _legs(p, h, r.uniform(1.3, 1.7), spread=r.uniform(0.0, 0.2))
    p["left_ankle"] = rot(("x", -0.2))
    p["right_ankle"] = rot(("x", -0.2))
    _arms(p, rot(("z", -1.2), ("x", -r.uniform(0.5, 0.9))), elbow_l=r.uniform(0.6, 1.2))
    p["spine1"] = rot(("x", r.uniform(0.0, 0.3)))


def _a_squat(p, r):
    h = r.uniform(0.8, 1.3)
    _legs(p, h, h * r.uniform(1.4, 1.8), spread=r.uniform(0.1, 0.35))
    p["left_ankle"] = rot(("x", -0.5 * h))
    p["right_ankle"] = rot(("x", -0.5 * h))
    p["spine1"] = rot(("x", 0.3 * h))
    _arms(p, rot(("y", -r.uniform(1.0, 1.4)), ("z", -0.3)), elbow_l=r.uniform(0.0, 0.6))


def _a_bent_knees(p, r):
    h = r.uniform(0.3, 0.7)
    _legs(p, h, 2 * h)
    p["left_ankle"] = rot(("x", -h))
    p["right_ankle"] = rot(("x", -h))
    _relaxed(p, r.uniform(0.8, 1.3), r.uniform(0.2, 1.0))


def _a_turned_torso(p, r):
    t = r.uniform(0.25, 0.45) * (1 if r.uniform() < 0.5 else -1)
    for j in ("spine1", "spine2", "spine3"):
        p[j] = rot(("y", t))
    _arms(p, rot(("z", -r.uniform(0.3, 1.2))), rot(("z", r.uniform(0.3, 1.2))), r.uniform(0, 1.2), -r.uniform(0, 1.2))


def _a_side_bend(p, r):
    t = r.uniform(0.15, 0.3) * (1 if r.uniform() < 0.5 else -1)
    for j in ("spine1", "spine2", "spine3"):
        p[j] = rot(("z", t))
    _arms(p, rot(("z", r.uniform(0.6, 1.2))), rot(("z", 1.3)), r.uniform(0, 0.5), 0.2)


def _a_phone(p, r):
    _arms(p, rot(("z", -1.2), ("x", -0.4)), elbow_l=r.uniform(2.0, 2.4))
    p["right_shoulder"] = _mirror(rot(("z", -1.3)))
    p["right_elbow"] = rot(("y", 0.2))
    p["head"] = rot(("x", 0.3))


def _a_lunge(p, r):
    _legs(p, r.uniform(0.6, 1.0), r.uniform(0.8, 1.2), -r.uniform(0.2, 0.4), r.uniform(0.1, 0.4))
    _arms(p, rot(("z", r.uniform(-0.5, 0.5))), elbow_l=0.2)


ARCHETYPES = {
    "relaxed": _a_relaxed, "a_pose": _a_apose, "t_pose": _a_tpose, "walk": _a_walk,
    "arms_up": _a_arms_up, "one_arm_up": _a_one_arm_up, "crossed_arms": _a_crossed_arms,
    "hands_on_hips": _a_hands_on_hips, "reach_forward": _a_reach_forward, "sit": _a_sit, "squat": _a_squat,
    "bent_knees": _a_bent_knees, "turned_torso": _a_turned_torso, "side_bend": _a_side_bend,
    "phone": _a_phone, "lunge": _a_lunge,
}
HARD_ARCHETYPES = ("arms_up", "crossed_arms", "sit", "squat", "bent_knees", "turned_torso", "lunge", "phone")

_NOISE = {  # per-joint std of the random perturbation, radians
    "spine1": 0.06, "spine2": 0.06, "spine3": 0.06, "neck": 0.1, "head": 0.12, "left_collar": 0.05,
    "right_collar": 0.05, "left_shoulder": 0.15, "right_shoulder": 0.15, "left_elbow": 0.12, "right_elbow": 0.12,
    "left_wrist": 0.2, "right_wrist": 0.2, "left_hip": 0.08, "right_hip": 0.08, "left_knee": 0.06,
    "right_knee": 0.06, "left_ankle": 0.08, "right_ankle": 0.08,
}


def archetype_pose(name: str, rng: np.random.Generator) -> np.ndarray:
    """(21, 3) SMPL-X body pose of archetype ``name`` with its random parameters (no extra noise)."""
    p: dict[str, np.ndarray] = {}
    ARCHETYPES[name](p, rng)
    pose = np.zeros((NUM_BODY_JOINTS, 3))
    for j, aa in p.items():
        pose[JOINT_INDEX[j] - 1] = aa
    return pose


def _hand(rng: np.random.Generator, side: str) -> np.ndarray:
    """(15, 3) finger pose: a random curl (fingers bend towards the palm, -Y in the rest pose)."""
    curl = rng.uniform(0.0, 1.0)
    sgn = -1.0 if side == "left" else 1.0
    out = np.zeros((15, 3))
    for f in range(5):  # index, middle, pinky, ring, thumb (SMPL-X order)
        for k in range(3):
            a = curl * rng.uniform(0.3, 0.9) * (0.4 if f == 4 else 1.0)
            out[3 * f + k] = [0.0, 0.0, sgn * a] if f < 4 else [0.0, -sgn * 0.5 * a, 0.0]
    return out


def random_pose(rng: np.random.Generator, *, hard_prob: float = 0.5, yaw_range: float = math.pi,
                frontal_prob: float = 0.4) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """A random plausible pose.

    Args:
        hard_prob: probability of a hard archetype (:data:`HARD_ARCHETYPES`).
        yaw_range: |global yaw| <= this (radians); ``frontal_prob`` of the samples stay within 35 degrees.

    Returns:
        global_orient (3,), body_pose (21, 3), left_hand (15, 3), right_hand (15, 3), archetype name.
    """
    names = list(HARD_ARCHETYPES) if rng.uniform() < hard_prob else [n for n in ARCHETYPES if n not in HARD_ARCHETYPES]
    name = str(rng.choice(names))
    pose = archetype_pose(name, rng)
    for j, s in _NOISE.items():
        pose[JOINT_INDEX[j] - 1] += rng.normal(0, s, 3)
    yaw = rng.uniform(-0.6, 0.6) if rng.uniform() < frontal_prob else rng.uniform(-yaw_range, yaw_range)
    orient = rot(("x", rng.normal(0, 0.05)), ("z", rng.normal(0, 0.05)), ("y", yaw))
    return orient, pose, _hand(rng, "left"), _hand(rng, "right"), name


# ------------------------------------------------------------------------------------ motions
def _kf(**joints) -> dict[str, np.ndarray]:
    return joints


def _walk_keys(phase: float, amp: float = 0.45) -> dict:
    s = amp * math.sin(2 * math.pi * phase)
    c = amp * math.cos(2 * math.pi * phase)
    p = {}
    _legs(p, s, 0.15 + max(0.0, -s) * 1.1 + max(0.0, c) * 0.3, -s, 0.15 + max(0.0, s) * 1.1 + max(0.0, -c) * 0.3)
    _arms(p, rot(("z", -1.25), ("x", -0.7 * s)), rot(("z", 1.25), ("x", 0.7 * s)), 0.35, 0.35)
    p["spine2"] = rot(("y", 0.2 * s))
    return p


MOTIONS = ("walk_turn", "arms_squat")


def _motion_keys(name: str) -> list[tuple[float, dict, float]]:
    """Keyframes (time in [0, 1], joint -> axis-angle, global yaw) of a named motion."""
    keys: list[tuple[float, dict, float]] = []
    if name == "walk_turn":
        # walk in place while turning from -35 to +35 degrees, then raise both arms
        for i in range(9):
            t = i / 12
            keys.append((t, _walk_keys(i / 4), math.radians(-35 + 70 * t / (8 / 12))))
        up = {}
        _arms(up, rot(("z", 1.1)), elbow_l=0.2)
        mid = {}
        _arms(mid, rot(("z", 0.0)), elbow_l=0.1)
        keys += [(10 / 12, mid, math.radians(35)), (1.0, up, math.radians(20))]
    elif name == "arms_squat":
        # held-out motion: reach forward, squat, cross arms, turn the other way
        reach, squat, cross, side = {}, {}, {}, {}
        _arms(reach, rot(("y", -1.35)), elbow_l=0.1)
        _a_squat(squat, np.random.default_rng(1))
        _a_crossed_arms(cross, np.random.default_rng(2))
        _a_side_bend(side, np.random.default_rng(3))
        rel = {}
        _relaxed(rel)
        keys = [(0.0, rel, 0.3), (0.25, reach, 0.1), (0.5, squat, -0.2), (0.75, cross, -0.6), (1.0, side, -0.9)]
    else:
        raise ValueError(f"unknown motion {name!r}; choose from {MOTIONS}")
    return keys


def keyframe_motion(name: str, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample a named motion at ``num_frames`` evenly spaced times.

    Keyframe poses are interpolated per joint with a smoothstep ease (quaternion slerp between
    keys), so velocities vanish at keys and the motion stays smooth.

    Returns:
        global_orient (T, 3) and body_pose (T, 21, 3), axis-angle.
    """
    keys = _motion_keys(name)
    times = np.array([k[0] for k in keys])
    poses = []
    for _, joints, _ in keys:
        pose = np.zeros((NUM_BODY_JOINTS, 3))
        for j, aa in joints.items():
            pose[JOINT_INDEX[j] - 1] = aa
        poses.append(pose)
    P = torch.tensor(np.stack(poses))  # (K, 21, 3)
    Q = roma.rotvec_to_unitquat(P)
    yaws = np.array([k[2] for k in keys])
    ts = np.linspace(0.0, 1.0, num_frames)
    out_pose, out_orient = [], []
    for t in ts:
        i = int(np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 2))
        u = (t - times[i]) / (times[i + 1] - times[i])
        u = u * u * (3 - 2 * u)
        q = roma.unitquat_slerp(Q[i], Q[i + 1], torch.tensor([u], dtype=Q.dtype), shortest_arc=True)[0]
        out_pose.append(roma.unitquat_to_rotvec(q).numpy())
        yaw = yaws[i] + u * (yaws[i + 1] - yaws[i])
        out_orient.append(rot(("y", yaw)))
    return np.stack(out_orient), np.stack(out_pose)


def motion_params(name: str, num_frames: int, betas: torch.Tensor, transl: np.ndarray | None = None
                  ) -> SMPLXParams:
    """SMPLXParams (B = num_frames) of a named motion for one subject (``betas`` (1, NB))."""
    orient, pose = keyframe_motion(name, num_frames)
    p = SMPLXParams.zeros(num_frames, betas.shape[1])
    p.global_orient = torch.tensor(orient, dtype=torch.float32)
    p.body_pose = torch.tensor(pose, dtype=torch.float32)
    p.betas = betas.expand(num_frames, -1).clone()
    if transl is not None:
        p.transl = torch.tensor(np.broadcast_to(transl, (num_frames, 3)), dtype=torch.float32).clone()
    return p
