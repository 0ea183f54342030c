"""Per-pixel ray casting of triangle meshes (visibility, depth) and ICON-style front/back normal maps.

Rays go through pixel centres (see :mod:`foundation.camera`). Perspective rays start at the
camera centre; orthographic rays start on the plane ``z_cam = z_near - 1 m`` in front of the mesh.
``back=True`` returns the LAST hit along the same rays (BVH method: cast from a point beyond the mesh
back towards the origin; z-buffer method: keep the farthest surface), so front and back maps are
aligned pixel-for-pixel.

Batches: ``verts`` may be ``(V, 3)`` or ``(B, V, 3)`` (shared ``faces``); a batch is processed as a
Python loop over meshes, and every output gets the leading ``B`` dim. ``camera`` is one
:class:`Camera` for the whole batch or a sequence of ``B`` cameras of the same image size.

Backends: ``"warp"`` and ``"torch"`` (brute-force Möller-Trumbore over all faces; a reference for
tests and tiny meshes). The Warp backend has two visibility methods with the same results: BVH rays
(``wp.mesh_query_ray``; used on CUDA) and, on CPU, a z-buffer of pixel-centre coverage (one thread
per band of rows) followed by the exact ray/triangle intersection of each covered pixel, ~4x faster
than BVH rays there. Both are multi-threaded on CPU. Nothing here is differentiable; see
:mod:`foundation.geometry.diff_render` for that.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import torch
import warp as wp

from foundation.camera import Camera
from foundation.geometry.normals import check_mesh, vertex_normals
from foundation.geometry.warp_utils import get_mesh, init_warp, parallel_launch, torch_stream, wp_device

log = logging.getLogger(__name__)

# The kernels here are never differentiated by Warp (gradients are recomputed in torch): skip the
# adjoint code, which halves compile time.
wp.set_module_options({"enable_backward": False})

__all__ = ["RayHits", "NormalMaps", "raycast", "render_normal_maps", "pixel_rays", "ray_triangle_bary"]

_MARGIN = 1.0  # metres added around the mesh bounds for ray start / end points


@dataclass(frozen=True)
class RayHits:
    """Ray-cast result for an ``H x W`` image (leading ``B`` for a batch of meshes).

    Attributes:
        mask: (H, W) bool, True where the pixel ray hits the mesh.
        depth: (H, W) float32 camera-frame z of the hit (metres, +Z forward); 0 where empty.
        face_idx: (H, W) long index of the hit face; -1 where empty.
        bary: (H, W, 3) barycentrics of the hit w.r.t. ``faces[face_idx]``; 0 where empty.
        points: (H, W, 3) hit points, world frame (metres); 0 where empty.
    """

    mask: torch.Tensor
    depth: torch.Tensor
    face_idx: torch.Tensor
    bary: torch.Tensor
    points: torch.Tensor


@dataclass(frozen=True)
class NormalMaps:
    """ICON-style normal maps (leading ``B`` for a batch of meshes).

    Attributes:
        front, back: (H, W, 3) unit normals of the first / last surface along each pixel ray, in the
            camera VIEW frame (x right, y up, z towards the viewer); interpolated smooth vertex
            normals; zeros outside the masks. ``front`` has z > 0, ``back`` z < 0 for closed meshes.
        mask_front, mask_back: (H, W) bool (equal for closed meshes).
        depth_front, depth_back: (H, W) camera z (metres) of the hits; 0 outside the masks.
    """

    front: torch.Tensor
    back: torch.Tensor
    mask_front: torch.Tensor
    mask_back: torch.Tensor
    depth_front: torch.Tensor
    depth_back: torch.Tensor


# ---------------------------------------------------------------------------------------------- rays
def _ray_range(verts: torch.Tensor, camera: Camera) -> tuple[float, float]:
    """(z0, t_far): ortho ray-origin plane z_cam, and a ray length that reaches beyond the mesh."""
    with torch.no_grad():
        pc = camera.to_camera(verts.detach().float())
        if camera.ortho:
            zmin, zmax = float(pc[:, 2].min()), float(pc[:, 2].max())
            z0 = zmin - _MARGIN
            return z0, zmax - z0 + _MARGIN
        return 0.0, float(pc.norm(dim=-1).max()) + _MARGIN


def pixel_rays(camera: Camera, z0: float = -10.0, pixels: torch.Tensor | None = None, *, device=None,
               dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """World-frame rays through pixel centres (same rays as the Warp kernel).

    Args:
        camera: the camera.
        z0: camera-frame z of orthographic ray origins (ignored for perspective: origin = centre).
        pixels: optional (M,) long flat pixel indices ``v * W + u``; default all pixels, row-major.
        device, dtype: of the outputs.

    Returns:
        origins (M, 3), directions (M, 3) unit vectors; M = H * W if ``pixels`` is None.
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
        origins, dirs: (..., 3) rays; tri: (..., 3, 3) triangle corners (broadcastable).

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


