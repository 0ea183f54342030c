"""Surface metrics of a reconstruction against ground truth (ICON's Chamfer / P2S / normal consistency)."""

from __future__ import annotations

import numpy as np
import torch
import trimesh

from avatar.geometry.sdf import signed_distance

__all__ = ["surface_metrics"]


def _sample(verts: np.ndarray, faces: np.ndarray, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    m = trimesh.Trimesh(verts, faces, process=False)
    pts, fid = trimesh.sample.sample_surface(m, n, seed=seed)
    return torch.as_tensor(pts, dtype=torch.float32), torch.as_tensor(m.face_normals[fid], dtype=torch.float32)


def surface_metrics(verts: np.ndarray, faces: np.ndarray, gt_verts: np.ndarray, gt_faces: np.ndarray,
                    n: int = 20000, seed: int = 0) -> dict[str, float]:
    """Chamfer, P2S and normal consistency between two meshes (same world frame, metres).

    * ``p2s_cm``: mean distance from points sampled on the reconstruction to the GT surface (cm).
    * ``chamfer_cm``: mean of P2S and the reverse (GT samples to the reconstruction) (cm).
    * ``normal_consistency``: mean |cos| between a sample's face normal and the other surface's normal at
      the closest point, both directions averaged (1 = perfect).

    Args:
        verts (N, 3), faces (M, 3): reconstruction.  gt_verts, gt_faces: ground truth.  n: samples per mesh.
    """
    v = torch.as_tensor(verts, dtype=torch.float32)
    f = torch.as_tensor(faces, dtype=torch.long)
    gv = torch.as_tensor(gt_verts, dtype=torch.float32)
    gf = torch.as_tensor(gt_faces, dtype=torch.long)
    pr, nr = _sample(verts, faces, n, seed)
    pg, ng = _sample(gt_verts, gt_faces, n, seed + 1)
    to_gt = signed_distance(pr, gv, gf)
    to_rec = signed_distance(pg, v, f)
    p2s = float(to_gt.sdf.abs().mean()) * 100
    s2p = float(to_rec.sdf.abs().mean()) * 100
    nc = 0.5 * (float((nr * to_gt.normal).sum(-1).abs().mean()) + float((ng * to_rec.normal).sum(-1).abs().mean()))
    return {"chamfer_cm": 0.5 * (p2s + s2p), "p2s_cm": p2s, "normal_consistency": nc}
