"""Linear blend skinning as pure functions (shared by every backend and by the avatar).

Frames: joints are rotated about axes of the world (SMPL-X) frame, as in SMPL-X:
rest joint frames are the identity.
"""

from __future__ import annotations

from collections.abc import Sequence

import roma
import torch


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle -> (..., 3, 3) rotation matrices."""
    return roma.rotvec_to_rotmat(aa)


def forward_kinematics(
    rot_local: torch.Tensor, rest_joints: torch.Tensor, parents: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pose a kinematic tree.

    Args:
        rot_local: (B, J, 3, 3) rotation of each joint relative to its parent.
        rest_joints: (B, J, 3) joint positions in the rest pose.
        parents: length-J parent indices, ``parents[0] == -1``, parents before children.

    Returns:
        rot_world: (B, J, 3, 3) accumulated rotations.
        joints: (B, J, 3) posed joint positions.
        transforms: (B, J, 4, 4) rigid transforms taking rest-space points to posed space,
            ``x_posed = R_j (x_rest - j_rest) + j_posed``.
    """
    if rot_local.shape[:2] != rest_joints.shape[:2]:
        raise ValueError(f"rot_local {tuple(rot_local.shape)} and rest_joints {tuple(rest_joints.shape)} disagree")
    B, J = rest_joints.shape[:2]
    rot_world: list[torch.Tensor] = [rot_local[:, 0]]
    joints: list[torch.Tensor] = [rest_joints[:, 0]]
    for j in range(1, J):
        p = parents[j]
        rw = rot_world[p]
        rot_world.append(rw @ rot_local[:, j])
        joints.append(joints[p] + (rw @ (rest_joints[:, j] - rest_joints[:, p])[..., None])[..., 0])
    R = torch.stack(rot_world, 1)
    jp = torch.stack(joints, 1)
    T = torch.zeros(B, J, 4, 4, dtype=R.dtype, device=R.device)
    T[..., :3, :3] = R
    T[..., :3, 3] = jp - (R @ rest_joints[..., None])[..., 0]
    T[..., 3, 3] = 1.0
    return R, jp, T


def skin_points(points: torch.Tensor, weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Blend rigid transforms per point.

    Args:
        points: (B, N, 3) rest-space points.
        weights: (N, J) or (B, N, J) skinning weights.
        transforms: (B, J, 4, 4).

    Returns:
        (B, N, 3) skinned points.
    """
    B, J = transforms.shape[:2]
    T = transforms[:, :, :3, :].reshape(B, J, 12)  # the bottom row of a rigid transform is (0, 0, 0, 1)
    if weights.ndim == 2:
        M = torch.einsum("nj,bjk->bnk", weights, T)
    else:
        M = torch.bmm(weights, T)
    M = M.view(B, -1, 3, 4)
    # the 3 x 4 blend applied column by column: a batched matmul of 3 x 3 blocks is several times slower (studio
    # avatar, 8 frames x 54,848 vertices, 2 cores: 16 instead of 47 ms, 93 instead of 140 ms with the backward)
    return M[..., 3] + M[..., 0] * points[..., 0:1] + M[..., 1] * points[..., 1:2] + M[..., 2] * points[..., 2:3]


def invert_skinning(points: torch.Tensor, weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Inverse LBS: posed points -> rest space with the blended transform's inverse.

    Args:
        points: (B, N, 3) posed points; weights: (B, N, J) or (N, J); transforms: (B, J, 4, 4).
    Returns:
        (B, N, 3) rest-space points.
    """
    B = points.shape[0]
    Tf = transforms.reshape(B, -1, 16)
    eq = "nj,bjk->bnk" if weights.ndim == 2 else "bnj,bjk->bnk"
    M = torch.einsum(eq, weights, Tf).reshape(B, -1, 4, 4)
    Minv = torch.linalg.inv(M)
    return (Minv[..., :3, :3] @ points[..., None])[..., 0] + Minv[..., :3, 3]


def add_translation(transforms: torch.Tensor, transl: torch.Tensor) -> torch.Tensor:
    """(B, J, 4, 4) transforms with a (B, 3) world translation applied after them."""
    out = transforms.clone()
    out[..., :3, 3] = out[..., :3, 3] + transl[:, None]
    return out
