"""Pure-torch ray casting: the pixel rays, Möller-Trumbore, and the brute-force reference ray caster.

:func:`pixel_rays` is the definition of the rays every backend casts (one per pixel centre, see
:mod:`foundation.camera`); the Warp kernels of :mod:`foundation.geometry.raycast_warp` build the same
rays. :func:`raycast_torch` intersects every ray with every face (O(H W F)): a reference for tests and
tiny meshes. Use :func:`foundation.geometry.raycast.raycast` rather than these backends directly.

Frames: world (metres) for vertices, ray origins / directions and hit points; camera (OpenCV, +Z
forward) for depths; camera VIEW frame (x right, y up, z towards the viewer) for normal maps.
"""

from __future__ import annotations

import torch

from foundation.camera import Camera

__all__ = ["RAY_MARGIN", "pixel_rays", "ray_triangle_bary", "ray_range", "range_from_extent", "raycast_torch", "interpolate_normals_torch"]

RAY_MARGIN = 1.0  # metres added around the mesh bounds for ray start / end points


def ray_range(verts: torch.Tensor, camera: Camera) -> tuple[float, float]:
    """Where the rays of :func:`pixel_rays` start and how far they must reach to cross a mesh.

    Args:
        verts: (V, 3) world vertices, metres.
        camera: the camera.

    Returns:
        ``(z0, t_far)``: camera-frame z of the orthographic ray-origin plane (``RAY_MARGIN`` in front of
        the nearest vertex; 0 for perspective, whose rays start at the centre), and a ray length in
        metres that reaches ``RAY_MARGIN`` beyond the farthest vertex.
    """
    with torch.no_grad():
        pc = camera.to_camera(verts.detach().float())
        if camera.ortho:
            return range_from_extent(float(pc[:, 2].min()), float(pc[:, 2].max()), 0.0, True)
        return range_from_extent(0.0, 0.0, float(pc.norm(dim=-1).max()), False)


def range_from_extent(zmin: float, zmax: float, rmax: float, ortho: bool) -> tuple[float, float]:
    """``(z0, t_far)`` of :func:`ray_range` from the mesh's camera-frame depth range ``zmin``..``zmax``
    (orthographic) or its largest distance ``rmax`` from the camera centre (perspective)."""
    if ortho:
        z0 = zmin - RAY_MARGIN
        return z0, zmax - z0 + RAY_MARGIN
    return 0.0, rmax + RAY_MARGIN


