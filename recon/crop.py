"""ICON-style square person crop: the crop of the full-frame perspective camera around the body.

Training data and inference use the same rule (:func:`body_crop`): the square box around the fitted
body's projected vertices, enlarged by ``margin``, resampled to ``size`` x ``size`` pixels. The crop's
camera is the full camera's intrinsics shifted and scaled (:meth:`Camera.cropped`), so world points
project into the crop exactly as into the frame, and every map of the stage (image, mask, body and
clothed normal maps) lives on this pixel grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from foundation.camera import Camera

__all__ = ["CropBox", "body_crop", "crop_image", "sample_map", "resample_normals", "silhouette_carver"]


@dataclass(frozen=True)
class CropBox:
    """A square box in full-frame pixels and the crop camera.

    Attributes:
        x0, y0: top-left corner (px, may lie outside the frame).  side: box side (px).
        camera: the crop's camera (``size`` x ``size`` px), same world frame as the full camera.
    """

    x0: float
    y0: float
    side: float
    camera: Camera


def body_crop(camera: Camera, verts: torch.Tensor, size: int, margin: float = 1.15) -> CropBox:
    """Square crop around a body's projection.

    Args:
        camera: full-frame camera (world = SMPL-X frame).
        verts: (V, 3) body vertices, world frame, metres.
        size: output side in pixels.
        margin: box side = margin * the larger side of the projected bounding box.

    Returns:
        :class:`CropBox` with the crop camera.
    """
    if verts.ndim != 2 or verts.shape[-1] != 3:
        raise ValueError(f"body_crop: verts must be (V, 3), got {tuple(verts.shape)}")
    uv, z = camera.project(verts.detach().float())
    if bool((z <= 0).any()) and not camera.ortho:
        raise ValueError("body_crop: part of the body is behind the camera; check the tracked transl / camera")
    lo, hi = uv.min(0).values, uv.max(0).values
    c = 0.5 * (lo + hi)
    side = float((hi - lo).max()) * margin
    x0, y0 = float(c[0]) - side / 2, float(c[1]) - side / 2
    return CropBox(x0, y0, side, camera.cropped(x0, y0, side, side, size))


def crop_image(image: torch.Tensor, box: CropBox, mode: str = "bilinear") -> torch.Tensor:
    """Resample a full-frame image into the crop.

    Args:
        image: (H, W, C) or (H, W) float tensor on the full frame.
        box: the crop.
        mode: ``"bilinear"`` or ``"nearest"``.

    Returns:
        (S, S, C) or (S, S) tensor; zeros outside the frame.
    """
    squeeze = image.ndim == 2
    img = image[..., None] if squeeze else image
    H, W = img.shape[:2]
    S = box.camera.width
    t = (torch.arange(S, dtype=torch.float32, device=img.device) + 0.5) * (box.side / S)
    u = (box.x0 + t) / W * 2 - 1
    v = (box.y0 + t) / H * 2 - 1
    grid = torch.stack(torch.meshgrid(v, u, indexing="ij")[::-1], -1)[None]  # (1, S, S, 2) x, y
    out = F.grid_sample(img.permute(2, 0, 1)[None].float(), grid, mode=mode, padding_mode="zeros",
                        align_corners=False)[0].permute(1, 2, 0)
    return out[..., 0] if squeeze else out


def sample_map(maps: torch.Tensor, uv: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Sample (C, H, W) maps at pixel positions.

    Args:
        maps: (C, H, W) float maps (e.g. normal maps, channel-first).
        uv: (N, 2) pixel coordinates (u right, v down; pixel centres at integer + 0.5).

    Returns:
        (N, C) samples; zeros outside the map.
    """
    C, H, W = maps.shape
    g = torch.stack([uv[:, 0] / W * 2 - 1, uv[:, 1] / H * 2 - 1], -1)[None, None]  # (1, 1, N, 2)
    return F.grid_sample(maps[None], g.to(maps.dtype), mode=mode, padding_mode="zeros",
                         align_corners=False)[0, :, 0].T


def silhouette_carver(mask, camera: Camera, dilate_px: int, device=None):
    """``f(points (N, 3) world) -> (N,)`` person-mask value in [0, 1] at the points' projections.

    Args:
        mask: (H, W) full-frame person mask in [0, 1].  camera: the frame's camera.
        dilate_px: max-pool radius (pixels) applied to the mask first (tolerates segmentation errors).
    """
    m = torch.as_tensor(mask, dtype=torch.float32, device=device)[None]
    if dilate_px > 0:
        m = F.max_pool2d(m[None], 2 * dilate_px + 1, stride=1, padding=dilate_px)[0]

    def fn(points: torch.Tensor) -> torch.Tensor:
        uv, _ = camera.project(points)
        return sample_map(m, uv)[:, 0]

    return fn


def resample_normals(normals: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """(3, S, S) normal map (zero off the surface) -> (3, size, size) unit normals.

    Normals are averaged with their validity as weights (a normalised convolution), so the zeros off the
    surface do not shrink the vectors at the silhouette; pixels with no valid neighbour stay zero.
    ``mode``: "bilinear" (up or down by small factors) or "area" (block averages, for downsampling).
    """
    n = normals.float()[None]
    valid = (n.norm(dim=1, keepdim=True) > 1e-6).float()
    kw = {"align_corners": False} if mode == "bilinear" else {}
    a = F.interpolate(torch.cat([n * valid, valid], 1), size=(size, size), mode=mode, **kw)[0]
    up, w = a[:3] / a[3:].clamp(min=1e-6), a[3:]
    return up / up.norm(dim=0, keepdim=True).clamp(min=1e-6) * (w > 1e-3).float()
