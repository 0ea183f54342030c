"""Neural fields of the SCANimate-style avatar (all in the canonical T-pose frame unless noted).

* :class:`BodySkinPrior`: skinning weights diffused from the body surface into space
  (distance-weighted k nearest body vertices; the kernel widens with the distance to the body).
* :class:`SkinningField`: learned skinning weights = softmax(log(prior) + MLP residual); the
  canonical field is a function of the canonical point, the posed (inverse) field of the posed
  point and a per-frame latent code (SCANimate's inverse skinning net).
* :class:`CanonicalSDF`: signed distance in canonical space conditioned on local pose features,
  as a residual on the body's own canonical SDF (stored on a grid), so a small MLP trained for a
  few minutes on CPU starts from the right topology.
* :class:`ColorField`: canonical RGB.
* :func:`pose_features`: SCANimate's local pose conditioning: each body joint's rotation masked by
  the point's (kinematically spread) skinning weights.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from foundation.body.skeleton import SMPLX_PARENTS

__all__ = ["BodySkinPrior", "CanonicalSDF", "ColorField", "SkinningField", "pose_features", "spread_matrix",
           "positional_encoding", "NUM_POSE_JOINTS"]

NUM_POSE_JOINTS = 21  # body joints 1..21 condition the SDF (fingers, jaw and eyes do not)


def positional_encoding(x: torch.Tensor, freqs: int) -> torch.Tensor:
    """(N, 3) normalised coordinates -> (N, 3 + 6 * freqs) [x, sin(2^k pi x), cos(2^k pi x)]."""
    if freqs == 0:
        return x
    k = (2.0 ** torch.arange(freqs, device=x.device, dtype=x.dtype)) * math.pi
    xk = x[..., None] * k  # (N, 3, L)
    return torch.cat([x, torch.sin(xk).flatten(-2), torch.cos(xk).flatten(-2)], -1)


def _mlp(d_in: int, hidden: int, layers: int, d_out: int, act: nn.Module) -> nn.Sequential:
    mods: list[nn.Module] = []
    d = d_in
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), act]
        d = hidden
    last = nn.Linear(d, d_out)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    mods.append(last)
    return nn.Sequential(*mods)


class BodySkinPrior:
    """Skinning weights of the body diffused into space.

    ``w(x) = sum_i a_i W[v_i] / sum_i a_i`` over the ``k`` nearest body vertices ``v_i`` with
    ``a_i = exp(-(d_i^2 - d_0^2) / (2 s^2))``, ``s = max(sigma, d_0)``: on the body it is the body's
    own weights, away from it a smooth blend whose support grows with the distance.

    Args:
        verts: (V, 3) body vertices (canonical or posed, the frame of the queries).
        weights: (V, J) body skinning weights.
    """

    def __init__(self, verts: torch.Tensor, weights: torch.Tensor, k: int = 8, sigma: float = 0.02) -> None:
        from scipy.spatial import cKDTree

        self.verts = verts.detach().float().cpu()
        self.weights = weights.detach().float()
        self.tree = cKDTree(self.verts.numpy())
        self.k, self.sigma = int(k), float(sigma)

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) points -> (N, J) weights (rows sum to 1), no gradient."""
        p = points.detach().float().cpu().numpy()
        d, idx = self.tree.query(p, k=self.k, workers=-1)
        d = torch.from_numpy(d).float()
        idx = torch.from_numpy(idx).long()
        s = d[:, :1].clamp(min=self.sigma)
        a = torch.exp(-(d**2 - d[:, :1] ** 2) / (2 * s**2))
        a = a / a.sum(1, keepdim=True)
        w = (a[..., None] * self.weights.cpu()[idx]).sum(1)
        return w.to(points.device)


class _Normalizer(nn.Module):
    def __init__(self, center: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.register_buffer("center", torch.as_tensor(center, dtype=torch.float32).reshape(3).clone())
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.center) / self.scale


class SkinningField(nn.Module):
    """Learned skinning weights ``softmax(log(prior + eps) + MLP(PE(x), z_frame))``.

    The residual MLP starts at zero, so the field starts equal to the body prior.

    Args:
        center, scale: normalisation of the input frame (x -> (x - center) / scale, about [-1, 1]).
        num_frames, latent_dim: per-frame latent codes (posed-space inverse field); 0 for none.
    """

    def __init__(self, center, scale: float, num_joints: int = 55, hidden: int = 128, layers: int = 3,
                 freqs: int = 4, num_frames: int = 0, latent_dim: int = 0, eps: float = 1e-3) -> None:
        super().__init__()
        self.norm = _Normalizer(center, scale)
        self.freqs, self.eps = freqs, eps
        self.latent = nn.Embedding(num_frames, latent_dim) if num_frames and latent_dim else None
        if self.latent is not None:
            nn.init.normal_(self.latent.weight, std=0.01)
        d_in = 3 + 6 * freqs + (latent_dim if self.latent is not None else 0)
        self.mlp = _mlp(d_in, hidden, layers, num_joints, nn.Softplus(beta=20))

    def forward(self, x: torch.Tensor, prior: torch.Tensor, frame: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, 3) points in this field's frame; prior: (N, J); frame: (N,) long -> (N, J) weights."""
        h = positional_encoding(self.norm(x), self.freqs)
        if self.latent is not None:
            if frame is None:
                raise ValueError("SkinningField: this field has per-frame latents; pass frame=(N,) indices")
            h = torch.cat([h, self.latent(frame)], -1)
        return torch.softmax(torch.log(prior + self.eps) + self.mlp(h), -1)


