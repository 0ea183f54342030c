"""UV atlases and textures: unwrap a mesh (xatlas), sample a texture, find each texel's surface point,
fill the texels no view saw.

Conventions: ``uv`` in [0, 1]; ``u`` along image columns, ``v`` along image rows from the TOP (glTF's
convention, and an image array's): texel ``(row i, column j)`` of an R x R texture covers
``u in [j/R, (j+1)/R]``, ``v in [i/R, (i+1)/R]``; its centre is ``((j + 0.5)/R, (i + 0.5)/R)``. OBJ's
``vt`` counts ``v`` from the bottom (``1 - v``), as :func:`write_textured_obj` writes.

A textured mesh keeps its vertices (skinning, normals, offsets live there) and carries per-corner
texture coordinates ``face_uvs`` (F, 3, 2) (:class:`UVTexture`): a seam is where two faces give one vertex
different uvs. Formats that need one uv per vertex (glTF) split the seam vertices: :class:`UVAtlas`
holds that split (``vmap``: new vertex -> mesh vertex).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["UVAtlas", "UVTexture", "uv_atlas", "atlas_from_face_uvs", "sample_texture", "texel_surface", "push_pull_fill",
           "write_textured_obj"]


@dataclass(frozen=True)
class UVAtlas:
    """A mesh's UV unwrap with seam vertices split.

    Attributes:
        vmap: (V2,) int64 mesh vertex of each atlas vertex.
        faces: (F, 3) int64 faces over the atlas vertices (the mesh's faces, same order).
        uvs: (V2, 2) float32 texture coordinates in [0, 1] (v from the top).
    """

    vmap: torch.Tensor
    faces: torch.Tensor
    uvs: torch.Tensor

    @property
    def face_uvs(self) -> torch.Tensor:
        """(F, 3, 2) uv of each face corner."""
        return self.uvs[self.faces]


@dataclass(frozen=True)
class UVTexture:
    """A texture for a mesh: per-corner uvs and the image.

    Attributes:
        face_uvs: (F, 3, 2) float32 uv of each face corner (v from the top).
        image: (R, R, 3) uint8 RGB (or float in [0, 1]).
    """

    face_uvs: torch.Tensor
    image: torch.Tensor


def uv_atlas(verts: torch.Tensor | np.ndarray, faces: torch.Tensor | np.ndarray, resolution: int = 1024,
             padding: int = 4) -> UVAtlas:
    """Unwrap a mesh with xatlas into charts packed for an R x R texture.

    Args:
        verts: (V, 3) metres; faces: (F, 3) int.  resolution: texture side the packing is for;
        padding: texels between charts (keeps bilinear sampling and mip-maps from bleeding across charts).
    """
    import xatlas

    v = np.ascontiguousarray(np.asarray(verts, np.float32))
    f = np.ascontiguousarray(np.asarray(faces, np.uint32))
    atlas = xatlas.Atlas()
    atlas.add_mesh(v, f)
    pack = xatlas.PackOptions()
    pack.resolution = int(resolution)
    pack.padding = int(padding)
    pack.bilinear = True
    atlas.generate(pack_options=pack)
    vmap, idx, uvs = atlas[0]
    uvs = np.asarray(uvs, np.float32).copy()
    uvs[:, 1] = 1.0 - uvs[:, 1]  # xatlas: v up; here (and glTF): v from the top
    return UVAtlas(torch.from_numpy(np.asarray(vmap, np.int64)), torch.from_numpy(np.asarray(idx, np.int64)),
                   torch.from_numpy(uvs))


def atlas_from_face_uvs(faces: torch.Tensor, face_uvs: torch.Tensor) -> UVAtlas:
    """The seam-split :class:`UVAtlas` of a mesh with per-corner uvs (one atlas vertex per distinct
    (vertex, uv) pair; uvs equal to 1e-6 count as one)."""
    f = faces.reshape(-1).long()
    uv = face_uvs.reshape(-1, 2).float()
    q = torch.round(uv * 1e6).long()
    key = torch.stack([f, q[:, 0], q[:, 1]], 1)
    uniq, inv = key.unique(dim=0, return_inverse=True)
    first = torch.full((len(uniq),), len(f), dtype=torch.long).scatter_reduce(0, inv, torch.arange(len(f)), "amin")
    return UVAtlas(uniq[:, 0].clone(), inv.reshape(-1, 3), uv[first].clone())


def sample_texture(image: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear texture lookup (edge clamped).

    Args:
        image: (R, R', C) float texture; uv: (K, 2) coordinates (v from the top).
    Returns:
        (K, C) values, differentiable w.r.t. ``image`` (and ``uv``).
    """
    Rh, Rw = image.shape[:2]
    x = (uv[:, 0] * Rw - 0.5).clamp(0, Rw - 1)
    y = (uv[:, 1] * Rh - 0.5).clamp(0, Rh - 1)
    x0, y0 = x.floor().long().clamp(max=Rw - 2 if Rw > 1 else 0), y.floor().long().clamp(max=Rh - 2 if Rh > 1 else 0)
    x1, y1 = (x0 + 1).clamp(max=Rw - 1), (y0 + 1).clamp(max=Rh - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bot = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bot * fy


def texel_surface(face_uvs: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Which face (and where on it) each texel centre lies on: the flat UV layout, ray cast orthographically.

    Args:
        face_uvs: (F, 3, 2) uv per face corner; resolution: texture side R.
    Returns:
        face_idx: (R, R) long (-1: texel outside every chart); bary: (R, R, 3) float32 barycentrics.
    """
    from foundation.camera import Camera
    from foundation.geometry.raycast import raycast

    F = face_uvs.shape[0]
    flat = torch.cat([face_uvs.reshape(-1, 2).float(), torch.zeros(F * 3, 1)], 1)
    faces = torch.arange(F * 3).reshape(F, 3)
    cam = Camera(width=resolution, height=resolution, fx=float(resolution), fy=float(resolution), cx=0.0, cy=0.0,
                 t=(0.0, 0.0, 1.0), ortho=True)
    # charts may face either way in the plane: cast from both sides and keep any hit
    hits = raycast(flat, faces, cam)
    flipped = raycast(flat, faces[:, [0, 2, 1]], cam)
    fi = torch.where(hits.mask, hits.face_idx, flipped.face_idx)
    bary = torch.where(hits.mask[..., None], hits.bary, flipped.bary[..., [0, 2, 1]])
    fi = torch.where(hits.mask | flipped.mask, fi, torch.full_like(fi, -1))
    return fi, bary.float()


def push_pull_fill(image: np.ndarray, weight: np.ndarray, levels: int | None = None) -> np.ndarray:
    """Fill texels of zero weight from their neighbours (push-pull: a weighted mip pyramid, coarse to fine).

    Args:
        image: (R, R, C) float values, meaningful where ``weight > 0``; weight: (R, R) >= 0.
    Returns:
        (R, R, C) float: ``image`` where ``weight > 0``, smooth interpolation of it elsewhere.
    """
    import cv2

    img = np.asarray(image, np.float32) * weight[..., None]
    w = np.asarray(weight, np.float32).copy()
    pyr = [(img, w)]
    levels = levels or int(np.log2(max(img.shape[:2])))
    for _ in range(levels):
        i, ww = pyr[-1]
        if min(ww.shape) < 2:
            break
        h2, w2 = ww.shape[0] // 2, ww.shape[1] // 2
        i2 = i[: 2 * h2, : 2 * w2].reshape(h2, 2, w2, 2, -1).sum((1, 3))
        ww2 = ww[: 2 * h2, : 2 * w2].reshape(h2, 2, w2, 2).sum((1, 3))
        pyr.append((i2, ww2))
    fill = None
    for i, ww in reversed(pyr):
        mean = i / np.maximum(ww, 1e-12)[..., None]
        if fill is not None:
            up = cv2.resize(fill, (ww.shape[1], ww.shape[0]), interpolation=cv2.INTER_LINEAR)
            up = up.reshape(mean.shape)
            a = np.clip(ww, 0, 1)[..., None]
            mean = a * mean + (1 - a) * up
        fill = mean
    out = np.where((weight > 0)[..., None], np.asarray(image, np.float32), fill)
    return out


def write_textured_obj(path: str | Path, verts, faces, face_uvs, image: np.ndarray, normals=None) -> Path:
    """OBJ + MTL + PNG: ``path`` (.obj), ``<stem>.mtl`` and ``<stem>_albedo.png`` beside it.

    Args:
        verts: (V, 3); faces: (F, 3); face_uvs: (F, 3, 2) (v from the top; written as OBJ's ``1 - v``);
        image: (R, R, 3) uint8 RGB; normals: (V, 3) or None.
    """
    import cv2

    from foundation.io.atomic import atomic_path

    path = Path(path)
    v = np.asarray(verts, np.float64)
    f = np.asarray(faces, np.int64)
    fu = np.asarray(face_uvs, np.float64).reshape(-1, 2)
    png, mtl = path.with_name(f"{path.stem}_albedo.png"), path.with_suffix(".mtl")
    with atomic_path(png) as tmp:
        cv2.imwrite(str(tmp), cv2.cvtColor(np.ascontiguousarray(image, np.uint8), cv2.COLOR_RGB2BGR))
    with atomic_path(mtl) as tmp:
        tmp.write_text(f"newmtl avatar\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nillum 1\nmap_Kd {png.name}\n")
    lines = [f"mtllib {mtl.name}", "usemtl avatar"]
    lines += [f"v {a:.6f} {b:.6f} {c:.6f}" for a, b, c in v]
    lines += [f"vt {a:.6f} {1.0 - b:.6f}" for a, b in fu]
    if normals is not None:
        lines += [f"vn {a:.5f} {b:.5f} {c:.5f}" for a, b, c in np.asarray(normals, np.float64)]
        lines += [f"f {a + 1}/{3 * k + 1}/{a + 1} {b + 1}/{3 * k + 2}/{b + 1} {c + 1}/{3 * k + 3}/{c + 1}"
                  for k, (a, b, c) in enumerate(f)]
    else:
        lines += [f"f {a + 1}/{3 * k + 1} {b + 1}/{3 * k + 2} {c + 1}/{3 * k + 3}" for k, (a, b, c) in enumerate(f)]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path
