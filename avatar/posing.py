"""Fast pose-dependent correction of the canonical mesh (animation).

The reference (:func:`avatar.extract.pose_corrections`) evaluates the canonical SDF's MLP
on every canonical vertex, every frame.  :class:`PoseCorrector` gives the same result much faster:

1. **Cached pose-independent input.**  The SDF's first layer acts on ``[PE(x), pose_in(m(x) * theta)]``;
   its ``PE(x)`` half (and all biases) is computed once per vertex.  The pose half is linear in the
   joint rotations, ``sum_j m_vj G_j theta_j`` with ``G_j = W1_pose @ W_pose_in[:, 3j:3j+3]`` (hidden, 3),
   so a frame costs one (N, 21) x (21, hidden) product instead of positional encoding + two layers.
   The zero-pose residual (subtracted from every frame) is computed once, and the body-SDF prior
   cancels out of ``f(x, p(theta)) - f(x, p(0))``.
2. **Anchors.**  The correction is a smooth scalar field along the normals; it is evaluated on
   ``K`` anchor vertices (one per ``spacing``-sized voxel cell of the canonical mesh) and interpolated
   to all vertices with fixed weights (Gaussian weights of the ``k`` nearest anchors, damped
   across opposite-facing surfaces, e.g. between the legs).  ``spacing=0`` uses every vertex (exact).
3. **Batched frames.**  All frames of a chunk go through the MLP in one call.

Frames: canonical vertices and offsets in the body's rest (T-pose) frame, metres.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from avatar.fields import NUM_POSE_JOINTS, CanonicalSDF, positional_encoding

log = logging.getLogger(__name__)

__all__ = ["PoseCorrector", "select_anchors", "anchor_interpolation", "pose_transforms", "joint_transforms", "skin_vertices"]


def select_anchors(verts: torch.Tensor, spacing: float) -> torch.Tensor:
    """(K,) long indices of anchor vertices: per ``spacing`` voxel cell, the vertex nearest the cell's mean.

    Args:
        verts: (V, 3) canonical vertices, metres; spacing: cell size (m); <= 0 returns all vertices.
    """
    V = verts.shape[0]
    if spacing <= 0:
        return torch.arange(V)
    cell = torch.floor(verts / spacing).long()
    cell -= cell.min(0).values
    dims = cell.max(0).values + 1
    key = (cell[:, 0] * dims[1] + cell[:, 1]) * dims[2] + cell[:, 2]
    uniq, inv = torch.unique(key, return_inverse=True)
    K = len(uniq)
    cnt = torch.zeros(K).index_add_(0, inv, torch.ones(V))
    mean = torch.zeros(K, 3).index_add_(0, inv, verts.float()) / cnt[:, None]
    d = (verts - mean[inv]).norm(dim=-1)
    # per cell, the (lowest-index) vertex nearest the cell mean
    best = torch.full((K,), float("inf")).scatter_reduce(0, inv, d, reduce="amin")
    hit = d <= best[inv]
    idx = torch.full((K,), V, dtype=torch.long).scatter_reduce(0, inv[hit], torch.nonzero(hit)[:, 0], reduce="amin")
    return torch.sort(idx).values


def anchor_interpolation(verts: torch.Tensor, normals: torch.Tensor, anchors: torch.Tensor, spacing: float,
                         k: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed weights that spread anchor values over all vertices: ``value_v = sum_i w_vi value[idx_vi]``.

    ``w_vi = exp(-|v - a_i|^2 / (2 spacing^2)) * max(0, n_v . n_a_i)^2`` over the ``k`` nearest anchors,
    normalised per vertex (the nearest anchor alone where all weights vanish), so surfaces facing
    away from each other (the inner sides of the legs) do not mix.

    Args:
        verts: (V, 3); normals: (V, 3) unit; anchors: (K,) vertex indices; spacing: anchor spacing (m).
    Returns:
        idx (V, k) long anchor numbers (0..K-1), w (V, k) float32 rows summing to 1.
    """
    from scipy.spatial import cKDTree

    V, K = verts.shape[0], anchors.shape[0]
    if K == V and torch.equal(anchors, torch.arange(V)):
        return torch.arange(V)[:, None], torch.ones(V, 1)
    k = min(k, K)
    d, j = cKDTree(verts[anchors].numpy()).query(verts.numpy(), k=k, workers=-1)
    d = torch.from_numpy(np.asarray(d, np.float32)).reshape(V, k)
    j = torch.from_numpy(np.asarray(j, np.int64)).reshape(V, k)
    cos = (normals[:, None, :] * normals[anchors][j]).sum(-1).clamp(min=0)
    w = torch.exp(-(d**2) / (2 * spacing**2)) * cos**2
    dead = w.sum(1) <= 1e-8
    w[dead] = 0.0
    w[dead, 0] = 1.0
    return j, (w / w.sum(1, keepdim=True)).float()