# ---------------------------------------------------------------------------------------------- warp
@wp.kernel
def _ray_kernel(
    offset: int,
    mesh: wp.uint64,
    width: int,
    R: wp.mat33,
    t: wp.vec3,
    intr: wp.vec4,
    ortho: int,
    z0: float,
    t_far: float,
    back: int,
    face: wp.array(dtype=wp.int32),
    bary: wp.array(dtype=wp.vec3),
    depth: wp.array(dtype=wp.float32),
    points: wp.array(dtype=wp.vec3),
):
    tid = wp.tid() + offset
    row = tid // width
    col = tid - row * width
    x = (float(col) + 0.5 - intr[2]) / intr[0]
    y = (float(row) + 0.5 - intr[3]) / intr[1]
    Rt = wp.transpose(R)
    o_cam = wp.vec3(0.0, 0.0, 0.0)
    d_cam = wp.normalize(wp.vec3(x, y, 1.0))
    if ortho != 0:
        o_cam = wp.vec3(x, y, z0)
        d_cam = wp.vec3(0.0, 0.0, 1.0)
    o = Rt @ (o_cam - t)
    d = Rt @ d_cam
    start = o
    direction = d
    if back != 0:
        start = o + d * t_far
        direction = -d
    q = wp.mesh_query_ray(mesh, start, direction, t_far)
    if q.result:
        p = wp.mesh_eval_position(mesh, q.face, q.u, q.v)  # = start + direction * q.t, consistent with bary
        face[tid] = q.face
        bary[tid] = wp.vec3(q.u, q.v, 1.0 - q.u - q.v)
        depth[tid] = wp.dot(wp.vec3(R[2, 0], R[2, 1], R[2, 2]), p) + t[2]
        points[tid] = p
    else:
        face[tid] = -1
        bary[tid] = wp.vec3(0.0, 0.0, 0.0)
        depth[tid] = 0.0
        points[tid] = wp.vec3(0.0, 0.0, 0.0)


