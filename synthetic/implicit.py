"""Implicit-surface helpers for the synthetic data: a fast signed distance to a closed body mesh and
narrow-band marching cubes.

* :class:`MeshSDF`: closest point (Warp BVH, ``mesh_query_point_no_sign``) with the inside/outside sign
  from angle-weighted pseudo-normals (Baerentzen & Aanaes 2005), exact for a closed, consistently
  oriented manifold mesh and about 5x cheaper than the winding-number sign of
  :func:`foundation.geometry.sdf.signed_distance` near the surface. Use it for the *watertight body*
  only; meshes that may self-intersect (posed garments) go through ``signed_distance``.
* :func:`extract_narrow_band`: evaluates a signed function on a coarse grid, refines only the cells the
  surface may cross (a few levels, each halving the spacing), and runs skimage's marching cubes on
  the finest grid; the output is closed (watertight) as long as the surface stays inside the box.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
import warp as wp

from foundation.geometry.normals import check_mesh, face_normals
from foundation.geometry.warp_utils import get_mesh, init_warp, parallel_launch, wp_device

log = logging.getLogger(__name__)

__all__ = ["MeshSDF", "SDFQuery", "component_labels", "extract_narrow_band", "largest_component"]


@wp.kernel
def _sdf_kernel(
    offset: int,
    mesh: wp.uint64,
    points: wp.array(dtype=wp.vec3),
    verts: wp.array(dtype=wp.vec3),
    faces: wp.array(dtype=wp.int32),
    face_n: wp.array(dtype=wp.vec3),
    edge_n: wp.array(dtype=wp.vec3),
    vert_n: wp.array(dtype=wp.vec3),
    max_dist: float,
    sdf: wp.array(dtype=wp.float32),
    face: wp.array(dtype=wp.int32),
    bary: wp.array(dtype=wp.vec3),
    closest: wp.array(dtype=wp.vec3),
):
    tid = wp.tid() + offset
    p = points[tid]
    q = wp.mesh_query_point_no_sign(mesh, p, max_dist)
    if not q.result:
        face[tid] = -1
        sdf[tid] = max_dist
        bary[tid] = wp.vec3(1.0, 0.0, 0.0)
        closest[tid] = p
        return
    f = q.face
    b = wp.vec3(q.u, q.v, 1.0 - q.u - q.v)
    i0 = faces[3 * f]
    i1 = faces[3 * f + 1]
    i2 = faces[3 * f + 2]
    c = b[0] * verts[i0] + b[1] * verts[i1] + b[2] * verts[i2]
    d = p - c
    # pseudo-normal of the closest feature: vertex (two barycentrics ~0), edge (one), face (none)
    eps = 1.0e-4
    n = face_n[f]
    if b[0] < eps and b[1] < eps:
        n = vert_n[i2]
    elif b[0] < eps and b[2] < eps:
        n = vert_n[i1]
    elif b[1] < eps and b[2] < eps:
        n = vert_n[i0]
    elif b[0] < eps:
        n = edge_n[3 * f]
    elif b[1] < eps:
        n = edge_n[3 * f + 1]
    elif b[2] < eps:
        n = edge_n[3 * f + 2]
    s = wp.length(d)
    if wp.dot(d, n) < 0.0:
        s = -s
    sdf[tid] = s
    face[tid] = f
    bary[tid] = b
    closest[tid] = c


@dataclass(frozen=True)
class SDFQuery:
    """Result of :meth:`MeshSDF.query` for N points (mesh frame).

    Attributes:
        sdf: (N,) signed distance, metres, negative inside.
        closest: (N, 3) closest surface point.
        face_idx: (N,) long face index of ``closest``.
        bary: (N, 3) barycentrics of ``closest`` in ``faces[face_idx]``.
    """

    sdf: torch.Tensor
    closest: torch.Tensor
    face_idx: torch.Tensor
    bary: torch.Tensor

    def interpolate(self, faces: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Barycentric interpolation of per-vertex ``values`` (V, ...) at the closest points -> (N, ...)."""
        tri = faces[self.face_idx]  # (N, 3)
        v = values[tri]  # (N, 3, ...)
        b = self.bary.reshape(self.bary.shape + (1,) * (values.ndim - 1))
        return (v * b).sum(1)


