"""Random points on and around a triangle mesh: the project's one surface and one occupancy sampler.

* :func:`sample_surface`: area-uniform points on the surface, with their face, barycentric
  coordinates and face normal (so callers interpolate any per-vertex attribute themselves).
* :func:`sample_occupancy`: points near the surface (surface point + isotropic Gaussian offset) and
  uniform points in the padded bounding box, labelled inside / outside by the winding number.

Both draw everything from one ``numpy.random.Generator``, so a seed reproduces them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["SurfaceSamples", "sample_surface", "sample_occupancy"]


@dataclass(frozen=True)
class SurfaceSamples:
    """Points on a mesh (frame of the input vertices).

    Attributes:
        points: (n, 3) float32.  normals: (n, 3) float32 unit face normals (right-hand winding).
        face: (n,) int64 index of the face each point lies on.  bary: (n, 3) float64 barycentric
            coordinates of each point in its face (rows sum to 1).
    """

    points: np.ndarray
    normals: np.ndarray
    face: np.ndarray
    bary: np.ndarray

    def interpolate(self, values: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """Barycentric interpolation of per-vertex ``values`` (V, C) at the samples -> (n, C) float64."""
        v = np.asarray(values, np.float64)
        return (self.bary[..., None] * v[np.asarray(faces, np.int64)[self.face]]).sum(1)


def _as_numpy(x, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype)


def sample_surface(verts, faces, n: int, rng: np.random.Generator) -> SurfaceSamples:
    """``n`` area-uniform random points on a triangle mesh.

    Args:
        verts: (V, 3) array or tensor.  faces: (F, 3) integer indices.  n: number of points.
        rng: the source of randomness (faces by area, then barycentric coordinates).
    Returns:
        :class:`SurfaceSamples`: points (n, 3), normals (n, 3), face (n,), bary (n, 3), in the frame of
        ``verts``.
    Raises:
        ValueError: ``faces`` is not a non-empty (F, 3) array, or the mesh has zero area.
    """
    v = _as_numpy(verts, np.float64)
    f = _as_numpy(faces, np.int64)
    if f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise ValueError(f"sample_surface: faces must be a non-empty (F, 3) array, got {f.shape}")
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"sample_surface: verts must be (V, 3), got {v.shape}")
    tri = v[f]
    cr = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.linalg.norm(cr, axis=1)
    if not area.sum() > 0:
        raise ValueError("sample_surface: the mesh has zero area")
    fi = rng.choice(len(f), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    bary = np.stack([1 - s, s * (1 - r2), s * r2], 1)
    pts = (bary[..., None] * tri[fi]).sum(1)
    nrm = cr[fi] / np.maximum(area[fi, None], 1e-12)
    return SurfaceSamples(pts.astype(np.float32), nrm.astype(np.float32), fi.astype(np.int64), bary)


def sample_occupancy(verts: torch.Tensor, faces: torch.Tensor, n_near: int, n_uniform: int,
                     rng: np.random.Generator, sigmas: tuple[float, ...], box_pad: float = 0.05
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Occupancy samples of a closed (or nearly closed) mesh.

    ``n_near`` surface points (:func:`sample_surface`) each moved by N(0, sigma^2) with sigma drawn
    uniformly from ``sigmas``, then ``n_uniform`` points uniform in the vertex bounding box padded by
    ``box_pad``; inside = negative winding-number sign (robust to small holes and open garments).

    Args:
        verts: (V, 3) float, faces: (F, 3) integer (any frame; metres).
    Returns:
        points (N, 3) float32 on the CPU, N = n_near + n_uniform, frame of ``verts``, and inside (N,) bool.
    """
    from foundation.geometry.sdf import signed_distance

    if not sigmas:
        raise ValueError("sample_occupancy: sigmas must name at least one offset scale")
    v = verts.detach().float().cpu()
    f = faces.detach().long().cpu()
    surf = sample_surface(v, f, n_near, rng).points.astype(np.float64)
    sig = np.asarray(sigmas, np.float64)[rng.integers(len(sigmas), size=n_near)][:, None]
    near = surf + rng.normal(size=surf.shape) * sig
    vn = v.numpy().astype(np.float64)
    lo, hi = vn.min(0) - box_pad, vn.max(0) + box_pad
    uni = rng.uniform(lo, hi, size=(n_uniform, 3))
    pts = torch.as_tensor(np.concatenate([near, uni]), dtype=torch.float32)
    inside = signed_distance(pts, v, f).sdf < 0
    return pts, inside