@wp.kernel
def _raster_kernel(
    offset: int,
    rows_per_band: int,
    width: int,
    height: int,
    uvz: wp.array(dtype=wp.vec3),
    indices: wp.array(dtype=wp.int32),
    tri_ids: wp.array(dtype=wp.int32),
    bounds: wp.array(dtype=wp.vec4i),
    band_range: wp.array(dtype=wp.vec2i),
    ortho: int,
    back: int,
    verts: wp.array(dtype=wp.vec3),
    R: wp.mat33,
    t: wp.vec3,
    intr: wp.vec4,
    z0: float,
    zbuf: wp.array(dtype=wp.float32),
    face: wp.array(dtype=wp.int32),
    bary: wp.array(dtype=wp.vec3),
    depth: wp.array(dtype=wp.float32),
    points: wp.array(dtype=wp.vec3),
):
    # one thread per band of image rows: z-buffer every triangle overlapping the band (pixel-centre
    # coverage = the pixel ray passes through the triangle), then intersect each covered pixel's ray
    # with its winning triangle exactly, like the ray kernel does.
    band = wp.tid() + offset
    r0 = band * rows_per_band
    r1 = wp.min(r0 + rows_per_band, height)
    sign = 1.0
    if back != 0:
        sign = -1.0
    for i in range(r0 * width, r1 * width):
        zbuf[i] = 1.0e30
        face[i] = -1
    rng = band_range[band]
    for k in range(rng[0], rng[1]):
        b = bounds[k]  # row_lo, row_hi, col_lo, col_hi
        if b[1] < r0 or b[0] >= r1:
            continue
        f = tri_ids[k]
        pa = uvz[indices[3 * f]]
        pb = uvz[indices[3 * f + 1]]
        pc = uvz[indices[3 * f + 2]]
        area = (pb[0] - pa[0]) * (pc[1] - pa[1]) - (pb[1] - pa[1]) * (pc[0] - pa[0])
        if wp.abs(area) < 1.0e-12:
            continue
        inv = 1.0 / area
        for row in range(wp.max(r0, b[0]), wp.min(r1, b[1] + 1)):
            py = float(row) + 0.5
            for col in range(b[2], b[3] + 1):
                px = float(col) + 0.5
                w0 = ((pb[0] - px) * (pc[1] - py) - (pb[1] - py) * (pc[0] - px)) * inv
                w1 = ((pc[0] - px) * (pa[1] - py) - (pc[1] - py) * (pa[0] - px)) * inv
                w2 = 1.0 - w0 - w1
                if w0 >= -1.0e-6 and w1 >= -1.0e-6 and w2 >= -1.0e-6:
                    z = w0 * pa[2] + w1 * pb[2] + w2 * pc[2]
                    if ortho == 0:
                        z = 1.0 / (w0 / pa[2] + w1 / pb[2] + w2 / pc[2])
                    idx = row * width + col
                    if sign * z < zbuf[idx]:
                        zbuf[idx] = sign * z
                        face[idx] = f
    Rt = wp.transpose(R)
    for i in range(r0 * width, r1 * width):
        f = face[i]
        if f < 0:
            bary[i] = wp.vec3(0.0, 0.0, 0.0)
            depth[i] = 0.0
            points[i] = wp.vec3(0.0, 0.0, 0.0)
            continue
        row = i // width
        col = i - row * width
        x = (float(col) + 0.5 - intr[2]) / intr[0]
        y = (float(row) + 0.5 - intr[3]) / intr[1]
        o_cam = wp.vec3(0.0, 0.0, 0.0)
        d_cam = wp.normalize(wp.vec3(x, y, 1.0))
        if ortho != 0:
            o_cam = wp.vec3(x, y, z0)
            d_cam = wp.vec3(0.0, 0.0, 1.0)
        o = Rt @ (o_cam - t)
        d = Rt @ d_cam
        a = verts[indices[3 * f]]
        e1 = verts[indices[3 * f + 1]] - a
        e2 = verts[indices[3 * f + 2]] - a
        pvec = wp.cross(d, e2)
        det = wp.dot(e1, pvec)
        if wp.abs(det) < 1.0e-20:
            det = 1.0e-20
        tvec = o - a
        u = wp.dot(tvec, pvec) / det
        qvec = wp.cross(tvec, e1)
        v = wp.dot(d, qvec) / det
        p = a + e1 * u + e2 * v  # the hit, consistent with its barycentrics
        bary[i] = wp.vec3(1.0 - u - v, u, v)
        depth[i] = wp.dot(wp.vec3(R[2, 0], R[2, 1], R[2, 2]), p) + t[2]
        points[i] = p


@wp.kernel
def _project_kernel(
    verts: wp.array(dtype=wp.vec3),
    R: wp.mat33,
    t: wp.vec3,
    intr: wp.vec4,
    ortho: int,
    uvz: wp.array(dtype=wp.vec3),
    stats: wp.array(dtype=wp.float32),
):
    # pixel coordinates + camera z per vertex; stats = (min z, max z, max distance to the centre)
    i = wp.tid()
    pc = R @ verts[i] + t
    z = pc[2]
    x = pc[0]
    y = pc[1]
    if ortho == 0:
        zs = wp.max(z, 1.0e-12)
        x = x / zs
        y = y / zs
    uvz[i] = wp.vec3(x * intr[0] + intr[2], y * intr[1] + intr[3], z)
    wp.atomic_min(stats, 0, z)
    wp.atomic_max(stats, 1, z)
    wp.atomic_max(stats, 2, wp.length(pc))