def spread_matrix(num_joints: int = 55) -> torch.Tensor:
    """(J, J) 0/1 matrix: joint, its parent and its children (SCANimate spreads weights along the tree)."""
    A = torch.eye(num_joints)
    for j in range(1, num_joints):
        p = SMPLX_PARENTS[j]
        A[j, p] = A[p, j] = 1.0
    return A


def pose_features(weights: torch.Tensor, rotvecs: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
    """Local pose features: body-joint rotations masked by spread skinning weights.

    Args:
        weights: (N, 55) skinning weights of canonical points.
        rotvecs: (55, 3) or (N, 55, 3) axis-angle pose (local rotations, SMPL-X order).
        spread: (55, 55) from :func:`spread_matrix`.

    Returns:
        (N, 63): for body joints 1..21, ``min(1, (W A)_j) * theta_j``.
    """
    m = (weights @ spread).clamp(max=1.0)[:, 1 : 1 + NUM_POSE_JOINTS]
    r = rotvecs[..., 1 : 1 + NUM_POSE_JOINTS, :]
    return (m[..., None] * r).reshape(weights.shape[0], -1)


class CanonicalSDF(nn.Module):
    """Canonical signed distance (metres, negative inside) = body SDF prior + pose-conditioned MLP residual.

    Args:
        prior_grid: (4, D, H, W) body SDF and its gradient on a regular grid (channels sdf, dx, dy, dz;
            grid index (d, h, w) <-> (z, y, x)).
        grid_min, grid_max: (3,) canonical-space extent of the grid (x, y, z), metres.
        center, scale: input normalisation.
    """

    def __init__(self, prior_grid: torch.Tensor, grid_min, grid_max, center, scale: float, hidden: int = 192,
                 layers: int = 4, freqs: int = 6, pose_dim: int = 16) -> None:
        super().__init__()
        self.register_buffer("prior_grid", prior_grid.float())
        self.register_buffer("grid_min", torch.as_tensor(grid_min, dtype=torch.float32).reshape(3))
        self.register_buffer("grid_max", torch.as_tensor(grid_max, dtype=torch.float32).reshape(3))
        self.norm = _Normalizer(center, scale)
        self.freqs = freqs
        self.pose_in = nn.Linear(3 * NUM_POSE_JOINTS, pose_dim)
        self.mlp = _mlp(3 + 6 * freqs + pose_dim, hidden, layers, 1, nn.Softplus(beta=100))

    def prior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Body SDF (N,) and its gradient (N, 3) at canonical points (trilinear, no gradient)."""
        with torch.no_grad():
            g = (x - self.grid_min) / (self.grid_max - self.grid_min) * 2 - 1
            v = F.grid_sample(self.prior_grid[None], g.reshape(1, -1, 1, 1, 3), mode="bilinear",
                              padding_mode="border", align_corners=True)
            v = v.reshape(4, -1).T
            # outside the grid: add the distance to the grid box (keeps the sdf growing outward)
            out = (x - x.clamp(self.grid_min, self.grid_max)).norm(dim=-1)
        return v[:, 0] + out, v[:, 1:]

    def residual(self, x: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        """(N, 3) canonical points, (N, 63) pose features -> (N,) residual, metres."""
        h = torch.cat([positional_encoding(self.norm(x), self.freqs), self.pose_in(feat)], -1)
        return self.mlp(h)[:, 0]

    def forward(self, x: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        """(N,) signed distance at canonical points ``x`` (N, 3) with pose features (N, 63)."""
        return self.prior(x)[0] + self.residual(x, feat)

    def sdf_and_grad(self, x: torch.Tensor, feat: torch.Tensor, create_graph: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """SDF (N,) and spatial gradient (N, 3); ``create_graph`` keeps it differentiable (training)."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            r = self.residual(xg, feat)
            (gr,) = torch.autograd.grad(r.sum(), xg, create_graph=create_graph)
        p, gp = self.prior(x)
        if not create_graph:
            r, gr = r.detach(), gr.detach()
        return p + r, gp + gr


class ColorField(nn.Module):
    """Canonical albedo: (N, 3) canonical points -> (N, 3) RGB in [0, 1]."""

    def __init__(self, center, scale: float, hidden: int = 128, layers: int = 3, freqs: int = 6) -> None:
        super().__init__()
        self.norm = _Normalizer(center, scale)
        self.freqs = freqs
        self.mlp = _mlp(3 + 6 * freqs, hidden, layers, 3, nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(positional_encoding(self.norm(x), self.freqs)))


def body_sdf_grid(rest_verts: torch.Tensor, faces: torch.Tensor, voxel: float, margin: float
                  ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Body SDF + gradient on a grid around the canonical body.

    Args:
        rest_verts: (V, 3) canonical body; faces: (F, 3); voxel: spacing (m); margin: padding (m).
    Returns:
        grid (4, D, H, W) [sdf, d/dx, d/dy, d/dz], grid_min (3,), grid_max (3,) (x, y, z order).
    """
    from foundation.geometry.sdf import signed_distance

    lo = rest_verts.min(0).values.numpy() - margin
    hi = rest_verts.max(0).values.numpy() + margin
    n = np.ceil((hi - lo) / voxel).astype(int) + 1
    hi = lo + (n - 1) * voxel
    axes = [torch.linspace(float(lo[i]), float(hi[i]), int(n[i])) for i in range(3)]
    zz, yy, xx = torch.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    pts = torch.stack([xx, yy, zz], -1).reshape(-1, 3)
    sdf = signed_distance(pts, rest_verts.float(), faces.long()).sdf.reshape(int(n[2]), int(n[1]), int(n[0]))
    gz, gy, gx = torch.gradient(sdf, spacing=voxel)
    return torch.stack([sdf, gx, gy, gz]), lo.astype(np.float32), hi.astype(np.float32)
