"""Differentiable normal rendering and soft silhouettes: values, finite differences, optimisation."""

import pytest
import torch
import trimesh

from foundation.camera import Camera
from foundation.geometry.diff_render import (contour_edges, edge_topology, render_attributes_diff, render_normals_diff,
                                            soft_silhouette)
from foundation.geometry.raycast import raycast, render_normal_maps


def _sphere(sub=2, r=0.5, dtype=torch.float32):
    m = trimesh.creation.icosphere(subdivisions=sub, radius=r)
    return torch.tensor(m.vertices, dtype=dtype), torch.tensor(m.faces, dtype=torch.long)


PERSP = Camera.look_at((0.0, 0.0, 3.0), (0, 0, 0), width=48, height=48, fov_deg=30.0)
ORTHO = Camera.look_at((0.0, 0.0, 3.0), (0, 0, 0), width=48, height=48, ortho_scale=1.5)


@pytest.mark.parametrize("cam", [PERSP, ORTHO], ids=["persp", "ortho"])
@pytest.mark.parametrize("back", [False, True], ids=["front", "back"])
def test_normals_diff_matches_normal_maps(cam, back):
    verts, faces = _sphere()
    n, mask = render_normals_diff(verts, faces, cam, back=back)
    ref = render_normal_maps(verts, faces, cam)
    assert n.shape == (48, 48, 3) and mask.shape == (48, 48) and mask.dtype == torch.bool
    assert torch.equal(mask, ref.mask_back if back else ref.mask_front)
    assert (n - (ref.back if back else ref.front)).abs().max() < 1e-4


@pytest.mark.parametrize("cam", [PERSP, ORTHO], ids=["persp", "ortho"])
def test_normals_diff_gradcheck_wrt_vertex(cam):
    verts, faces = _sphere(sub=1, dtype=torch.float64)
    # a vertex facing the camera, well inside the silhouette
    vi = int(verts[:, 2].argmax())
    g = torch.Generator().manual_seed(0)
    weights = torch.randn(2, 48, 48, 3, generator=g, dtype=torch.float64)

    def f(x):
        v = torch.cat([verts[:vi], x[None], verts[vi + 1 :]])
        n, _ = render_normals_diff(v, faces, cam)
        return (n[None] * weights).sum((1, 2, 3))

    x = verts[vi].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (x,), eps=1e-5, atol=1e-4, rtol=1e-3)
    (gx,) = torch.autograd.grad(f(x).sum(), x)
    assert gx.abs().max() > 1e-2  # non-trivial