@wp.kernel
def _bounds_kernel(
    uvz: wp.array(dtype=wp.vec3),
    indices: wp.array(dtype=wp.int32),
    width: int,
    height: int,
    bounds: wp.array(dtype=wp.vec4i),
    first_row: wp.array(dtype=wp.int32),
):
    # rows / columns of the pixel centres each triangle's 2-D bounding box holds; culled: first row = H
    f = wp.tid()
    a = uvz[indices[3 * f]]
    b = uvz[indices[3 * f + 1]]
    c = uvz[indices[3 * f + 2]]
    c_lo = wp.max(int(wp.ceil(wp.min(wp.min(a[0], b[0]), c[0]) - 0.5)), 0)
    c_hi = wp.min(int(wp.floor(wp.max(wp.max(a[0], b[0]), c[0]) - 0.5)), width - 1)
    r_lo = wp.max(int(wp.ceil(wp.min(wp.min(a[1], b[1]), c[1]) - 0.5)), 0)
    r_hi = wp.min(int(wp.floor(wp.max(wp.max(a[1], b[1]), c[1]) - 0.5)), height - 1)
    if r_lo > r_hi or c_lo > c_hi:
        r_lo = height
        r_hi = -1
    bounds[f] = wp.vec4i(r_lo, r_hi, c_lo, c_hi)
    first_row[f] = r_lo


def _band_ranges(bounds: torch.Tensor, first_row: torch.Tensor, height: int, rows_per_band: int):
    """Sort triangles by first row; per band of rows, the [start, end) range of candidate triangles."""
    order = first_row.argsort()
    rows = first_row[order].contiguous()
    bounds = bounds[order].contiguous()
    kept = bounds[:, 0] < height
    span = int((bounds[kept, 1] - bounds[kept, 0]).max()) if bool(kept.any()) else 0
    n_bands = (height + rows_per_band - 1) // rows_per_band
    r0 = torch.arange(n_bands, device=bounds.device, dtype=torch.int32) * rows_per_band
    band_range = torch.stack([torch.searchsorted(rows, r0 - span), torch.searchsorted(rows, r0 + rows_per_band)], -1)
    return order.to(torch.int32).contiguous(), bounds, band_range.to(torch.int32).contiguous(), n_bands


def _raycast_warp(verts: torch.Tensor, faces: torch.Tensor, camera: Camera, back: bool,
                  method: str = "auto") -> RayHits:
    init_warp()
    device = verts.device
    wdev = wp_device(device)
    H, W = camera.height, camera.width
    n = H * W
    v32 = verts.detach().float().contiguous()
    indices = faces.detach().to(torch.int32).reshape(-1).contiguous()
    face = torch.empty(n, dtype=torch.int32, device=device)
    bary = torch.empty(n, 3, dtype=torch.float32, device=device)
    depth = torch.empty(n, dtype=torch.float32, device=device)
    points = torch.empty(n, 3, dtype=torch.float32, device=device)
    uvz = torch.empty(v32.shape[0], 3, dtype=torch.float32, device=device)
    stats = torch.tensor([1.0e30, -1.0e30, 0.0], dtype=torch.float32, device=device)
    R = wp.mat33(*[float(x) for row in camera.R for x in row])
    tt = wp.vec3(*[float(x) for x in camera.t])
    intr = wp.vec4(camera.fx, camera.fy, camera.cx, camera.cy)
    outs = [wp.from_torch(face), wp.from_torch(bary, dtype=wp.vec3), wp.from_torch(depth),
            wp.from_torch(points, dtype=wp.vec3)]
    with torch_stream(device):
        wp.launch(_project_kernel, dim=v32.shape[0], device=wdev,
                  inputs=[wp.from_torch(v32, dtype=wp.vec3), R, tt, intr, int(camera.ortho),
                          wp.from_torch(uvz, dtype=wp.vec3), wp.from_torch(stats)])
        zmin, zmax, rmax = stats.tolist()
        # ortho rays start on a plane in front of the mesh; rays and back casts reach beyond it
        z0 = zmin - _MARGIN if camera.ortho else 0.0
        t_far = (zmax - z0 + _MARGIN) if camera.ortho else rmax + _MARGIN
        raster = method == "raster" or (method == "auto" and device.type != "cuda")
        if raster and (camera.ortho or zmin > 1e-4):  # z-buffer needs every vertex in front of the camera
            rpb = 8
            F = faces.shape[0]
            bounds = torch.empty(F, 4, dtype=torch.int32, device=device)
            first_row = torch.empty(F, dtype=torch.int32, device=device)
            wp.launch(_bounds_kernel, dim=F, device=wdev,
                      inputs=[wp.from_torch(uvz, dtype=wp.vec3), wp.from_torch(indices), W, H,
                              wp.from_torch(bounds, dtype=wp.vec4i), wp.from_torch(first_row)])
            ids, bounds, band_range, n_bands = _band_ranges(bounds, first_row, H, rpb)
            zbuf = torch.empty(n, dtype=torch.float32, device=device)
            args = [rpb, W, H, wp.from_torch(uvz, dtype=wp.vec3), wp.from_torch(indices), wp.from_torch(ids),
                    wp.from_torch(bounds, dtype=wp.vec4i), wp.from_torch(band_range, dtype=wp.vec2i),
                    int(camera.ortho), int(back), wp.from_torch(v32, dtype=wp.vec3), R, tt, intr, z0,
                    wp.from_torch(zbuf), *outs]
            parallel_launch(_raster_kernel, n_bands, lambda _off: args, device=wdev, min_chunk=1)
        else:
            mesh = get_mesh(verts, faces)
            args = [mesh.id, W, R, tt, intr, int(camera.ortho), z0, t_far, int(back), *outs]
            parallel_launch(_ray_kernel, n, lambda _off: args, device=wdev, min_chunk=16384)
    face = face.long().view(H, W)
    return RayHits(face >= 0, depth.view(H, W), face, bary.view(H, W, 3), points.view(H, W, 3))


