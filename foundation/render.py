"""The project's renderer: meshes ray cast (``foundation.geometry.raycast``) and shaded per pixel.

One shading model for every picture the project makes (W&B images, held-out image metrics, the
animation video, the tracking overlay, the synthetic training renders):

* :func:`render_mesh` ray casts a mesh and shades it into a uint8 image: ``shading`` is
  ``"lambert"`` (colour x light), ``"flat"`` (colours only) or ``"normals"`` (world normals as
  RGB), with options for the light (a world direction or a headlight at the camera), ambient,
  fill and specular terms, faceted or smooth normals, the background and supersampling.
* :func:`shade_hits` is the shading step alone, for callers that keep the :class:`RayHits`
  (shade the same hits twice, or need the float light intensity).
* :func:`normals_to_rgb` maps normal maps to colours with the same ``(n + 1) / 2`` rule.

Frames: world = metres, +Y up; cameras follow :mod:`foundation.camera` (OpenCV: x right, y down,
z forward); the view frame of normal maps is x right, y up, z towards the viewer. Pixel ``(i, j)``
of an image is the ray through its centre; outputs are row-major ``(H, W, ...)``.

Nothing here is differentiable (see :mod:`foundation.geometry.diff_render`).
"""

from __future__ import annotations

import numpy as np
import torch

from foundation.camera import Camera
from foundation.geometry.normals import face_normals, vertex_normals
from foundation.geometry.raycast import RayHits, raycast
from foundation.texture import UVTexture, sample_texture

__all__ = ["SHADINGS", "LIGHT_DIR", "HEADLIGHT", "render_mesh", "side_view", "render_hits", "shade_hits", "normals_to_rgb",
           "front_camera"]

SHADINGS = ("lambert", "flat", "normals")
LIGHT_DIR = torch.tensor([0.3, 0.5, 1.0])  # world-frame direction towards the light (front, above)
HEADLIGHT = "headlight"  # ``light=HEADLIGHT``: the light sits at the camera
GREY = 180  # uint8 albedo of meshes rendered without colours


def _check_shading(shading: str, where: str) -> None:
    if shading not in SHADINGS:
        raise ValueError(f"{where}: shading must be one of {SHADINGS}, got {shading!r}")


def render_hits(verts: torch.Tensor, faces: torch.Tensor, camera: Camera, *, back: bool = False,
                ssaa: int = 1) -> RayHits:
    """Hits of the camera's pixel rays, ``ssaa`` x ``ssaa`` rays per pixel.

    Args:
        verts: (V, 3) world metres; faces: (F, 3) vertex indices; camera: the view (H x W).
        back: the LAST hit along each ray instead of the first.
        ssaa: supersampling factor: the rays of ``camera`` resized to (H * ssaa, W * ssaa).

    Returns:
        :class:`RayHits` with (H * ssaa, W * ssaa) fields.
    """
    cam = camera.resized(camera.width * ssaa, camera.height * ssaa) if ssaa > 1 else camera
    return raycast(verts, faces.long(), cam, back=back)


def _interp(values: torch.Tensor, faces: torch.Tensor, hits: RayHits) -> torch.Tensor:
    """(K, C) barycentric interpolation of per-vertex ``values`` (V, C) at the K hit pixels (row-major)."""
    fi = hits.face_idx[hits.mask]
    return (values[faces[fi]] * hits.bary[hits.mask][..., None]).sum(1)


def _albedo(colors, faces: torch.Tensor, hits: RayHits, device) -> torch.Tensor:
    """(K, 3) colours at the hits: per-vertex colours interpolated, or a :class:`UVTexture` sampled."""
    if isinstance(colors, UVTexture):
        fi = hits.face_idx[hits.mask]
        uv = (colors.face_uvs.to(device)[fi] * hits.bary[hits.mask][..., None]).sum(1)
        return sample_texture(torch.as_tensor(colors.image).to(device).float(), uv)
    return _interp(torch.as_tensor(colors).to(device).float(), faces, hits)


def _normal_colors(n):
    """``(n + 1) / 2``: unit normals (..., 3) in [-1, 1] -> colours in [0, 1] (torch or numpy)."""
    return n * 0.5 + 0.5


def _cosines(n: torch.Tensor, light, camera: Camera | None, fill: bool):
    """Cosines between unit normals (N, 3) (world) and the light; with ``fill`` also with the opposite light.

    A headlight is the camera's view direction reversed (view-frame +Z, the same for every pixel).
    """
    if isinstance(light, str):
        if light != HEADLIGHT:
            raise ValueError(f"light must be a (3,) world direction or {HEADLIGHT!r}, got {light!r}")
        if camera is None:
            raise ValueError(f"light={HEADLIGHT!r} needs the camera the hits were cast from")
        d = (n @ camera.view_rotation(n.device, n.dtype).T)[:, 2]
        return d, (-d if fill else None)
    light = torch.as_tensor(light, dtype=n.dtype, device=n.device)
    l = light / light.norm()  # noqa: E741
    return n @ l, (n @ -l if fill else None)