def pixel_rays(camera: Camera, z0: float = -10.0, pixels: torch.Tensor | None = None, *, device=None,
               dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """World-frame rays through pixel centres (same rays as the Warp kernels).

    Args:
        camera: the camera.
        z0: camera-frame z (metres) of orthographic ray origins (ignored for perspective: origin = centre).
        pixels: optional (M,) long flat pixel indices ``v * W + u``; default all pixels, row-major.
        device, dtype: of the outputs.

    Returns:
        origins (M, 3) and unit directions (M, 3), world frame; M = H * W if ``pixels`` is None.
    """
    W, H = camera.width, camera.height
    if pixels is None:
        pixels = torch.arange(H * W, device=device)
    pixels = pixels.to(device)
    u = (pixels % W).to(dtype) + 0.5
    v = torch.div(pixels, W, rounding_mode="floor").to(dtype) + 0.5
    x, y = (u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy
    R, t = camera.R_t(device, dtype)
    if camera.ortho:
        o_cam = torch.stack([x, y, torch.full_like(x, z0)], -1)
        d_cam = torch.zeros_like(o_cam)
        d_cam[:, 2] = 1.0
    else:
        o_cam = torch.zeros(x.shape[0], 3, device=device, dtype=dtype)
        d_cam = torch.nn.functional.normalize(torch.stack([x, y, torch.ones_like(x)], -1), dim=-1)
    return (o_cam - t) @ R, d_cam @ R


def ray_triangle_bary(origins: torch.Tensor, dirs: torch.Tensor, tri: torch.Tensor, eps: float = 1e-12):
    """Möller-Trumbore ray / triangle intersection (differentiable w.r.t. all inputs).

    Args:
        origins, dirs: (..., 3) rays; tri: (..., 3, 3) triangle corners (broadcastable); any one frame.
        eps: |determinant| floor (rays parallel to the triangle plane).

    Returns:
        t (...,) distance along ``dirs`` (in units of its length), bary (..., 3) ``(w0, w1, w2)``
        of the hit on the plane of the triangle (not clipped to the triangle).
    """
    a, b, c = tri[..., 0, :], tri[..., 1, :], tri[..., 2, :]
    e1, e2 = b - a, c - a
    dirs, e2 = torch.broadcast_tensors(dirs, e2)
    pvec = torch.cross(dirs, e2, dim=-1)
    det = (e1 * pvec).sum(-1)
    det = torch.where(det.abs() < eps, torch.full_like(det, eps), det)
    inv = 1.0 / det
    tvec = origins - a
    u = (tvec * pvec).sum(-1) * inv
    qvec = torch.cross(tvec, e1, dim=-1)
    v = (dirs * qvec).sum(-1) * inv
    t = (e2 * qvec).sum(-1) * inv
    return t, torch.stack([1 - u - v, u, v], -1)


def raycast_torch(verts: torch.Tensor, faces: torch.Tensor, camera: Camera, back: bool, chunk: int = 2**20
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Brute-force first (or last, ``back``) hit of every pixel ray of ``camera`` (no grad).

    Args:
        verts: (V, 3) world vertices, metres; faces: (F, 3) long.
        camera: the camera (H x W image).
        back: last hit along each ray instead of the first.
        chunk: max rays x faces pairs per step (memory bound).

    Returns:
        face_idx (H, W) long (-1: no hit), depth (H, W) float32 camera z (0: no hit), bary (H, W, 3)
        and points (H, W, 3) world frame (0: no hit); the fields of :class:`~foundation.geometry.raycast.RayHits`.
    """
    H, W = camera.height, camera.width
    v = verts.detach().float()
    z0, t_far = ray_range(v, camera)
    o, d = pixel_rays(camera, z0, device=v.device)
    tri = v[faces.long()]  # (F, 3, 3)
    step = max(1, chunk // tri.shape[0])
    face_out, bary_out, t_out = [], [], []
    for s in range(0, o.shape[0], step):
        t, bary = ray_triangle_bary(o[s : s + step, None], d[s : s + step, None], tri[None])  # (n, F)
        ok = (bary >= 0).all(-1) & (t >= 0) & (t <= t_far)
        key = torch.where(ok, -t if back else t, torch.full_like(t, float("inf")))
        best, f = key.min(-1)
        hit = torch.isfinite(best)
        rows = torch.arange(f.shape[0], device=f.device)
        face_out.append(torch.where(hit, f, torch.full_like(f, -1)))
        bary_out.append(bary[rows, f] * hit[:, None])
        t_out.append(t[rows, f])
    face = torch.cat(face_out)
    mask = face >= 0
    bary = torch.cat(bary_out)
    pts = (o + d * torch.cat(t_out)[:, None]) * mask[:, None]
    depth = camera.to_camera(pts)[:, 2] * mask
    return face.view(H, W), depth.view(H, W), bary.view(H, W, 3), pts.view(H, W, 3)


def interpolate_normals_torch(vn: torch.Tensor, faces: torch.Tensor, face_idx: torch.Tensor, bary: torch.Tensor,
                              camera: Camera) -> torch.Tensor:
    """Vertex normals interpolated at ray hits, rotated into the camera VIEW frame.

    Args:
        vn: (V, 3) world-frame unit vertex normals; faces: (F, 3) long.
        face_idx: (H, W) long hit faces (-1: no hit); bary: (H, W, 3) barycentrics of the hits.
        camera: the camera whose view rotation is applied.

    Returns:
        (H, W, 3) unit normals in the view frame (x right, y up, z towards the viewer), 0 where no hit.
    """
    H, W = face_idx.shape
    pix = (face_idx >= 0).reshape(-1).nonzero().squeeze(1)
    fv = faces[face_idx.reshape(-1)[pix]]  # (M, 3)
    n = (bary.reshape(-1, 3)[pix, :, None] * vn[fv]).sum(-2)
    n = torch.nn.functional.normalize(n @ camera.view_rotation(vn.device, vn.dtype).T, dim=-1)
    return vn.new_zeros(H * W, 3).index_copy_(0, pix, n).view(H, W, 3)