# ---------------------------------------------------------------------------------------------- torch
def _raycast_torch(verts: torch.Tensor, faces: torch.Tensor, camera: Camera, back: bool, chunk: int = 2**20) -> RayHits:
    H, W = camera.height, camera.width
    v = verts.detach().float()
    z0, t_far = _ray_range(v, camera)
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
    return RayHits(mask.view(H, W), depth.view(H, W), face.view(H, W), bary.view(H, W, 3), pts.view(H, W, 3))


# ---------------------------------------------------------------------------------------------- public
def _cameras(camera, batch: int | None, where: str) -> list[Camera]:
    if isinstance(camera, Camera):
        return [camera] * (batch or 1)
    cams = list(camera)
    if batch is None or len(cams) != batch or not all(isinstance(c, Camera) for c in cams):
        raise ValueError(f"{where}: camera must be a Camera, or a sequence of B Cameras for verts (B, V, 3)")
    if len({(c.width, c.height) for c in cams}) != 1:
        raise ValueError(f"{where}: all cameras of a batch need the same image size")
    return cams


def _stack(items: list, batched: bool):
    if not batched:
        return items[0]
    cls = type(items[0])
    return cls(*(torch.stack([getattr(x, k) for x in items]) for k in cls.__dataclass_fields__))


def raycast(
    verts: torch.Tensor,
    faces: torch.Tensor,
    camera: Camera | Sequence[Camera],
    *,
    back: bool = False,
    backend: str = "warp",
    method: str = "auto",
) -> RayHits:
    """Cast one ray per pixel centre and return the first (or last) hit.

    Args:
        verts: (V, 3) or (B, V, 3) vertex positions, world frame, metres.
        faces: (F, 3) long vertex indices (shared by the batch).
        camera: a :class:`Camera`, or B cameras (same image size) for batched ``verts``.
        back: False -> first hit along each pixel ray; True -> last hit along the same rays.
        backend: ``"warp"`` (fast) or ``"torch"`` (brute-force reference; small meshes / images).
        method: Warp visibility method, same results: ``"ray"`` (BVH ``wp.mesh_query_ray`` per
            pixel), ``"raster"`` (z-buffer of pixel-centre coverage, then an exact ray/triangle
            intersection per covered pixel; ~4x faster on CPU; falls back to rays when a perspective
            camera has vertices at or behind its centre) or ``"auto"`` (raster on CPU, ray on CUDA).

    Returns:
        :class:`RayHits` with (H, W) fields ((B, H, W) for batched ``verts``); no gradients.
    """
    if backend not in ("warp", "torch"):
        raise ValueError(f"raycast: backend must be 'warp' or 'torch', got {backend!r}")
    if method not in ("auto", "ray", "raster"):
        raise ValueError(f"raycast: method must be 'auto', 'ray' or 'raster', got {method!r}")
    check_mesh(verts, faces, where="raycast")
    if verts.ndim not in (2, 3):
        raise ValueError(f"raycast: verts must be (V, 3) or (B, V, 3), got {tuple(verts.shape)}")
    batched = verts.ndim == 3
    cams = _cameras(camera, verts.shape[0] if batched else None, "raycast")
    vb = verts if batched else verts[None]
    with torch.no_grad():
        if backend == "warp":
            hits = [_raycast_warp(v.detach(), faces, cam, back, method) for v, cam in zip(vb, cams)]
        else:
            hits = [_raycast_torch(v.detach(), faces, cam, back) for v, cam in zip(vb, cams)]
    return _stack(hits, batched)


