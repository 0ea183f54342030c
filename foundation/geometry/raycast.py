"""Per-pixel ray casting of triangle meshes (visibility, depth) and ICON-style front/back normal maps.

This is the public API; the backends live in :mod:`foundation.geometry.raycast_warp` (Warp kernels)
and :mod:`foundation.geometry.raycast_torch` (pure-torch rays, Möller-Trumbore and the brute-force
reference), which this module re-exports :func:`pixel_rays` and :func:`ray_triangle_bary` from.

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

from dataclasses import dataclass
from typing import Sequence

import torch

from foundation.camera import Camera
from foundation.geometry.normals import check_mesh, vertex_normals
from foundation.geometry.raycast_torch import interpolate_normals_torch, pixel_rays, ray_triangle_bary, raycast_torch
from foundation.geometry.raycast_warp import interpolate_normals_warp, raycast_warp

__all__ = ["RayHits", "NormalMaps", "raycast", "render_normal_maps", "pixel_rays", "ray_triangle_bary"]


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
    hits = []
    with torch.no_grad():
        for v, cam in zip(vb, cams):
            if backend == "warp":
                face, depth, bary, points = raycast_warp(v.detach(), faces, cam, back, method)
            else:
                face, depth, bary, points = raycast_torch(v.detach(), faces, cam, back)
            hits.append(RayHits(face >= 0, depth, face, bary, points))
    return _stack(hits, batched)


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
            interp = interpolate_normals_warp if backend == "warp" else interpolate_normals_torch
            out.append(NormalMaps(
                interp(vn, faces.long(), f.face_idx, f.bary, cam), interp(vn, faces.long(), b.face_idx, b.bary, cam),
                f.mask, b.mask, f.depth, b.depth,
            ))
    return _stack(out, batched)