@torch.no_grad()
def shade_hits(verts: torch.Tensor, faces: torch.Tensor, hits: RayHits, colors: torch.Tensor | None = None, *,
               shading: str = "lambert", light=LIGHT_DIR, camera: Camera | None = None, ambient: float = 0.35,
               fill: float = 0.0, specular: float = 0.0, two_sided: bool = False, smooth: bool = True,
               white: float = 1.0) -> torch.Tensor:
    """Shaded colours at the hit pixels of ``hits``.

    Lambert: ``colour * (ambient + (1 - ambient) * max(0, n.l) + fill * max(0, -n.l))
    + specular * white * max(0, n.l)^16``, with ``n`` the unit normal at the hit (world) and ``l``
    the unit direction towards the light.

    Args:
        verts: (V, 3) world metres; faces: (F, 3) vertex indices; hits: their ray-cast hits
            (:func:`render_hits`), (H, W) fields.
        colors: (V, C) per-vertex colours, interpolated at the hits; the result is in their units
            (uint8 gives floats in [0, 255]). None: ``white`` everywhere, not interpolated (so with
            ``white=1`` the result is the light intensity itself).
        shading: ``"lambert"``, ``"flat"`` (the colours, no light) or ``"normals"`` (world
            normals as ``(n + 1) / 2 * white``; ``colors`` unused).
        light: (3,) world direction towards the light, or :data:`HEADLIGHT` (a light at the
            camera, i.e. the view direction reversed; needs ``camera``).
        camera: the view ``hits`` were cast from (only for the headlight).
        ambient: intensity where the light does not reach; the lit side goes up to 1.
        fill: intensity of a second light opposite ``light`` (keeps the shadowed side readable).
        specular: height of a white highlight, in units of ``white``.
        two_sided: ``|n.l|`` instead of ``max(0, n.l)`` (faces lit from either side; no fill).
        smooth: interpolated vertex normals (area-weighted) if True, else per-face normals
            (faceted look; the Lambert term is computed once per face).
        white: value of a full channel in the output (1 or 255).

    Returns:
        (K, 3) float32 (or (K, C) for C-channel colours) colours of the K hit pixels in row-major
        order (``hits.mask``'s True entries); not clamped.
    """
    _check_shading(shading, "shade_hits")
    if two_sided and fill > 0:
        raise ValueError("shade_hits: a fill light opposite the light makes no sense with two_sided=True")
    verts = verts.float()
    faces = faces.long()
    if smooth:
        n = _interp(vertex_normals(verts, faces), faces, hits)
        n = n / n.norm(dim=-1, keepdim=True).clamp(min=1e-9)
    else:
        fn = face_normals(verts, faces)  # (F, 3) unit
        fi = hits.face_idx[hits.mask]
    if shading == "normals":
        return _normal_colors(n if smooth else fn[fi]) * white
    K = int(hits.mask.sum())
    if colors is None:
        albedo = torch.full((K, 3), white, device=verts.device)
    else:
        albedo = _albedo(colors, faces, hits, verts.device)
    if shading == "flat":
        return albedo
    if smooth:
        cos, cos_fill = _cosines(n, light, camera, fill > 0)
    else:  # per face, then gathered at the hits
        cos, cos_fill = _cosines(fn, light, camera, fill > 0)
        cos, cos_fill = cos[fi], (cos_fill[fi] if cos_fill is not None else None)
    lam = cos.abs() if two_sided else cos.clamp(min=0)
    term = ambient + (1 - ambient) * lam
    if fill > 0:
        term = term + cos_fill.clamp(min=0) * fill
    col = albedo * term[:, None]
    if specular > 0:
        col = col + (specular * white) * lam[:, None] ** 16
    return col


def _background(background, white: float) -> np.ndarray:
    """``background`` in the working units: (3,) or (H, W, 3) float array."""
    bg = np.asarray(background)
    if bg.ndim == 1 or bg.dtype == np.uint8 or not np.issubdtype(bg.dtype, np.floating):  # [0, 255]
        bg = bg.astype(np.float32)
        return bg if white == 255.0 else bg / 255.0
    return bg if white == 1.0 else bg * 255.0  # float image in [0, 1]


