"""Canonical mesh extraction (marching cubes, once) and posing of the fixed-topology mesh.

Posing a canonical vertex ``v`` (normal ``n``, weights ``w``) for pose ``theta`` with transforms ``T``:

    delta = f(v, p(theta)) - f(v, p(0))        pose-dependent SDF change at v
    v'    = v - clamp(delta) n                  one projection step onto the posed-conditioned surface
    x     = sum_j w_j T_j v'                    linear blend skinning with the canonical field's weights
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from avatar.fields import BodySkinPrior, CanonicalSDF, ColorField, SkinningField, pose_features

log = logging.getLogger(__name__)

__all__ = ["CanonicalMesh", "bake_colors", "extract_canonical_mesh", "pose_corrections", "pose_canonical_mesh"]


@dataclass(frozen=True, eq=False)
class CanonicalMesh:
    """The avatar's canonical (T-pose) surface.

    verts: (V, 3) float32 metres; faces: (F, 3) int64 (counter-clockwise = outward); colors: (V, 3) uint8;
    weights: (V, 55) float32 skinning weights; normals: (V, 3) float32 unit; sdf0: (V,) float32 SDF at
    zero pose features (the marching-cubes residual, subtracted when posing).
    """

    verts: torch.Tensor
    faces: torch.Tensor
    colors: torch.Tensor
    weights: torch.Tensor
    normals: torch.Tensor
    sdf0: torch.Tensor


@torch.no_grad()
def _eval_sdf(sdf: CanonicalSDF, pts: torch.Tensor, band: float, chunk: int = 131072) -> torch.Tensor:
    """SDF at zero pose features; the MLP is evaluated only within ``band`` of the body prior."""
    prior, _ = sdf.prior(pts)
    out = prior.clone()
    sel = torch.nonzero(prior.abs() < band)[:, 0]
    zero = torch.zeros(1, 63)
    for s in tqdm(range(0, len(sel), chunk), desc="avatar: extract", leave=False):
        i = sel[s : s + chunk]
        out[i] = prior[i] + sdf.residual(pts[i], zero.expand(len(i), -1))
    return out


@torch.no_grad()
def extract_canonical_mesh(sdf: CanonicalSDF, color: ColorField | None, skin_field: SkinningField, prior_c: BodySkinPrior,
                           voxel: float = 0.01, band: float = 0.1) -> CanonicalMesh:
    """Marching cubes of the canonical SDF at zero pose features, largest component kept.

    Args:
        voxel: grid spacing (m) over the SDF's prior-grid box; band: the MLP is evaluated where the
            body SDF is within ``band`` (m), elsewhere the body SDF is used.
        color: colour field for the vertex colours; None: grey (bake them with :func:`bake_colors`).
    """
    import trimesh
    from skimage.measure import marching_cubes

    from foundation.geometry.normals import vertex_normals

    lo, hi = sdf.grid_min.numpy().astype(np.float64), sdf.grid_max.numpy().astype(np.float64)
    n = np.floor((hi - lo) / voxel).astype(int) + 1
    axes = [torch.linspace(float(lo[i]), float(lo[i] + (n[i] - 1) * voxel), int(n[i])) for i in range(3)]
    xx, yy, zz = torch.meshgrid(*axes, indexing="ij")
    pts = torch.stack([xx, yy, zz], -1).reshape(-1, 3)
    vol = _eval_sdf(sdf, pts, band).reshape(*[int(k) for k in n]).numpy()
    if not (vol.min() < 0 < vol.max()):
        raise RuntimeError(f"extract_canonical_mesh: the SDF has no zero crossing (range {vol.min():.3f}.."
                           f"{vol.max():.3f}); the avatar training diverged — lower avatar.sdf.lr or check the inputs")
    v, f, _, _ = marching_cubes(vol, level=0.0, spacing=(voxel, voxel, voxel), gradient_direction="ascent")
    v = v + lo
    mesh = trimesh.Trimesh(v, f, process=True)
    parts = mesh.split(only_watertight=False)
    if len(parts) > 1:
        mesh = max(parts, key=lambda m: len(m.faces))
    if mesh.volume < 0:
        mesh.invert()
    verts = torch.from_numpy(np.asarray(mesh.vertices, np.float32))
    faces = torch.from_numpy(np.asarray(mesh.faces, np.int64))
    if color is not None:
        rgb = torch.cat([color(verts[s : s + 65536]) for s in range(0, len(verts), 65536)])
    else:
        rgb = torch.full((len(verts), 3), 0.7)
    w = torch.cat([skin_field(verts[s : s + 65536], prior_c(verts[s : s + 65536])) for s in range(0, len(verts), 65536)])
    sdf0 = _eval_sdf(sdf, verts, float("inf"))
    log.info("canonical mesh: %d vertices, %d faces", len(verts), len(faces))
    return CanonicalMesh(verts, faces, (rgb * 255).round().clamp(0, 255).to(torch.uint8), w.float(),
                         vertex_normals(verts, faces), sdf0)


@torch.no_grad()
def bake_colors(verts: torch.Tensor, normals: torch.Tensor, points: torch.Tensor, point_normals: torch.Tensor,
                colors: torch.Tensor, radius: float = 0.015, k: int = 24, weights: torch.Tensor | None = None
                ) -> torch.Tensor:
    """Vertex colours from coloured canonical surface samples (all training frames pooled).

    Each vertex takes the mean colour of its ``k`` nearest samples, weighted by
    ``exp(-d^2 / (2 (radius/2)^2)) * max(0, n_v . n_s)^2`` (samples of surfaces facing away, e.g. the
    other side of a thin limb, do not count) and by the samples' colour ``weights`` (samples the camera
    did not see, e.g. a body side turned away in that frame, count only where no frame saw the spot),
    then re-weighted twice by the colour's distance to that mean (outliers such as background pixels
    bled into a frame's colours drop out); a vertex with no usable sample takes its nearest one.

    Args:
        verts, normals: (V, 3) canonical mesh; points, point_normals: (N, 3) canonical samples;
        colors: (N, 3) float [0, 1]; radius: neighbourhood size (m); weights: (N,) in [0, 1] or None.
    Returns:
        (V, 3) uint8.
    """
    from scipy.spatial import cKDTree

    k = min(k, len(points))
    d, j = cKDTree(points.numpy()).query(verts.numpy(), k=k, workers=-1)
    d = torch.from_numpy(np.asarray(d, np.float32)).reshape(len(verts), k)
    j = torch.from_numpy(np.asarray(j, np.int64)).reshape(len(verts), k)
    cos = (normals[:, None] * point_normals[j]).sum(-1).clamp(min=0)
    w = torch.exp(-(d**2) / (2 * (0.5 * radius) ** 2)) * cos**2 * (d < radius)
    if weights is not None:
        ww = w * weights.float()[j]
        seen = ww.sum(1) > 1e-3 * w.sum(1).clamp(min=1e-12)
        w = torch.where(seen[:, None], ww, w)
    dead = w.sum(1) <= 1e-8
    w[dead] = 0.0
    w[dead, 0] = 1.0
    c = colors[j]  # (V, k, 3)
    rgb = (w[..., None] * c).sum(1) / w.sum(1, keepdim=True)
    for _ in range(2):  # robust: down-weight outliers (background bled into a recon's colours at the silhouette)
        wr = w * torch.exp(-((c - rgb[:, None]) ** 2).sum(-1) / (2 * 0.15**2))
        ok = wr.sum(1) > 1e-8
        rgb[ok] = (wr[ok, :, None] * c[ok]).sum(1) / wr[ok].sum(1, keepdim=True)
    return (rgb * 255).round().clamp(0, 255).to(torch.uint8)


@torch.no_grad()
def pose_corrections(sdf: CanonicalSDF, mesh: CanonicalMesh, rotvecs: torch.Tensor, spread: torch.Tensor,
                     max_offset: float = 0.05) -> torch.Tensor:
    """Pose-dependent canonical displacements.

    Args:
        rotvecs: (B, 55, 3) local axis-angle poses.
    Returns:
        (B, V, 3) offsets to add to ``mesh.verts`` (canonical frame, metres).
    """
    out = []
    for b in range(rotvecs.shape[0]):
        feat = pose_features(mesh.weights, rotvecs[b], spread)
        d = sdf.residual(mesh.verts, feat) + sdf.prior(mesh.verts)[0] - mesh.sdf0
        out.append(-d.clamp(-max_offset, max_offset)[:, None] * mesh.normals)
    return torch.stack(out)


@torch.no_grad()
def pose_canonical_mesh(sdf: CanonicalSDF | None, mesh: CanonicalMesh, rotvecs: torch.Tensor, transforms: torch.Tensor,
                        spread: torch.Tensor, correct: bool = True, max_offset: float = 0.05,
                        corrector=None) -> torch.Tensor:
    """Posed vertices (B, V, 3), world frame, of the fixed-topology canonical mesh.

    Args:
        rotvecs: (B, 55, 3) local axis-angle poses (for the pose-dependent correction).
        transforms: (B, 55, 4, 4) canonical -> posed joint transforms (translation included).
        correct: apply the pose-dependent SDF correction (needs ``sdf`` or ``corrector``).
        corrector: a :class:`~avatar.posing.PoseCorrector` of this mesh (fast path); None
            evaluates the reference :func:`pose_corrections` on every vertex.
    """
    from avatar.posing import skin_vertices

    v = mesh.verts
    if correct and corrector is not None:
        v = v[None] + corrector.offsets(rotvecs)
    elif correct and sdf is not None:
        v = v[None] + pose_corrections(sdf, mesh, rotvecs, spread, max_offset)
    return skin_vertices(v, mesh.weights, transforms.float())
