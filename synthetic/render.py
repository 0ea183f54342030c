"""Rendering of the synthetic people: thin uses of the project renderer (:mod:`foundation.render`) with
the training-data lighting (Lambert with ambient, a fill light opposite the key light, optional
specular; vertex colours interpolated at the hit; anti-aliased by supersampling), random
backgrounds, and the ICON-style orthographic crop camera.

Normal maps are :func:`foundation.geometry.raycast.render_normal_maps` (view frame: +X right, +Y up, +Z
towards the viewer, zero off the mask; the back map holds the LAST hit along each front ray).

The renders feed the training data of committed checkpoints and the cached benchmark set: keep
:func:`render_rgb` / :func:`shade_rgb` bitwise stable (same float operations in the same order).
"""

from __future__ import annotations

import numpy as np
import torch

from foundation.camera import Camera
from foundation.geometry.raycast import RayHits, render_normal_maps
from foundation.render import render_hits, render_mesh, shade_hits

__all__ = ["render_hits", "render_normal_maps", "shade_rgb", "random_background", "ortho_crop_camera", "render_rgb"]

FILL = 0.15  # intensity of the fill light opposite the key light (keeps the shadowed half readable)


def shade_rgb(verts: torch.Tensor, faces: torch.Tensor, colors: torch.Tensor, hits: RayHits,
              light_dir: torch.Tensor, ambient: float = 0.35, specular: float = 0.0) -> torch.Tensor:
    """(K, 3) Lambert-shaded colours in [0, 1] at the K hit pixels of ``hits`` (row-major order).

    Args:
        verts: (V, 3) world metres; faces: (F, 3) long; hits: their hits (:func:`render_hits`).
        colors: (V, 3) uint8 albedo; light_dir: (3,) world direction towards the light.
        ambient, specular: as :func:`foundation.render.shade_hits` (fill light :data:`FILL`).
    """
    return shade_hits(verts, faces, hits, colors.float() / 255.0, light=light_dir, ambient=ambient, fill=FILL,
                      specular=specular).clamp(0, 1)


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
    """Shaded RGB of a mesh over a background image (the colours of :func:`shade_rgb`).

    Args:
        verts: (V, 3) world metres; faces: (F, 3); colors: (V, 3) uint8; camera: the view (H x W).
        background: (H, W, 3) float in [0, 1] (:func:`random_background`).
        light_dir: (3,) world direction towards the light; ssaa: supersampling factor.

    Returns:
        (H, W, 3) uint8 image and (H, W) float32 coverage (fraction of each pixel's rays that hit).
    """
    image, coverage = render_mesh(verts, faces, camera, torch.as_tensor(colors).float() / 255.0, background=background,
                                  light=light_dir, ambient=ambient, fill=FILL, ssaa=ssaa)
    return image, coverage.astype(np.float32)


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
