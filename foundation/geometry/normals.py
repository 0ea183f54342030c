"""Face and vertex normals of triangle meshes (pure torch, batched, differentiable)."""

from __future__ import annotations

import torch

__all__ = ["check_mesh", "face_normals", "vertex_normals"]


def check_mesh(verts: torch.Tensor, faces: torch.Tensor, *, where: str, batched: bool = True) -> None:
    """Validate a ``(..., V, 3)`` floating vertex tensor and a ``(F, 3)`` integer face tensor.

    Args:
        verts: (..., V, 3) vertex positions (any leading dims if ``batched`` else exactly (V, 3)).
        faces: (F, 3) int64/int32 vertex indices, counter-clockwise = outward.
        where: name of the calling op, used in the error message.
        batched: allow leading batch dims on ``verts``.

    Raises:
        ValueError: naming the op and what is wrong.
    """
    if not torch.is_tensor(verts) or not torch.is_tensor(faces):
        raise ValueError(f"{where}: verts and faces must be torch tensors, got {type(verts)}, {type(faces)}")
    if verts.ndim < 2 or verts.shape[-1] != 3 or (not batched and verts.ndim != 2):
        want = "(..., V, 3)" if batched else "(V, 3)"
        raise ValueError(f"{where}: verts must have shape {want}, got {tuple(verts.shape)}")
    if not verts.is_floating_point():
        raise ValueError(f"{where}: verts must be floating point, got {verts.dtype}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"{where}: faces must have shape (F, 3), got {tuple(faces.shape)}")
    if faces.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{where}: faces must be int64 or int32, got {faces.dtype}")
    if faces.shape[0] == 0:
        raise ValueError(f"{where}: faces is empty (F = 0)")
    if faces.device != verts.device:
        raise ValueError(f"{where}: verts on {verts.device} but faces on {faces.device}; move both to one device")
    fmin, fmax = int(faces.min()), int(faces.max())
    if fmin < 0 or fmax >= verts.shape[-2]:
        raise ValueError(
            f"{where}: face indices must lie in [0, {verts.shape[-2] - 1}] (V = {verts.shape[-2]}), "
            f"got range [{fmin}, {fmax}]"
        )


def face_normals(verts: torch.Tensor, faces: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
    """Per-face normals ``(v1 - v0) x (v2 - v0)``.

    Args:
        verts: (..., V, 3) vertex positions.
        faces: (F, 3) long vertex indices (counter-clockwise seen from outside).
        normalize: return unit normals if True, else area-weighted normals (length = 2 * area).

    Returns:
        (..., F, 3) face normals, same frame as ``verts``.
    """
    check_mesh(verts, faces, where="face_normals")
    faces = faces.long()
    if verts.ndim == 2 or not verts.requires_grad:
        # ~2x faster than verts[..., f, :] forward and backward for (V, 3), and without a gradient
        v0, v1, v2 = (verts.index_select(-2, faces[:, i]) for i in range(3))
    else:  # batched with a gradient: index_select's backward is ~1.4x slower there (8 x 54,848 verts)
        v0, v1, v2 = (verts[..., faces[:, i], :] for i in range(3))
    n = torch.cross(v1 - v0, v2 - v0, dim=-1)
    if normalize:
        n = n / n.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return n


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals (sum of adjacent un-normalised face normals, normalised).

    Differentiable w.r.t. ``verts``. Vertices referenced by no face (or only by degenerate faces)
    get a zero normal.

    Args:
        verts: (..., V, 3) vertex positions (any leading batch dims, e.g. (B, V, 3)).
        faces: (F, 3) long vertex indices shared by the whole batch.

    Returns:
        (..., V, 3) unit vertex normals, same frame as ``verts``.
    """
    fn = face_normals(verts, faces, normalize=False)  # (..., F, 3), |fn| = 2 area
    faces = faces.long()
    lead = verts.shape[:-2]
    V, F = verts.shape[-2], faces.shape[0]
    fn = fn.reshape(-1, F, 3)
    out = torch.zeros(fn.shape[0], V, 3, device=verts.device, dtype=verts.dtype)
    idx = faces.reshape(-1)[None, :, None].expand(fn.shape[0], 3 * F, 3)
    out = out.scatter_add(1, idx, fn.repeat_interleave(3, dim=1))
    out = out / out.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return out.reshape(*lead, V, 3)