@wp.kernel
def _normals_kernel(
    offset: int,
    face: wp.array(dtype=wp.int64),
    bary: wp.array(dtype=wp.vec3),
    indices: wp.array(dtype=wp.int32),
    vn: wp.array(dtype=wp.vec3),
    Rv: wp.mat33,
    out: wp.array(dtype=wp.vec3),
):
    i = wp.tid() + offset
    f = int(face[i])
    if f < 0:
        out[i] = wp.vec3(0.0, 0.0, 0.0)
        return
    b = bary[i]
    n = b[0] * vn[indices[3 * f]] + b[1] * vn[indices[3 * f + 1]] + b[2] * vn[indices[3 * f + 2]]
    out[i] = wp.normalize(Rv @ n)


def _normals_view(vn: torch.Tensor, faces: torch.Tensor, hits: RayHits, camera: Camera,
                  backend: str = "torch") -> torch.Tensor:
    """(H, W, 3) normals interpolated from (V, 3) vertex normals at the hits, view frame; 0 off the mask."""
    H, W = hits.mask.shape
    if backend == "warp":
        out = torch.empty(H * W, 3, dtype=torch.float32, device=vn.device)
        Rv = wp.mat33(*camera.view_rotation(torch.device("cpu")).reshape(-1).tolist())
        with torch_stream(vn.device):
            args = [wp.from_torch(hits.face_idx.reshape(-1).contiguous(), dtype=wp.int64),
                    wp.from_torch(hits.bary.reshape(-1, 3).contiguous(), dtype=wp.vec3),
                    wp.from_torch(faces.to(torch.int32).reshape(-1).contiguous()),
                    wp.from_torch(vn.float().contiguous(), dtype=wp.vec3), Rv, wp.from_torch(out, dtype=wp.vec3)]
            parallel_launch(_normals_kernel, H * W, lambda _off: args, device=wp_device(vn.device), min_chunk=16384)
        return out.view(H, W, 3)
    pix = hits.mask.reshape(-1).nonzero().squeeze(1)
    fv = faces[hits.face_idx.reshape(-1)[pix]]  # (M, 3)
    n = (hits.bary.reshape(-1, 3)[pix, :, None] * vn[fv]).sum(-2)
    n = torch.nn.functional.normalize(n @ camera.view_rotation(vn.device, vn.dtype).T, dim=-1)
    return vn.new_zeros(H * W, 3).index_copy_(0, pix, n).view(H, W, 3)


def render_normal_maps(
    verts: torch.Tensor, faces: torch.Tensor, camera: Camera | Sequence[Camera], *, backend: str = "warp"
) -> NormalMaps:
    """Front and back normal maps of a mesh (ICON's input representation). Not differentiable.

    Args:
        verts: (V, 3) or (B, V, 3) world vertices, metres.
        faces: (F, 3) long, counter-clockwise seen from outside.
        camera: a :class:`Camera`, or B cameras for batched ``verts``.
        backend: ``"warp"`` or ``"torch"`` (reference).

    Returns:
        :class:`NormalMaps`, (H, W, ...) fields ((B, H, W, ...) for batched ``verts``); normals in the
        camera view frame (x right, y up, z to the viewer).
    """
    check_mesh(verts, faces, where="render_normal_maps")
    if verts.ndim not in (2, 3):
        raise ValueError(f"render_normal_maps: verts must be (V, 3) or (B, V, 3), got {tuple(verts.shape)}")
    batched = verts.ndim == 3
    cams = _cameras(camera, verts.shape[0] if batched else None, "render_normal_maps")
    out = []
    with torch.no_grad():
        for v, cam in zip(verts if batched else verts[None], cams):
            v = v.detach()
            f = raycast(v, faces, cam, back=False, backend=backend)
            b = raycast(v, faces, cam, back=True, backend=backend)
            vn = vertex_normals(v.float(), faces)
            out.append(NormalMaps(
                _normals_view(vn, faces.long(), f, cam, backend), _normals_view(vn, faces.long(), b, cam, backend),
                f.mask, b.mask, f.depth, b.depth,
            ))
    return _stack(out, batched)