class MeshSDF:
    """Signed distance to a closed, outward-oriented triangle mesh (CPU or CUDA, no gradients).

    Args:
        verts: (V, 3) float vertices; faces: (F, 3) long, counter-clockwise seen from outside.
    """

    def __init__(self, verts: torch.Tensor, faces: torch.Tensor) -> None:
        check_mesh(verts, faces, where="MeshSDF", batched=False)
        self.verts = verts.detach().float().contiguous()
        self.faces = faces.long()
        fn = face_normals(self.verts, self.faces)  # (F, 3) unit
        self.face_normal = fn
        # angle-weighted vertex pseudo-normals
        tri = self.verts[self.faces]  # (F, 3, 3)
        vn = torch.zeros_like(self.verts)
        for i in range(3):
            a = tri[:, (i + 1) % 3] - tri[:, i]
            b = tri[:, (i + 2) % 3] - tri[:, i]
            cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp(min=1e-12)
            ang = torch.acos(cos.clamp(-1.0, 1.0))
            vn.index_add_(0, self.faces[:, i], fn * ang[:, None])
        self.vert_normal = vn / vn.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        # edge pseudo-normals: sum of the two adjacent face normals; edge i of a face is opposite corner i
        e = torch.stack([self.faces[:, [1, 2]], self.faces[:, [2, 0]], self.faces[:, [0, 1]]], 1)  # (F, 3, 2)
        e = e.sort(-1).values.reshape(-1, 2)
        key = e[:, 0] * (self.verts.shape[0] + 1) + e[:, 1]
        uniq, inv = torch.unique(key, return_inverse=True)
        en = torch.zeros(uniq.shape[0], 3, dtype=fn.dtype, device=fn.device)
        en.index_add_(0, inv, fn.repeat_interleave(3, 0))
        en = en / en.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        self.edge_normal = en[inv].reshape(-1, 3, 3).contiguous()  # (F, 3 edges, 3)
        self._faces_i32 = self.faces.to(torch.int32).reshape(-1).contiguous()

    def query(self, points: torch.Tensor, max_dist: float = 1.0e6) -> SDFQuery:
        """Signed distance of (N, 3) points (same frame and device as the mesh), no gradients.

        Args:
            points: (N, 3) float query points.
            max_dist: search radius, metres (every point must have a face within it).

        Returns:
            :class:`SDFQuery` with ``sdf`` (N,), ``closest`` (N, 3), ``face_idx`` (N,), ``bary`` (N, 3).
        """
        init_warp()
        mesh = get_mesh(self.verts, self.faces)
        pts = points.detach().float().contiguous()
        n = pts.shape[0]
        sdf = torch.empty(n, dtype=torch.float32, device=pts.device)
        face = torch.empty(n, dtype=torch.int32, device=pts.device)
        bary = torch.empty(n, 3, dtype=torch.float32, device=pts.device)
        closest = torch.empty(n, 3, dtype=torch.float32, device=pts.device)
        if n:
            vec = lambda t: wp.from_torch(t.contiguous(), dtype=wp.vec3)  # noqa: E731
            args = [mesh.id, vec(pts), vec(self.verts), wp.from_torch(self._faces_i32), vec(self.face_normal),
                    vec(self.edge_normal.reshape(-1, 3)), vec(self.vert_normal), float(max_dist),
                    wp.from_torch(sdf), wp.from_torch(face), wp.from_torch(bary, dtype=wp.vec3), vec(closest)]
            parallel_launch(_sdf_kernel, n, lambda _o: args, device=wp_device(pts.device))
            if bool((face < 0).any()):
                raise RuntimeError("MeshSDF: no closest face found for some points (max_dist too small?)")
        return SDFQuery(sdf, closest, face.long(), bary)


def component_labels(faces: np.ndarray, num_verts: int) -> np.ndarray:
    """Connected components of a mesh (faces connected through shared vertices).

    Args:
        faces: (F, 3) integer vertex indices; num_verts: V.

    Returns:
        (F,) integer component label of every face.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    i = np.concatenate([faces[:, 0], faces[:, 1]])
    j = np.concatenate([faces[:, 1], faces[:, 2]])
    g = coo_matrix((np.ones(i.shape[0], np.int8), (i, j)), shape=(num_verts, num_verts))
    _, label = connected_components(g, directed=False)
    return label[faces[:, 0]]


def largest_component(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the connected component with the most faces; drop unused vertices.

    Args:
        verts: (V, 3) vertices (any frame); faces: (F, 3) integer indices.

    Returns:
        verts (V', 3) (same frame and dtype) and faces (F', 3) re-indexed into them.
    """
    flab = component_labels(faces, verts.shape[0])
    faces = faces[flab == np.bincount(flab).argmax()]
    used = np.zeros(verts.shape[0], bool)
    used[faces.reshape(-1)] = True
    remap = np.cumsum(used) - 1
    return verts[used], remap[faces]


