"""Rendering of the synthetic people: ray-cast hits, normal maps (front / back), Lambert-shaded RGB with
vertex colours, random backgrounds, and the ICON-style orthographic crop camera.

Normal maps follow the project convention (``avatar/geometry/camera.py``): view frame (+X right, +Y up,
+Z towards the viewer), zero outside the mask; the back map holds the LAST hit along each front ray,
so it aligns pixel-for-pixel with the front map. Normals are the barycentric interpolation of the
area-weighted vertex normals at the hit (smooth shading).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import warp as wp

from avatar.geometry.camera import Camera
from avatar.geometry.normals import vertex_normals
from avatar.geometry.warp_utils import get_mesh, init_warp, parallel_launch, wp_device

__all__ = ["Hits", "cast_rays", "render_hits", "normal_map", "NormalMaps", "render_normal_maps", "shade_rgb",
           "random_background", "look_at", "ortho_crop_camera", "render_rgb"]


@wp.kernel
def _ray_kernel(
    offset: int,
    mesh: wp.uint64,
    origins: wp.array(dtype=wp.vec3),
    dirs: wp.array(dtype=wp.vec3),
    max_t: float,
    face: wp.array(dtype=wp.int32),
    bary: wp.array(dtype=wp.vec3),
    depth: wp.array(dtype=wp.float32),
):
    tid = wp.tid() + offset
    q = wp.mesh_query_ray(mesh, origins[tid], dirs[tid], max_t)
    if q.result:
        face[tid] = q.face
        bary[tid] = wp.vec3(q.u, q.v, 1.0 - q.u - q.v)
        depth[tid] = q.t
    else:
        face[tid] = -1
        bary[tid] = wp.vec3(0.0, 0.0, 0.0)
        depth[tid] = 0.0


@dataclass
class Hits:
    """First hits of a ray bundle (any leading shape ``S``).

    Attributes:
        mask: S bool; face_idx: S long (-1 on a miss); bary: S + (3,) barycentrics in ``faces[face_idx]``;
        t: S distance along the (unit) ray, metres.
    """

    mask: torch.Tensor
    face_idx: torch.Tensor
    bary: torch.Tensor
    t: torch.Tensor


def cast_rays(verts: torch.Tensor, faces: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor,
              max_t: float = 1.0e3) -> Hits:
    """Closest hits of rays ``origins + t dirs`` (unit ``dirs``; both (..., 3), world) on a mesh (V, 3)/(F, 3)."""
    init_warp()
    shape = origins.shape[:-1]
    o = origins.reshape(-1, 3).float().contiguous()
    d = dirs.reshape(-1, 3).float().contiguous()
    n = o.shape[0]
    face = torch.empty(n, dtype=torch.int32, device=o.device)
    bary = torch.empty(n, 3, dtype=torch.float32, device=o.device)
    t = torch.empty(n, dtype=torch.float32, device=o.device)
    mesh = get_mesh(verts.float(), faces)
    args = [mesh.id, wp.from_torch(o, dtype=wp.vec3), wp.from_torch(d, dtype=wp.vec3), float(max_t),
            wp.from_torch(face), wp.from_torch(bary, dtype=wp.vec3), wp.from_torch(t)]
    parallel_launch(_ray_kernel, n, lambda _o: args, device=wp_device(o.device))
    face = face.long()
    return Hits((face >= 0).reshape(shape), face.reshape(shape), bary.reshape(*shape, 3), t.reshape(shape))


@functools.lru_cache(maxsize=4)
def _camera_rays(camera: Camera) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached CPU pixel rays of a camera (do not modify the returned tensors)."""
    return camera.rays()


