"""ICON's local point features: body signed distance, body normal, clothed normal from the maps.

For a query point ``P`` (world, metres) and the fitted body mesh:

* ``s(P)``: signed distance to the body (negative inside), from :func:`foundation.geometry.sdf.signed_distance`;
* ``n_b(P)``: barycentric body normal at the closest body point, rotated into the crop's view frame;
* ``n_c(P)``: clothed normal sampled at ``P``'s projection from the *front* predicted map if the closest
  body point is visible from the camera (barycentric interpolation of per-vertex visibility > 0.5, as
  ICON), else from the *back* map.

All normal maps are in the view frame (+X right, +Y up, +Z to the viewer) of the crop camera.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from foundation.camera import Camera
from foundation.geometry.sdf import ClosestPoint, signed_distance
from recon.crop import sample_map

__all__ = ["ViewMaps", "FEATURE_DIM", "body_normal_maps", "to_chw", "point_features"]

FEATURE_DIM = 7


def to_chw(m: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) -> (3, H, W) float32 (no-op for (3, H, W))."""
    if m.ndim == 3 and m.shape[-1] == 3 and m.shape[0] != 3:
        return m.permute(2, 0, 1).float().contiguous()
    return m.float()


@dataclass
class ViewMaps:
    """Everything the features need from one view (the ICON crop of one frame).

    Attributes:
        camera: crop camera (S x S px), world = SMPL-X frame.
        body_front, body_back: (3, S, S) body normal maps, view frame, zero off the body.
        body_mask: (S, S) bool, body hit by the front rays.
        vert_vis: (V,) float32, 1 for body vertices seen by the camera.
        clothed_front, clothed_back: (3, S, S) clothed normal maps (predicted, or ground truth for
            training), view frame.
        body_depth: (2, S, S) camera z (metres) of the body's first / last surface, 0 off the body (the
            learned depth prior's reference, :mod:`recon.depth_net`); None for maps made without it.
        clothed_depth: (2, S, S) camera z of the clothed front / back surface predicted by the depth net
            (the econ surface's prior), or None.
    """

    camera: Camera
    body_front: torch.Tensor
    body_back: torch.Tensor
    body_mask: torch.Tensor
    vert_vis: torch.Tensor
    clothed_front: torch.Tensor | None = None
    clothed_back: torch.Tensor | None = None
    body_depth: torch.Tensor | None = None
    clothed_depth: torch.Tensor | None = None


def body_normal_maps(verts: torch.Tensor, faces: torch.Tensor, camera: Camera) -> ViewMaps:
    """Body normal maps front/back and vertex visibility by ray casting (project raycast, no grad).

    Args:
        verts: (V, 3) body vertices, world frame, metres.  faces: (F, 3) long.
        camera: the crop camera.

    Returns:
        :class:`ViewMaps` without clothed maps.
    """
    from foundation.geometry.raycast import render_normal_maps

    with torch.no_grad():
        v = verts.detach().float()
        nm = render_normal_maps(v, faces, camera)
        hits_face = nm_face_idx(nm, v, faces, camera)
        vis = torch.zeros(v.shape[0], dtype=torch.float32, device=v.device)
        if hits_face.numel():
            vis[faces[hits_face].reshape(-1)] = 1.0
        front = to_chw(nm.front) * torch.as_tensor(nm.mask_front, device=v.device)[None].float()
        back = to_chw(nm.back) * torch.as_tensor(nm.mask_back, device=v.device)[None].float()
        depth = torch.stack([torch.as_tensor(nm.depth_front, device=v.device),
                             torch.as_tensor(nm.depth_back, device=v.device)]).float()
    return ViewMaps(camera, front, back, torch.as_tensor(nm.mask_front).bool(), vis, body_depth=depth)


def nm_face_idx(nm, verts: torch.Tensor, faces: torch.Tensor, camera: Camera) -> torch.Tensor:
    """Faces hit by the front rays: (K,) long unique face indices."""
    from foundation.geometry.raycast import raycast

    fidx = getattr(nm, "face_front", None)
    if fidx is not None:
        m = torch.as_tensor(nm.mask_front).bool()
        return torch.unique(torch.as_tensor(fidx)[m].long())
    hits = raycast(verts, faces, camera)
    m = torch.as_tensor(hits.mask).bool()
    return torch.unique(torch.as_tensor(hits.face_idx)[m].long())


def point_features(points: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor, maps: ViewMaps,
                   cp: ClosestPoint | None = None) -> tuple[torch.Tensor, ClosestPoint]:
    """ICON local features of query points.

    Args:
        points: (N, 3) world, metres.
        verts: (V, 3) body vertices (world).  faces: (F, 3) long.
        maps: the view's maps, with ``clothed_front``/``clothed_back`` set.
        cp: precomputed ``signed_distance(points, verts, faces)`` (optional).

    Returns:
        feats: (N, 7) ``[s, n_b (view frame), n_c (view frame)]``; ``s`` in metres.
        cp: the closest-point query (reused by callers for banding).
    """
    if maps.clothed_front is None or maps.clothed_back is None:
        raise ValueError("point_features: maps.clothed_front/back are not set (predict normals first)")
    if cp is None:
        cp = signed_distance(points, verts, faces)
    Rv = maps.camera.view_rotation(points.device)
    n_body = cp.normal @ Rv.T
    fv = faces[cp.face_idx]
    vis = (cp.bary * maps.vert_vis[fv]).sum(-1) > 0.5
    uv, _ = maps.camera.project(points)
    front = sample_map(maps.clothed_front, uv)
    back = sample_map(maps.clothed_back, uv)
    n_cloth = torch.where(vis[:, None], front, back)
    n_cloth = n_cloth / n_cloth.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    return torch.cat([cp.sdf[:, None], n_body, n_cloth], -1), cp