def extract_narrow_band(
    fn: Callable[[torch.Tensor], torch.Tensor],
    lo: np.ndarray,
    hi: np.ndarray,
    voxel: float,
    *,
    levels: int = 3,
    band: float = 0.75,
) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes of ``fn < 0`` inside the box ``[lo, hi]`` with hierarchical narrow-band refinement.

    Args:
        fn: maps (N, 3) float32 points to (N,) values, negative inside, roughly Lipschitz-1 (a distance).
        lo, hi: (3,) box corners, metres; the surface must stay strictly inside.
        voxel: finest grid spacing, metres.
        levels: number of refinements; the coarsest grid has spacing ``voxel * 2**levels`` and is
            evaluated everywhere.
        band: a cell is refined when a corner's |value| is below ``band`` times the cell diagonal
            (or its corners disagree in sign). 0.5 is exact for a Lipschitz-1 field (a point of a cell
            lies within half a diagonal of a corner); the default leaves room for steeper garment offsets.

    Returns:
        verts (V, 3) float32 and faces (F, 3) int64, counter-clockwise seen from outside
        (outward normals), only the largest connected component.
    """
    lo = np.asarray(lo, np.float64)
    hi = np.asarray(hi, np.float64)
    hc = voxel * 2**levels
    n = np.ceil((hi - lo) / hc).astype(int) + 1  # coarse points per axis
    axes = [torch.arange(k, dtype=torch.float64) * hc + lo[i] for i, k in enumerate(n)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).float()
    vol = fn(grid).reshape(*n.tolist()).float()
    h = hc
    evaluated = int(grid.shape[0])
    for _ in range(levels):
        # cells the surface may cross at this spacing
        c = torch.stack([vol[i:vol.shape[0] - 1 + i, j:vol.shape[1] - 1 + j, k:vol.shape[2] - 1 + k]
                         for i in (0, 1) for j in (0, 1) for k in (0, 1)])
        active = (c.abs().amin(0) < band * h * np.sqrt(3)) | ((c.amax(0) > 0) & (c.amin(0) < 0))
        # upsample (grid points nest: fine index 2i = coarse index i)
        vol = F.interpolate(vol[None, None], size=tuple(2 * (s - 1) + 1 for s in vol.shape), mode="trilinear",
                            align_corners=True)[0, 0]
        h = h / 2
        cells = active.repeat_interleave(2, 0).repeat_interleave(2, 1).repeat_interleave(2, 2)
        pts_mask = torch.zeros(vol.shape, dtype=torch.bool)
        for i in (0, 1):
            for j in (0, 1):
                for k in (0, 1):
                    pts_mask[i:i + cells.shape[0], j:j + cells.shape[1], k:k + cells.shape[2]] |= cells
        # of those, only points whose interpolated value says they may be corners of a crossed cell
        # (|f| <= h sqrt(3) for a Lipschitz-1 f, plus the interpolation error, taken as one spacing)
        pts_mask &= vol.abs() < band * h * (np.sqrt(3) + 1.0) / 0.75
        idx = pts_mask.nonzero()
        if idx.shape[0]:
            pts = (idx.double() * h + torch.as_tensor(lo)).float()
            vol[idx[:, 0], idx[:, 1], idx[:, 2]] = fn(pts).float()
        evaluated += int(idx.shape[0])
    log.debug("narrow band: %d evaluations for a %s grid", evaluated, tuple(vol.shape))
    from skimage.measure import marching_cubes

    v = vol.numpy()
    v[v == 0] = 1e-7  # no vertex exactly on a grid point
    if not (v[0].min() > 0 and v[-1].min() > 0 and v[:, 0].min() > 0 and v[:, -1].min() > 0
            and v[:, :, 0].min() > 0 and v[:, :, -1].min() > 0):
        raise ValueError("extract_narrow_band: the surface touches the box; enlarge [lo, hi]")
    verts, faces, _, _ = marching_cubes(-v, level=0.0, spacing=(h, h, h), allow_degenerate=False)
    verts = verts + lo
    faces = faces[:, ::-1]  # skimage winds them clockwise seen from the outside
    verts, faces = largest_component(verts, faces.astype(np.int64))
    return verts.astype(np.float32), faces.astype(np.int64)
