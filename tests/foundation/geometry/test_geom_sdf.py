"""Signed distance (Warp vs brute-force torch reference), sign, gradients; vertex normals."""

import pytest
import torch
import trimesh

from foundation.geometry.normals import face_normals, vertex_normals
from foundation.geometry.sdf import closest_point_on_triangle, signed_distance, winding_number


def _mesh(m: trimesh.Trimesh, dtype=torch.float32):
    return torch.tensor(m.vertices, dtype=dtype), torch.tensor(m.faces, dtype=torch.long)


def _sphere(sub=2, r=0.5, dtype=torch.float32):
    return _mesh(trimesh.creation.icosphere(subdivisions=sub, radius=r), dtype)


def _torus():
    return _mesh(trimesh.creation.torus(0.5, 0.2, major_sections=24, minor_sections=12))


def _box():
    return _mesh(trimesh.creation.box(extents=(0.6, 0.4, 0.8)))


@pytest.mark.parametrize("make", [_sphere, _torus, _box], ids=["sphere", "torus", "box"])
def test_warp_matches_torch_reference(make):
    verts, faces = make()
    g = torch.Generator().manual_seed(0)
    points = torch.rand(800, 3, generator=g) * 1.8 - 0.9
    a = signed_distance(points, verts, faces, backend="warp")
    b = signed_distance(points, verts, faces, backend="torch")
    assert a.sdf.shape == (800,) and a.closest.shape == (800, 3) and a.face_idx.dtype == torch.long
    assert a.sdf.dtype == torch.float32
    assert (a.sdf - b.sdf).abs().max() < 1e-4
    # the closest point is unique almost everywhere; distances to it agree with the sdf
    assert torch.allclose((points - a.closest).norm(dim=-1), a.sdf.abs(), atol=1e-5)
    assert torch.allclose(a.bary.sum(-1), torch.ones(800), atol=1e-5)
    assert torch.allclose(a.normal.norm(dim=-1), torch.ones(800), atol=1e-5)
    same = (a.closest - b.closest).norm(dim=-1) < 1e-4
    assert same.float().mean() > 0.95
    assert (a.normal - b.normal)[same].abs().max() < 1e-3


def test_sign_inside_sphere_and_value():
    verts, faces = _sphere(sub=3)
    g = torch.Generator().manual_seed(1)
    d = torch.nn.functional.normalize(torch.randn(500, 3, generator=g), dim=-1)
    radius = torch.rand(500, 1, generator=g) * 1.0
    points = d * radius
    out = signed_distance(points, verts, faces)
    inside = radius[:, 0] < 0.48
    outside = radius[:, 0] > 0.5
    assert (out.sdf[inside] < 0).all() and (out.sdf[outside] > 0).all()
    assert torch.allclose(out.sdf, radius[:, 0] - 0.5, atol=0.01)  # polyhedral approximation of the sphere
    # body normal of a sphere is radial
    cos = (out.normal * d).sum(-1)
    assert (cos[radius[:, 0] > 0.25] > 0.99).all()


def test_sign_robust_to_holes():
    verts, faces = _sphere(sub=2)
    faces = faces[3:]  # punch a hole: not watertight any more
    points = torch.tensor([[0.0, 0.0, 0.0], [0.1, -0.2, 0.05], [0.0, 0.0, 0.9], [0.7, 0.0, 0.0]])
    for backend in ("warp", "torch"):
        out = signed_distance(points, verts, faces, backend=backend)
        assert (out.sdf[:2] < 0).all() and (out.sdf[2:] > 0).all(), backend
    w = winding_number(points, verts, faces)
    assert 0.8 < w[0] < 1.0 and abs(float(w[3])) < 0.1


def test_torus_winding_number():
    verts, faces = _torus()
    p = torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.5]])
    w = winding_number(p, verts, faces)
    assert torch.allclose(w, torch.tensor([1.0, 0.0, 1.0, 0.0]), atol=1e-4)
    out = signed_distance(p, verts, faces)
    assert out.sdf[0] < 0 and out.sdf[1] > 0 and out.sdf[2] < 0 and out.sdf[3] > 0