def render_hits(verts: torch.Tensor, faces: torch.Tensor, camera: Camera, *, back: bool = False,
                ssaa: int = 1) -> Hits:
    """(H*ssaa, W*ssaa) hits of the camera's pixel rays; ``back`` gives the LAST hit along each ray."""
    cam = camera.resized(camera.width * ssaa, camera.height * ssaa) if ssaa > 1 else camera
    o, d = _camera_rays(cam) if verts.device.type == "cpu" else cam.rays(device=verts.device)
    if back:
        c = 0.5 * (verts.amin(0) + verts.amax(0))
        r = 0.5 * (verts.amax(0) - verts.amin(0)).norm() + 0.1
        far = ((c - o) * d).sum(-1, keepdim=True) + r  # beyond the mesh's bounding sphere along each ray
        h = cast_rays(verts, faces, o + d * far, -d)
        h.t = torch.where(h.mask, far[..., 0] - h.t, h.t)
        return h
    return cast_rays(verts, faces, o, d)


def _interp(values: torch.Tensor, faces: torch.Tensor, hits: Hits) -> torch.Tensor:
    """(K, C) barycentric interpolation of per-vertex values at the K hit pixels."""
    fi = hits.face_idx[hits.mask]
    return (values[faces[fi]] * hits.bary[hits.mask][..., None]).sum(1)


def normal_map(verts: torch.Tensor, faces: torch.Tensor, hits: Hits, camera: Camera,
               vn: torch.Tensor | None = None) -> torch.Tensor:
    """(H, W, 3) view-frame unit normals at the hits (smooth), zero elsewhere."""
    vn = vertex_normals(verts, faces) if vn is None else vn
    out = torch.zeros(*hits.mask.shape, 3)
    if bool(hits.mask.any()):
        n = _interp(vn, faces, hits)
        n = n / n.norm(dim=-1, keepdim=True).clamp(min=1e-9)
        out[hits.mask] = n @ camera.view_rotation().T
    return out


@dataclass
class NormalMaps:
    """Front / back normal maps of one mesh (view frame, zero outside) and their masks (H, W)."""

    front: torch.Tensor
    back: torch.Tensor
    mask_front: torch.Tensor
    mask_back: torch.Tensor
    hits_front: Hits


def render_normal_maps(verts: torch.Tensor, faces: torch.Tensor, camera: Camera) -> NormalMaps:
    """Front (first hit) and back (last hit) normal maps of a mesh (V, 3) world / (F, 3)."""
    faces = faces.long()
    vn = vertex_normals(verts.float(), faces)
    hf = render_hits(verts, faces, camera)
    hb = render_hits(verts, faces, camera, back=True)
    return NormalMaps(normal_map(verts, faces, hf, camera, vn), normal_map(verts, faces, hb, camera, vn),
                      hf.mask, hb.mask, hf)


def shade_rgb(verts: torch.Tensor, faces: torch.Tensor, colors: torch.Tensor, hits: Hits,
              light_dir: torch.Tensor, ambient: float = 0.35, specular: float = 0.0) -> torch.Tensor:
    """(K, 3) Lambert-shaded colours in [0, 1] at the hit pixels.

    Args:
        colors: (V, 3) uint8 albedo; light_dir: (3,) world direction towards the light.
    """
    vn = vertex_normals(verts.float(), faces)
    n = _interp(vn, faces, hits)
    n = n / n.norm(dim=-1, keepdim=True).clamp(min=1e-9)
    albedo = _interp(colors.float() / 255.0, faces, hits)
    l = light_dir / light_dir.norm()  # noqa: E741
    lam = (n @ l).clamp(min=0)
    # a little light from the opposite side keeps the shadowed half readable
    fill = (n @ -l).clamp(min=0) * 0.15
    col = albedo * (ambient + (1 - ambient) * lam + fill)[:, None]
    if specular > 0:
        col = col + specular * lam[:, None] ** 16
    return col.clamp(0, 1)