def skin_vertices(verts: torch.Tensor, weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Linear blend skinning of all frames with one (V, J) x (J, 12 B) matrix product.

    Args:
        verts: (V, 3) or (B, V, 3) canonical vertices; weights: (V, J); transforms: (B, J, 4, 4).
    Returns:
        (B, V, 3) posed vertices.
    """
    B, J = transforms.shape[:2]
    V = weights.shape[0]
    T = transforms[:, :, :3, :].permute(1, 2, 3, 0).reshape(J, 12 * B)  # (J, 3*4*B)
    M = (weights @ T).reshape(V, 3, 4, B)
    v = (verts if verts.ndim == 3 else verts[None]).permute(1, 2, 0)  # (V, 3, B)
    if v.shape[2] != B:
        v = v.expand(V, 3, B)
    out = M[:, :, 3] + M[:, :, 0] * v[:, None, 0] + M[:, :, 1] * v[:, None, 1] + M[:, :, 2] * v[:, None, 2]  # (V, 3, B)
    return out.permute(2, 0, 1).contiguous()


def pose_transforms(body, params, rest_joints: torch.Tensor) -> torch.Tensor:
    """(B, 55, 4, 4) canonical -> posed joint transforms (translation included) of ``params`` (B frames).

    Same as ``body(params).joint_transforms`` for a body whose rest joints (55, 3) are ``rest_joints``
    (the avatar's fixed shape), without re-building the shaped template or skinning the body mesh.
    """
    return joint_transforms(params.full_pose().float(), params.transl.float(), rest_joints, body.parents)


def joint_transforms(pose: torch.Tensor, transl: torch.Tensor, rest_joints: torch.Tensor, parents) -> torch.Tensor:
    """(B, J, 4, 4) canonical -> posed transforms from (B, J, 3) local axis-angle, (B, 3) translation and
    (J, 3) rest joints (differentiable w.r.t. ``pose`` and ``transl``)."""
    from foundation.body.lbs import add_translation, axis_angle_to_matrix, forward_kinematics

    _, _, T = forward_kinematics(axis_angle_to_matrix(pose), rest_joints.float().expand(pose.shape[0], -1, -1), parents)
    return add_translation(T, transl)


class PoseCorrector:
    """Pose-dependent canonical offsets of a fixed canonical mesh (see the module doc).

    Args:
        sdf: the avatar's canonical SDF; verts, normals: (V, 3) canonical mesh; weights: (V, 55)
            its skinning weights; spread: (55, 55) :func:`~avatar.fields.spread_matrix`;
        spacing: anchor spacing (m), 0 = every vertex; max_offset: clamp of the SDF change (m).
    """

    def __init__(self, sdf: CanonicalSDF, verts: torch.Tensor, normals: torch.Tensor, weights: torch.Tensor,
                 spread: torch.Tensor, spacing: float = 0.03, max_offset: float = 0.05, chunk: int = 65536) -> None:
        mlp = sdf.mlp
        if not (isinstance(mlp, nn.Sequential) and isinstance(mlp[0], nn.Linear)):
            raise TypeError("PoseCorrector: expected CanonicalSDF.mlp to start with nn.Linear")
        self.max_offset, self.spacing = float(max_offset), float(spacing)
        self.num_vertices = verts.shape[0]
        with torch.no_grad():
            self.anchors = select_anchors(verts, spacing)
            self.interp_idx, self.interp_w = anchor_interpolation(verts, normals, self.anchors, spacing)
            self.normals = normals.float()
            x = verts[self.anchors].float()
            m = (weights[self.anchors].float() @ spread).clamp(max=1.0)[:, 1 : 1 + NUM_POSE_JOINTS]
            self.mask = m.contiguous()  # (K, 21)
            first = mlp[0]
            dx = 3 + 6 * sdf.freqs
            W1x, W1p = first.weight[:, :dx], first.weight[:, dx:]  # (H, dx), (H, pose_dim)
            Wp = sdf.pose_in.weight.reshape(-1, NUM_POSE_JOINTS, 3)  # (pose_dim, 21, 3)
            self.G = torch.einsum("hp,pjc->jch", W1p, Wp).contiguous()  # (21, 3, H)
            bias = first.bias + W1p @ sdf.pose_in.bias
            self.base = torch.cat([positional_encoding(sdf.norm(x[s : s + chunk]), sdf.freqs) @ W1x.T + bias
                                   for s in range(0, len(x), chunk)])  # (K, H)
            self.tail = mlp[1:]
            self.r0 = self._tail(self.base)  # (K,) residual at zero pose features

    def _tail(self, h: torch.Tensor, chunk: int = 131072) -> torch.Tensor:
        flat = h.reshape(-1, h.shape[-1])
        out = torch.cat([self.tail(flat[s : s + chunk])[:, 0] for s in range(0, flat.shape[0], chunk)])
        return out.reshape(h.shape[:-1])

    @property
    def num_anchors(self) -> int:
        return int(self.anchors.shape[0])

    @torch.no_grad()
    def scalar(self, rotvecs: torch.Tensor) -> torch.Tensor:
        """(B, V) signed displacement along the canonical normals (metres) for poses (B, 55, 3)."""
        r = rotvecs[:, 1 : 1 + NUM_POSE_JOINTS].float()  # (B, 21, 3)
        Q = torch.einsum("jch,bjc->bjh", self.G, r)  # (B, 21, H)
        h = self.base[None] + self.mask[None] @ Q  # (B, K, H)
        d = (self._tail(h) - self.r0[None]).clamp(-self.max_offset, self.max_offset)  # (B, K)
        return -(d[:, self.interp_idx] * self.interp_w).sum(-1)  # (B, V)

    @torch.no_grad()
    def offsets(self, rotvecs: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) canonical offsets for local axis-angle poses ``rotvecs`` (B, 55, 3)."""
        return self.scalar(rotvecs)[..., None] * self.normals[None]
