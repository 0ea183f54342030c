"""Rendering of the synthetic people on the project's ray caster (:mod:`foundation.geometry.raycast`):
Lambert-shaded RGB with vertex colours (barycentric interpolation at the hit), anti-aliased by
supersampling, random backgrounds, and the ICON-style orthographic crop camera.

Normal maps are :func:`foundation.geometry.raycast.render_normal_maps` (view frame: +X right, +Y up, +Z
towards the viewer, zero off the mask; the back map holds the LAST hit along each front ray).
"""

from __future__ import annotations

import numpy as np
import torch

from foundation.camera import Camera
from foundation.geometry.normals import vertex_normals
from foundation.geometry.raycast import RayHits, raycast, render_normal_maps

__all__ = ["render_hits", "render_normal_maps", "shade_rgb", "random_background", "ortho_crop_camera", "render_rgb"]


def render_hits(verts: torch.Tensor, faces: torch.Tensor, camera: Camera, *, back: bool = False,
                ssaa: int = 1) -> RayHits:
    """(H*ssaa, W*ssaa) hits of the camera's pixel rays (project ray caster); ``back``: LAST hit along each ray."""
    cam = camera.resized(camera.width * ssaa, camera.height * ssaa) if ssaa > 1 else camera
    return raycast(verts, faces.long(), cam, back=back)


def _interp(values: torch.Tensor, faces: torch.Tensor, hits: RayHits) -> torch.Tensor:
    """(K, C) barycentric interpolation of per-vertex values at the K hit pixels (row-major order)."""
    fi = hits.face_idx[hits.mask]
    return (values[faces[fi]] * hits.bary[hits.mask][..., None]).sum(1)


def shade_rgb(verts: torch.Tensor, faces: torch.Tensor, colors: torch.Tensor, hits: RayHits,
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
    return Camera.look_at(c + np.array([0.0, 0.0, 5.0]), c, width=size, height=size, ortho_scale=extent)