def test_edge_topology_and_contour():
    verts, faces = _sphere()
    edges, ef = edge_topology(faces)
    assert edges.shape == (faces.shape[0] * 3 // 2, 2) and (ef >= 0).all()
    assert (edges[:, 0] < edges[:, 1]).all()
    for e in (0, 17, 100):  # both adjacent faces hold the edge
        for fi in ef[e].tolist():
            assert set(edges[e].tolist()) <= set(faces[fi].tolist())
    _, ef_open = edge_topology(faces[1:])
    assert (ef_open[:, 1] < 0).sum() == 3
    ce = edges[contour_edges(verts, faces, PERSP)]
    # the contour of a sphere seen from +z lies near its rim (z ~ r^2 / D for a perspective view)
    z = verts[ce].mean(1)[:, 2]
    assert len(ce) > 10 and (z.abs() < 0.2).all()


def test_soft_silhouette_values_and_boundary():
    verts, faces = _sphere(sub=3)
    s = soft_silhouette(verts, faces, PERSP, sigma_px=1.0)
    hard = raycast(verts, faces, PERSP).mask
    assert s.shape == (48, 48) and s.dtype == torch.float32
    assert (s >= 0).all() and (s <= 1).all()
    soft = (s > 0) & (s < 1)
    assert soft.sum() > 0 and ((s > 0.5) == hard).float().mean() > 0.99
    assert s[24, 24] == 1 and s[0, 0] == 0
    # the boundary of a sphere of radius 0.5 at 3 m: ~ f * r / sqrt(D^2 - r^2) px from the centre
    f = PERSP.fy
    radius_px = f * 0.5 / (3.0**2 - 0.5**2) ** 0.5
    row = s[24]
    cross = 24 + radius_px  # expected column of the 0.5 level (pixel centres at +0.5)
    j = int(cross - 0.5)
    t = (row[j] - 0.5) / (row[j] - row[j + 1])  # linear interpolation of the 0.5 crossing
    assert abs(j + 0.5 + float(t) - cross) < 0.3


@pytest.mark.parametrize("cam", [PERSP, ORTHO], ids=["persp", "ortho"])
def test_soft_silhouette_gradient_matches_fd(cam):
    verts, faces = _sphere(sub=3)
    scale = torch.tensor(1.0, requires_grad=True)
    area = soft_silhouette(verts * scale, faces, cam, sigma_px=1.5).sum()
    (g,) = torch.autograd.grad(area, scale)
    eps = 0.01
    with torch.no_grad():
        fd = (soft_silhouette(verts * (1 + eps), faces, cam, 1.5).sum()
              - soft_silhouette(verts * (1 - eps), faces, cam, 1.5).sum()) / (2 * eps)
    assert g > 0 and abs(float(g) - float(fd)) < 0.05 * abs(float(fd))


def test_silhouette_optimisation_recovers_translation():
    verts, faces = _sphere(sub=3)
    target_t = torch.tensor([0.12, -0.08, 0.0])
    with torch.no_grad():
        target = soft_silhouette(verts + target_t, faces, PERSP, sigma_px=1.0)
    trans = torch.zeros(3, requires_grad=True)
    opt = torch.optim.Adam([trans], lr=0.01)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = (soft_silhouette(verts + trans, faces, PERSP, sigma_px=1.0) - target).abs().mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.05 * losses[0]
    assert (trans.detach()[:2] - target_t[:2]).abs().max() < 0.01


def test_mesh_outside_the_image():
    verts, faces = _sphere(sub=1)
    v = (verts + torch.tensor([10.0, 0.0, 0.0])).requires_grad_(True)
    s = soft_silhouette(v, faces, PERSP)
    n, m = render_normals_diff(v, faces, PERSP)
    assert (s == 0).all() and (n == 0).all() and not m.any()
    (s.sum() + n.sum()).backward()  # still part of the graph, with zero gradient
    assert (v.grad == 0).all()


def test_bad_inputs():
    verts, faces = _sphere(sub=1)
    with pytest.raises(ValueError, match="sigma_px"):
        soft_silhouette(verts, faces, PERSP, sigma_px=0.0)
    with pytest.raises(ValueError, match="camera"):
        render_normals_diff(verts, faces, "cam")
    with pytest.raises(ValueError, match="verts"):
        soft_silhouette(verts[None], faces, PERSP)


def test_attributes_diff_match_the_flat_render_and_carry_gradients():
    from foundation.render import render_mesh

    verts, faces = _sphere()
    colors = (verts - verts.min(0).values) / (verts.max(0).values - verts.min(0).values)  # (V, 3) in [0, 1]
    vals, mask = render_attributes_diff(verts, faces, PERSP, colors)
    img, cov = render_mesh(verts, faces, PERSP, colors, shading="flat", background=(0, 0, 0))
    assert vals.shape == (48, 48, 3) and torch.equal(mask, torch.from_numpy(cov))
    assert (vals[mask] * 255 - torch.from_numpy(img)[mask].float()).abs().max() < 1.0  # uint8 rounding
    assert float(vals[~mask].abs().max()) == 0.0
    # gradients reach the attributes and, through the barycentrics, the vertices
    c = colors.clone().requires_grad_(True)
    v = verts.clone().requires_grad_(True)
    out, _ = render_attributes_diff(v, faces, PERSP, c)
    out[..., 0].sum().backward()
    assert float(c.grad[:, 0].abs().sum()) > 0 and float(c.grad[:, 1:].abs().sum()) == 0
    assert float(v.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="attrs"):
        render_attributes_diff(verts, faces, PERSP, colors[:-1])


def _bar_before_box():
    box = trimesh.creation.box((1.0, 0.8, 0.2))
    bar = trimesh.creation.box((0.08, 1.6, 0.08))  # past the box above and below: long edges, midpoints inside
    bar.apply_translation((0.1, 0.0, 0.4))
    m = trimesh.util.concatenate([box, bar])
    return torch.tensor(m.vertices, dtype=torch.float32), torch.tensor(m.faces, dtype=torch.long)


@pytest.mark.parametrize("scene", ["sphere", "cut_by_border", "bar_before_box"])
def test_soft_silhouette_search_bound_finds_the_same_edges(monkeypatch, scene):
    """Each pixel first searches only as far as the nearest pixel of the other value, then (where the crossing
    edge was not kept: off the image, or long edges whose midpoint lies inside another surface) over the band:
    the silhouette and its gradient are those of the search over the whole band."""
    import foundation.geometry.diff_render as dr

    cam = Camera.look_at((0.4, 0.2, 3.0), (0, 0, 0), width=96, height=80, fov_deg=35.0)
    if scene == "sphere":
        verts, faces = _sphere(sub=4)
        verts = verts * torch.tensor([1.0, 1.6, 0.7]) + 0.03 * torch.sin(7 * verts)  # an uneven outline
    elif scene == "cut_by_border":
        m = trimesh.creation.box((0.9, 3.0, 0.3))
        m.apply_translation((0.0, 1.8, 0.0))  # its long side edges' midpoints lie above the image
        verts, faces = torch.tensor(m.vertices, dtype=torch.float32), torch.tensor(m.faces, dtype=torch.long)
    else:
        verts, faces = _bar_before_box()
    out = []
    for bounded in (True, False):
        if not bounded:
            monkeypatch.setattr(dr, "_opposite_distance", lambda m, pix, r: torch.full((len(pix),), 1e6))
        v = verts.clone().requires_grad_(True)
        s = soft_silhouette(v, faces, cam, sigma_px=2.5)
        (s * torch.linspace(0, 1, s.numel()).view_as(s)).sum().backward()
        out.append((s.detach(), v.grad))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])
    assert ((out[0][0] > 0) & (out[0][0] < 1)).sum() > 100


def test_opposite_distance_is_the_exact_distance_transform():
    import numpy as np
    from scipy.ndimage import distance_transform_edt

    from foundation.geometry.diff_render import _near_boundary, _opposite_distance

    verts, faces = _sphere(sub=3)
    mask = raycast(verts, faces, PERSP).mask
    pix = _near_boundary(mask, 4).reshape(-1).nonzero().squeeze(1)
    m = mask.numpy()
    ref = np.where(m, distance_transform_edt(m), distance_transform_edt(~m)).reshape(-1)[pix.numpy()]
    d = _opposite_distance(mask, pix, 4)
    assert d.shape == pix.shape and np.abs(d.numpy() - ref).max() < 1e-4 and float(d.min()) == 1.0