def test_gradient_wrt_points_is_closest_direction_and_matches_fd():
    verts, faces = _torus()
    g = torch.Generator().manual_seed(2)
    points = (torch.rand(200, 3, generator=g) * 1.6 - 0.8).requires_grad_(True)
    out = signed_distance(points, verts, faces)
    (grad,) = torch.autograd.grad(out.sdf.sum(), points)
    expected = (points - out.closest).detach()
    expected = expected / expected.norm(dim=-1, keepdim=True) * torch.sign(out.sdf.detach())[:, None]
    assert torch.allclose(grad, expected, atol=1e-5)
    assert torch.allclose(grad.norm(dim=-1), torch.ones(200), atol=1e-5)
    # central finite differences (float32, eps = 1e-3 m), away from the medial axis
    eps = 1e-3
    p = points.detach()
    def sdf(x):
        return signed_distance(x, verts, faces).sdf

    fd = torch.stack([(sdf(p + eps * e) - sdf(p - eps * e)) / (2 * eps) for e in torch.eye(3)], -1)
    ok = (fd - grad).norm(dim=-1) < 1e-2
    assert ok.float().mean() > 0.95


def test_gradient_wrt_verts():
    verts, faces = _sphere(sub=1, dtype=torch.float64)
    points = torch.tensor([[0.1, 0.7, 0.2], [0.05, -0.1, 0.1], [0.3, 0.3, -0.5]], dtype=torch.float64)
    v = verts.clone().requires_grad_(True)
    p = points.clone().requires_grad_(True)
    for backend in ("warp", "torch"):
        out = signed_distance(p, v, faces, backend=backend)
        gv, gp = torch.autograd.grad(out.sdf.sum(), (v, p))
        # translating the mesh by delta == translating the points by -delta
        assert torch.allclose(gv.sum(0), -gp.sum(0), atol=1e-9)
        # finite differences on the vertices of the closest face of point 0
        f0 = faces[out.face_idx[0]]
        for vi in f0.tolist():
            for k in range(3):
                e = torch.zeros_like(verts)
                e[vi, k] = 1e-6
                fd = (
                    signed_distance(points[:1], verts + e, faces, backend="torch").sdf
                    - signed_distance(points[:1], verts - e, faces, backend="torch").sdf
                ) / 2e-6
                g0 = torch.autograd.grad(signed_distance(p[:1], v, faces, backend=backend).sdf.sum(), v)[0]
                assert abs(float(fd) - float(g0[vi, k])) < 1e-6


def test_chunking_and_empty():
    verts, faces = _sphere()
    points = torch.rand(1000, 3) - 0.5
    a = signed_distance(points, verts, faces)
    b = signed_distance(points, verts, faces, chunk_size=137)
    assert torch.equal(a.face_idx, b.face_idx) and torch.allclose(a.sdf, b.sdf)
    e = signed_distance(torch.zeros(0, 3), verts, faces)
    assert e.sdf.shape == (0,) and e.closest.shape == (0, 3)


def test_bad_inputs():
    verts, faces = _sphere()
    with pytest.raises(ValueError, match="backend"):
        signed_distance(torch.zeros(3, 3), verts, faces, backend="cuda")
    with pytest.raises(ValueError, match="points"):
        signed_distance(torch.zeros(3, 2), verts, faces)
    with pytest.raises(ValueError, match="faces"):
        signed_distance(torch.zeros(3, 3), verts, faces.float())
    with pytest.raises(ValueError, match="indices"):
        signed_distance(torch.zeros(3, 3), verts, faces + 1000)
    with pytest.raises(ValueError, match="verts"):
        signed_distance(torch.zeros(3, 3), verts[None], faces)


def test_closest_point_on_triangle_regions():
    a, b, c = torch.tensor([0.0, 0, 0]), torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0])
    p = torch.tensor(
        [[-1.0, -1, 0.3], [2.0, -0.5, 0], [-0.5, 2, 0], [0.5, -1, 0], [-1, 0.5, 0], [1, 1, 0], [0.2, 0.2, 1]]
    )
    bary = closest_point_on_triangle(p, a, b, c)
    expected = torch.tensor(
        [[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5], [0.6, 0.2, 0.2]]
    )
    assert torch.allclose(bary, expected, atol=1e-6)


def test_vertex_normals_batched_and_area_weighted():
    verts, faces = _sphere(sub=2)
    n = vertex_normals(verts, faces)
    assert torch.allclose(n, torch.nn.functional.normalize(verts, dim=-1), atol=0.05)
    batch = torch.stack([verts, 2 * verts + 1])
    nb = vertex_normals(batch, faces)
    assert nb.shape == (2, *verts.shape) and torch.allclose(nb[1], n, atol=1e-5)
    # area weighting: a vertex shared by a big and a tiny face leans to the big one
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [-0.01, 0, 0], [0, 0, 0.01]])
    f = torch.tensor([[0, 1, 2], [0, 3, 4]])
    fn = face_normals(v, f)
    n0 = vertex_normals(v, f)[0]
    assert (n0 * fn[0]).sum() > 0.999
    with pytest.raises(ValueError):
        vertex_normals(v, f.float())