@torch.no_grad()
def render_mesh(verts: torch.Tensor, faces: torch.Tensor, camera: Camera, colors=None, shading: str = "lambert",
                background=(255, 255, 255), *, light=LIGHT_DIR, ambient: float = 0.35, fill: float = 0.0,
                specular: float = 0.0, two_sided: bool = False, smooth: bool = True, ssaa: int = 1
                ) -> tuple[np.ndarray, np.ndarray]:
    """Ray cast and shade one mesh (see :func:`shade_hits` for the shading options).

    Args:
        verts: (V, 3) world metres; faces: (F, 3) long (counter-clockwise seen from outside).
        camera: the view (its H x W is the output size).
        colors: (V, 3) per-vertex colours: uint8 (shaded as floats in [0, 255]) or float in
            [0, 1] (shaded in [0, 1]; the same image up to float rounding); torch or numpy; or a
            :class:`foundation.texture.UVTexture` (bilinear texture lookups). None: grey (uint8 180).
        shading: ``"lambert"``, ``"flat"`` (colours only, for image metrics against the input
            frames) or ``"normals"`` (world normals as RGB ``(n + 1) / 2``).
        background: what pixels show where the mesh does not cover them: an RGB triple in
            [0, 255], or an (H, W, 3) image, uint8 or float in [0, 1].
        light, ambient, fill, specular, two_sided, smooth: as :func:`shade_hits`; the defaults
            give ``colour * (0.35 + 0.65 max(0, n.l))`` with :data:`LIGHT_DIR`.
        ssaa: supersampling: ``ssaa`` x ``ssaa`` rays per pixel, colours clamped and averaged
            with the coverage (premultiplied), then composited over ``background``.

    Returns:
        image (H, W, 3) uint8; coverage: (H, W) bool mask of the pixels whose ray hits the mesh
        (``ssaa=1``), else (H, W) float32 fraction of each pixel's rays that hit it.
    """
    _check_shading(shading, "render_mesh")
    if colors is None:
        colors = torch.full((verts.shape[-2], 3), GREY, dtype=torch.uint8)
    if not isinstance(colors, UVTexture):
        colors = torch.as_tensor(colors)
    white = 1.0 if torch.as_tensor(colors.image if isinstance(colors, UVTexture) else colors).is_floating_point() \
        else 255.0
    verts = verts.float()
    faces = faces.long()
    hits = render_hits(verts, faces, camera, ssaa=ssaa)
    H, W = camera.height, camera.width
    col = torch.zeros(H * ssaa, W * ssaa, 3, device=hits.mask.device)
    if bool(hits.mask.any()):
        col[hits.mask] = shade_hits(verts, faces, hits, colors, shading=shading, light=light, camera=camera,
                                    ambient=ambient, fill=fill, specular=specular, two_sided=two_sided,
                                    smooth=smooth, white=white).clamp(0, white)
    a = hits.mask.float()
    if ssaa > 1:
        col = col.reshape(H, ssaa, W, ssaa, 3).mean((1, 3))
        a = a.reshape(H, ssaa, W, ssaa).mean((1, 3))
    a = a.cpu().numpy()
    # col is premultiplied by coverage (misses are black)
    out = col.cpu().numpy() + _background(background, white) * (1 - a[..., None])
    image = (out.clip(0, white) * (255 / white)).round().astype(np.uint8)
    return image, (hits.mask.cpu().numpy().astype(bool) if ssaa == 1 else a)


def normals_to_rgb(n: np.ndarray, background: int = 0) -> np.ndarray:
    """Normal map colours: (H, W, 3) unit normals (zero = no hit; e.g. the view-frame maps of
    :func:`foundation.geometry.raycast.render_normal_maps`) -> (H, W, 3) uint8 ``(n + 1) / 2``,
    ``background`` where there is no hit."""
    hit = np.abs(n).sum(-1) > 0
    out = np.full(n.shape, background, np.uint8)
    out[hit] = (_normal_colors(n[hit]) * 255).round().clip(0, 255).astype(np.uint8)
    return out


def front_camera(points: np.ndarray, size: int = 512, fov_deg: float = 30.0, margin: float = 1.15) -> Camera:
    """Camera on +Z looking at the centre of ``points`` (N, 3) (world), framing all of them."""
    p = np.asarray(points, np.float64).reshape(-1, 3)
    lo, hi = p.min(0), p.max(0)
    c = 0.5 * (lo + hi)
    half = 0.5 * max(hi[1] - lo[1], hi[0] - lo[0]) * margin
    dist = half / np.tan(np.radians(fov_deg) / 2) + (hi[2] - c[2])
    return Camera.look_at(c + np.array([0.0, 0.0, dist]), c, width=size, height=size, fov_deg=fov_deg)


def side_view(verts, faces, camera: Camera, size: int, shading: str = "normals") -> np.ndarray:
    """(size, size, 3) uint8 render of a mesh from the side of ``camera``: orthographic, looking along the
    camera's x axis (from its right), the camera's up kept, framed on the mesh: the depth the view cannot show.

    Args:
        verts: (V, 3) world; faces: (F, 3); camera: the view whose side is wanted.
    """
    v = torch.as_tensor(np.asarray(verts), dtype=torch.float32)
    R = np.asarray(camera.R, np.float64)  # rows: camera x (right), y (down), z (forward) in world
    centre = 0.5 * (v.min(0).values.numpy() + v.max(0).values.numpy())
    extent = 2.3 * float(np.abs((v.numpy() - centre) @ R[1:].T).max())  # what the side sees: camera y and z
    cam = Camera.look_at(centre + 3.0 * R[0], centre, up=-R[1], width=size, height=size, ortho_scale=extent)
    return render_mesh(v, torch.as_tensor(np.asarray(faces), dtype=torch.long), cam, shading=shading)[0]
