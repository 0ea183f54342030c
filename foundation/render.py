"""Rendering of coloured meshes through the project's ray caster (``foundation.geometry.raycast``).

Used for W&B images, held-out image metrics and the animation video.
"""

from __future__ import annotations

import numpy as np
import torch

from foundation.camera import Camera

__all__ = ["render_mesh", "front_camera"]

LIGHT_DIR = torch.tensor([0.3, 0.5, 1.0])  # world-frame direction towards the light (front, above)


@torch.no_grad()
def render_mesh(verts: torch.Tensor, faces: torch.Tensor, camera: Camera, colors: torch.Tensor | None = None,
                shading: str = "lambert", background=(255, 255, 255)) -> tuple[np.ndarray, np.ndarray]:
    """Render one mesh.

    Args:
        verts: (V, 3) world metres; faces: (F, 3) long; camera: the view.
        colors: (V, 3) uint8 vertex colours, or None for grey.
        shading: "lambert" (colour x (0.35 + 0.65 max(0, n.l))), "flat" (colours only, for image
            metrics against the input frames) or "normals" (world normals as RGB).
        background: RGB of pixels that miss the mesh.

    Returns:
        image (H, W, 3) uint8, mask (H, W) bool.
    """
    from foundation.geometry.normals import vertex_normals
    from foundation.geometry.raycast import raycast

    verts = verts.float()
    faces = faces.long()
    hits = raycast(verts, faces, camera)
    mask = hits.mask.bool().reshape(camera.height, camera.width)
    img = torch.tensor(background, dtype=torch.float32).expand(camera.height, camera.width, 3).clone()
    if mask.any():
        fi = hits.face_idx.reshape(camera.height, camera.width)[mask].long()
        bary = hits.bary.reshape(camera.height, camera.width, 3)[mask].float()
        fv = faces[fi]
        if shading == "normals":
            n = (bary[..., None] * vertex_normals(verts, faces)[fv]).sum(1)
            col = (n / n.norm(dim=-1, keepdim=True).clamp(min=1e-9) * 0.5 + 0.5) * 255
        else:
            c = colors.float() if colors is not None else torch.full((verts.shape[0], 3), 180.0)
            col = (bary[..., None] * c[fv]).sum(1)
            if shading == "lambert":
                n = (bary[..., None] * vertex_normals(verts, faces)[fv]).sum(1)
                n = n / n.norm(dim=-1, keepdim=True).clamp(min=1e-9)
                lam = (n @ (LIGHT_DIR / LIGHT_DIR.norm())).clamp(min=0)
                col = col * (0.35 + 0.65 * lam[:, None])
            elif shading != "flat":
                raise ValueError(f"render_mesh: shading must be 'lambert', 'flat' or 'normals', got {shading!r}")
        img[mask] = col
    return img.round().clamp(0, 255).to(torch.uint8).numpy(), mask.numpy()


def front_camera(points: np.ndarray, size: int = 512, fov_deg: float = 30.0, margin: float = 1.15) -> Camera:
    """Camera on +Z looking at the centre of ``points`` (N, 3) (world), framing all of them."""
    p = np.asarray(points, np.float64).reshape(-1, 3)
    lo, hi = p.min(0), p.max(0)
    c = 0.5 * (lo + hi)
    half = 0.5 * max(hi[1] - lo[1], hi[0] - lo[0]) * margin
    dist = half / np.tan(np.radians(fov_deg) / 2) + (hi[2] - c[2])
    return Camera.look_at(c + np.array([0.0, 0.0, dist]), c, width=size, height=size, fov_deg=fov_deg)
