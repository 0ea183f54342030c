"""Warp kernels of the ray caster: BVH rays, the CPU z-buffer, and normal interpolation at the hits.

Every kernel that needs a pixel ray builds it with the one ``@wp.func`` :func:`_pixel_ray`, the Warp
twin of :func:`foundation.geometry.raycast_torch.pixel_rays` (one ray per pixel centre; perspective
rays start at the camera centre, orthographic rays on the plane ``z_cam = z0``).

Two visibility methods with the same results:

* ``"ray"``: ``wp.mesh_query_ray`` per pixel on the cached BVH (:func:`~foundation.geometry.warp_utils.get_mesh`);
  ``back`` casts from beyond the mesh back towards the origin, so it returns the last hit.
* ``"raster"``: a z-buffer of pixel-centre coverage (one thread per band of rows), then the exact
  ray / triangle intersection of each covered pixel's ray with its winning triangle. ~4x faster than
  BVH rays on CPU; needs every vertex in front of a perspective camera (else rays are used).

Use :func:`foundation.geometry.raycast.raycast` rather than these functions directly. Nothing here
is differentiable.
"""

from __future__ import annotations

import torch
import warp as wp

from foundation.camera import Camera
from foundation.geometry.raycast_torch import range_from_extent
from foundation.geometry.warp_utils import get_mesh, init_warp, parallel_launch, torch_stream, wp_device

# The kernels here are never differentiated by Warp (gradients are recomputed in torch): skip the
# adjoint code, which halves compile time.
wp.set_module_options({"enable_backward": False})

__all__ = ["raycast_warp", "interpolate_normals_warp"]


# ---------------------------------------------------------------------------------------------- funcs
@wp.func
def _pixel_ray(row: int, col: int, R: wp.mat33, t: wp.vec3, intr: wp.vec4, ortho: int, z0: float):
    """World-frame origin and unit direction of the ray through the centre of pixel (row, col).

    ``R``, ``t``: world->camera (``x_cam = R x + t``); ``intr`` = (fx, fy, cx, cy); ``z0``: camera z of
    orthographic ray origins.
    """
    x = (float(col) + 0.5 - intr[2]) / intr[0]
    y = (float(row) + 0.5 - intr[3]) / intr[1]
    Rt = wp.transpose(R)
    o_cam = wp.vec3(0.0, 0.0, 0.0)
    d_cam = wp.normalize(wp.vec3(x, y, 1.0))
    if ortho != 0:
        o_cam = wp.vec3(x, y, z0)
        d_cam = wp.vec3(0.0, 0.0, 1.0)
    return Rt @ (o_cam - t), Rt @ d_cam


@wp.func
def _camera_z(R: wp.mat33, t: wp.vec3, p: wp.vec3):
    """Camera-frame z of the world point ``p``."""
    return wp.dot(wp.vec3(R[2, 0], R[2, 1], R[2, 2]), p) + t[2]


# ---------------------------------------------------------------------------------------------- kernels
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
    o, d = _pixel_ray(row, col, R, t, intr, ortho, z0)
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
        depth[tid] = _camera_z(R, t, p)
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
    for i in range(r0 * width, r1 * width):
        f = face[i]
        if f < 0:
            bary[i] = wp.vec3(0.0, 0.0, 0.0)
            depth[i] = 0.0
            points[i] = wp.vec3(0.0, 0.0, 0.0)
            continue
        row = i // width
        col = i - row * width
        o, d = _pixel_ray(row, col, R, t, intr, ortho, z0)
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
        depth[i] = _camera_z(R, t, p)
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


# ---------------------------------------------------------------------------------------------- host
def _band_ranges(bounds: torch.Tensor, first_row: torch.Tensor, height: int, rows_per_band: int):
    """Sort triangles by first row; per band of rows, the [start, end) range of candidate triangles.

    Args:
        bounds: (F, 4) int32 (row_lo, row_hi, col_lo, col_hi) pixel bounds per face (culled: row_lo = H).
        first_row: (F,) int32 ``bounds[:, 0]``.

    Returns:
        face ids (F,) int32 in sorted order, their bounds (F, 4), per-band (n_bands, 2) int32 ranges
        into them, and n_bands.
    """
    order = first_row.argsort()
    rows = first_row[order].contiguous()
    bounds = bounds[order].contiguous()
    kept = bounds[:, 0] < height
    span = int((bounds[kept, 1] - bounds[kept, 0]).max()) if bool(kept.any()) else 0
    n_bands = (height + rows_per_band - 1) // rows_per_band
    r0 = torch.arange(n_bands, device=bounds.device, dtype=torch.int32) * rows_per_band
    band_range = torch.stack([torch.searchsorted(rows, r0 - span), torch.searchsorted(rows, r0 + rows_per_band)], -1)
    return order.to(torch.int32).contiguous(), bounds, band_range.to(torch.int32).contiguous(), n_bands


def raycast_warp(verts: torch.Tensor, faces: torch.Tensor, camera: Camera, back: bool, method: str = "auto"
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """First (or last, ``back``) hit of every pixel ray of ``camera`` with Warp (no grad).

    Args:
        verts: (V, 3) world vertices, metres; faces: (F, 3) integer, same device (CPU or CUDA).
        camera: the camera (H x W image).
        back: last hit along each ray instead of the first.
        method: ``"ray"``, ``"raster"`` or ``"auto"`` (raster on CPU, ray on CUDA); see the module doc.

    Returns:
        face_idx (H, W) long (-1: no hit), depth (H, W) float32 camera z (0: no hit), bary (H, W, 3)
        and points (H, W, 3) world frame (0: no hit); the fields of :class:`~foundation.geometry.raycast.RayHits`.
    """
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
        z0, t_far = range_from_extent(zmin, zmax, rmax, bool(camera.ortho))
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
    return face.long().view(H, W), depth.view(H, W), bary.view(H, W, 3), points.view(H, W, 3)


def interpolate_normals_warp(vn: torch.Tensor, faces: torch.Tensor, face_idx: torch.Tensor, bary: torch.Tensor,
                             camera: Camera) -> torch.Tensor:
    """Vertex normals interpolated at ray hits, rotated into the camera VIEW frame (Warp kernel).

    Args:
        vn: (V, 3) world-frame unit vertex normals; faces: (F, 3) integer.
        face_idx: (H, W) long hit faces (-1: no hit); bary: (H, W, 3) barycentrics of the hits.
        camera: the camera whose view rotation is applied.

    Returns:
        (H, W, 3) float32 unit normals in the view frame (x right, y up, z towards the viewer), 0 where
        no hit.
    """
    H, W = face_idx.shape
    out = torch.empty(H * W, 3, dtype=torch.float32, device=vn.device)
    Rv = wp.mat33(*camera.view_rotation(torch.device("cpu")).reshape(-1).tolist())
    with torch_stream(vn.device):
        args = [wp.from_torch(face_idx.reshape(-1).contiguous(), dtype=wp.int64),
                wp.from_torch(bary.reshape(-1, 3).contiguous(), dtype=wp.vec3),
                wp.from_torch(faces.to(torch.int32).reshape(-1).contiguous()),
                wp.from_torch(vn.float().contiguous(), dtype=wp.vec3), Rv, wp.from_torch(out, dtype=wp.vec3)]
        parallel_launch(_normals_kernel, H * W, lambda _off: args, device=wp_device(vn.device), min_chunk=16384)
    return out.view(H, W, 3)