def random_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1]: a flat colour, a vertical/diagonal gradient, or smooth noise, plus grain."""
    kind = rng.choice(["flat", "gradient", "noise"])
    c1 = rng.uniform(0.05, 0.95, 3)
    c2 = rng.uniform(0.05, 0.95, 3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == "flat":
        img = np.broadcast_to(c1, (height, width, 3)).copy()
    elif kind == "gradient":
        a = rng.uniform(0, 2 * np.pi)
        t = (np.cos(a) * xx / width + np.sin(a) * yy / height)
        t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
        img = c1 * (1 - t[..., None]) + c2 * t[..., None]
    else:
        k = int(rng.integers(3, 9))
        coarse = rng.uniform(0, 1, (k, k, 1)).astype(np.float32)
        t = torch.nn.functional.interpolate(torch.from_numpy(coarse).permute(2, 0, 1)[None], size=(height, width),
                                            mode="bicubic", align_corners=True)[0, 0].numpy().clip(0, 1)
        img = c1 * (1 - t[..., None]) + c2 * t[..., None]
    img = img + rng.normal(0, rng.uniform(0.0, 0.03), img.shape)
    return img.clip(0, 1).astype(np.float32)


def render_rgb(verts: torch.Tensor, faces: torch.Tensor, colors: torch.Tensor, camera: Camera,
               background: np.ndarray, light_dir: torch.Tensor, *, ssaa: int = 2, ambient: float = 0.35
               ) -> tuple[np.ndarray, np.ndarray]:
    """Shaded RGB over ``background`` (H, W, 3) float: returns (H, W, 3) uint8 and (H, W) float coverage."""
    faces = faces.long()
    h = render_hits(verts, faces, camera, ssaa=ssaa)
    H, W = camera.height, camera.width
    col = torch.zeros(H * ssaa, W * ssaa, 3)
    if bool(h.mask.any()):
        col[h.mask] = shade_rgb(verts, faces, colors, h, light_dir, ambient)
    a = h.mask.float()
    if ssaa > 1:
        col = col.reshape(H, ssaa, W, ssaa, 3).mean((1, 3))
        a = a.reshape(H, ssaa, W, ssaa).mean((1, 3))
    # col is premultiplied by coverage (misses are black)
    out = col.numpy() + background * (1 - a.numpy()[..., None])
    return (out.clip(0, 1) * 255).round().astype(np.uint8), a.numpy()


def look_at(eye, target, up=(0.0, 1.0, 0.0), *, width: int, height: int, fov_deg: float | None = 40.0,
            ortho_scale: float | None = None) -> Camera:
    """Camera at ``eye`` looking at ``target`` (world, metres) with ``up`` pointing up in the image.

    Same arguments as :meth:`Camera.look_at`; builds the OpenCV axes explicitly
    (``x = down x forward``), so world ``up`` maps to image rows going up and the
    world right (seen from the eye) to columns going right.
    """
    eye = np.asarray(eye, np.float64)
    z = np.asarray(target, np.float64) - eye
    z /= np.linalg.norm(z)
    down = -np.asarray(up, np.float64)
    x = np.cross(down, z)
    if np.linalg.norm(x) < 1e-8:
        raise ValueError("look_at: 'up' is parallel to the viewing direction")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    t = -R @ eye
    if ortho_scale is not None:
        f, ortho = height / float(ortho_scale), True
    else:
        f, ortho = 0.5 * height / np.tan(np.radians(fov_deg) / 2), False
    return Camera(width, height, float(f), float(f), width / 2, height / 2,
                  tuple(map(tuple, R.tolist())), tuple(t.tolist()), ortho)


def ortho_crop_camera(verts: torch.Tensor, size: int = 512, margin: float = 1.1,
                      jitter: np.ndarray | None = None) -> Camera:
    """ICON-style orthographic camera on +Z (looking along -Z), square crop framing ``verts`` (N, 3).

    ``margin`` scales the larger of the person's width / height; ``jitter`` (3,) = (dx, dy, dscale)
    in fractions of the crop shifts and scales it (data augmentation).
    """
    lo = verts.amin(0).cpu().numpy().astype(np.float64)
    hi = verts.amax(0).cpu().numpy().astype(np.float64)
    c = 0.5 * (lo + hi)
    extent = max(hi[0] - lo[0], hi[1] - lo[1]) * margin
    if jitter is not None:
        extent *= 1.0 + jitter[2]
        c[:2] += jitter[:2] * extent
    return look_at(c + np.array([0.0, 0.0, 5.0]), c, width=size, height=size, ortho_scale=extent)
