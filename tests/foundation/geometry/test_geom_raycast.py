"""Ray casting (Warp vs brute-force torch reference), back hits, normal maps, batches."""

import pytest
import torch
import trimesh

from foundation.camera import Camera
from foundation.geometry.raycast import raycast, render_normal_maps


def _mesh(m: trimesh.Trimesh):
    return torch.tensor(m.vertices, dtype=torch.float32), torch.tensor(m.faces, dtype=torch.long)


def _sphere(sub=3, r=0.5):
    return _mesh(trimesh.creation.icosphere(subdivisions=sub, radius=r))


def _tilted_torus():
    m = trimesh.creation.torus(0.5, 0.2, major_sections=24, minor_sections=12)
    m.apply_transform(trimesh.transformations.rotation_matrix(0.7, [1, 0, 0]))
    return _mesh(m)


CAMERAS = {
    "persp": Camera.look_at((0.3, 0.2, 3.0), (0, 0, 0), width=64, height=48, fov_deg=40.0),
    "ortho": Camera.look_at((0.3, 0.2, 3.0), (0, 0, 0), width=64, height=48, ortho_scale=2.0),
}


@pytest.mark.parametrize("method", ["ray", "raster"])
@pytest.mark.parametrize("cam", list(CAMERAS), ids=list(CAMERAS))
@pytest.mark.parametrize("back", [False, True], ids=["front", "back"])
def test_warp_matches_torch_reference(cam, back, method):
    verts, faces = _tilted_torus()
    camera = CAMERAS[cam]
    a = raycast(verts, faces, camera, back=back, method=method)
    b = raycast(verts, faces, camera, back=back, backend="torch")
    assert a.mask.shape == (48, 64) and a.depth.shape == (48, 64) and a.bary.shape == (48, 64, 3)
    assert a.points.shape == (48, 64, 3) and a.face_idx.dtype == torch.long and a.mask.dtype == torch.bool
    assert a.mask.sum() > 300
    assert (a.mask != b.mask).sum() <= 3  # only rays grazing an edge may differ
    both = a.mask & b.mask
    assert (a.depth - b.depth)[both].abs().max() < 1e-4
    assert (a.points - b.points)[both].abs().max() < 1e-4
    assert (a.face_idx == b.face_idx)[both].float().mean() > 0.99
    # outputs are consistent with each other
    assert (a.face_idx[~a.mask] == -1).all() and (a.depth[~a.mask] == 0).all()
    assert torch.allclose(a.bary[a.mask].sum(-1), torch.ones(int(a.mask.sum())), atol=1e-5)
    fv = verts[faces[a.face_idx[a.mask]]]
    assert torch.allclose((a.bary[a.mask][..., None] * fv).sum(-2), a.points[a.mask], atol=1e-5)
    _, z = camera.project(a.points[a.mask])
    assert torch.allclose(z, a.depth[a.mask], atol=1e-5)


@pytest.mark.parametrize("cam", list(CAMERAS), ids=list(CAMERAS))
def test_back_behind_front(cam):
    verts, faces = _tilted_torus()
    front = raycast(verts, faces, CAMERAS[cam])
    back = raycast(verts, faces, CAMERAS[cam], back=True)
    assert torch.equal(front.mask, back.mask)
    m = front.mask
    assert (back.depth[m] >= front.depth[m] - 1e-6).all()
    assert (back.depth[m] > front.depth[m] + 1e-3).float().mean() > 0.95


@pytest.mark.parametrize("ortho", [False, True], ids=["persp", "ortho"])
def test_sphere_normal_maps(ortho):
    verts, faces = _sphere()
    kw = {"ortho_scale": 1.5} if ortho else {"fov_deg": 30.0}
    cam = Camera.look_at((0, 0, 3.0), (0, 0, 0), width=48, height=48, **kw)
    nm = render_normal_maps(verts, faces, cam)
    assert nm.front.shape == (48, 48, 3) and nm.mask_front.shape == (48, 48)
    m = nm.mask_front
    assert torch.equal(m, nm.mask_back) and m.sum() > 200
    assert (nm.front[~m] == 0).all() and (nm.back[~nm.mask_back] == 0).all()
    assert torch.allclose(nm.front[m].norm(dim=-1), torch.ones(int(m.sum())), atol=1e-5)
    # front faces the viewer (+z in the view frame), back faces away; at the rim of a perspective
    # view the back normals still lean towards the camera a little (tangent rays)
    assert (nm.front[m][:, 2] > -0.05).all() and (nm.front[m][:, 2] > 0).float().mean() > 0.95
    assert (nm.back[m][:, 2] < 0.3).all() and (nm.back[m][:, 2] < 0).float().mean() > 0.9
    assert nm.front[m][:, 2].mean() > 0.6 and nm.back[m][:, 2].mean() < -0.5
    assert nm.front[24, 24, 2] > 0.99 and nm.back[24, 24, 2] < -0.99
    # view frame: x right, y up
    assert nm.front[24, 34, 0] > 0.5 and nm.front[24, 14, 0] < -0.5
    assert nm.front[14, 24, 1] > 0.5 and nm.front[34, 24, 1] < -0.5
    # depths: sphere of radius 0.5 at 3 m
    assert abs(float(nm.depth_front[24, 24]) - 2.5) < 0.01 and abs(float(nm.depth_back[24, 24]) - 3.5) < 0.01
    verts, faces = _sphere(sub=2)
    nm = render_normal_maps(verts, faces, cam)
    ref = render_normal_maps(verts, faces, cam, backend="torch")
    both = nm.mask_front & ref.mask_front
    assert (nm.front - ref.front)[both].abs().max() < 1e-4
    assert (nm.back - ref.back)[both].abs().max() < 1e-4


@pytest.mark.parametrize("back", [False, True], ids=["front", "back"])
def test_camera_inside_the_mesh_bounds(back):
    # perspective camera in the hole of the torus: geometry behind the camera (raster falls back to rays)
    verts, faces = _mesh(trimesh.creation.torus(0.5, 0.2, major_sections=24, minor_sections=12))
    cam = Camera.look_at((0.0, 0.0, 0.0), (1.0, 0.0, 0.0), width=40, height=30, fov_deg=60.0)
    a = raycast(verts, faces, cam, back=back, method="raster")
    b = raycast(verts, faces, cam, back=back, backend="torch")
    assert a.mask.sum() > 100 and (a.mask != b.mask).sum() <= 3
    both = a.mask & b.mask
    assert (a.depth - b.depth)[both].abs().max() < 1e-4 and (a.depth[a.mask] > 0).all()


def test_batch_of_meshes():
    verts, faces = _sphere(sub=2)
    vb = torch.stack([verts, verts + torch.tensor([0.3, 0.0, 0.0])])
    cams = [CAMERAS["persp"], CAMERAS["ortho"]]
    hits = raycast(vb, faces, cams)
    assert hits.mask.shape == (2, 48, 64) and hits.bary.shape == (2, 48, 64, 3)
    for i in range(2):
        single = raycast(vb[i], faces, cams[i])
        assert torch.equal(single.face_idx, hits.face_idx[i]) and torch.equal(single.depth, hits.depth[i])
    nm = render_normal_maps(vb, faces, CAMERAS["persp"])
    assert nm.front.shape == (2, 48, 64, 3) and nm.mask_back.shape == (2, 48, 64)
    assert not torch.equal(nm.mask_front[0], nm.mask_front[1])


def test_mesh_cache_refit_follows_new_vertices():
    verts, faces = _sphere(sub=2)
    cam = CAMERAS["persp"]
    a = raycast(verts, faces, cam)
    b = raycast(verts + torch.tensor([0.4, 0.0, 0.0]), faces, cam)  # same faces: cached BVH refitted
    c = raycast(verts, faces, cam)
    assert not torch.equal(a.mask, b.mask) and torch.equal(a.mask, c.mask)


def test_bad_inputs():
    verts, faces = _sphere(sub=1)
    cam = CAMERAS["persp"]
    with pytest.raises(ValueError, match="backend"):
        raycast(verts, faces, cam, backend="optix")
    with pytest.raises(ValueError, match="method"):
        raycast(verts, faces, cam, method="splat")
    with pytest.raises(ValueError, match="camera"):
        raycast(torch.stack([verts, verts]), faces, [cam])
    with pytest.raises(ValueError, match="verts"):
        raycast(verts[:, :2], faces, cam)
    with pytest.raises(ValueError, match="faces"):
        render_normal_maps(verts, faces[:, :2], cam)


def test_public_api_reexports_the_backends():
    from foundation.geometry import raycast as api
    from foundation.geometry import raycast_torch, raycast_warp

    for name in api.__all__:
        assert hasattr(api, name), name
    assert api.pixel_rays is raycast_torch.pixel_rays and api.ray_triangle_bary is raycast_torch.ray_triangle_bary
    # the two backends return the same fields for the same rays
    verts, faces = _sphere(sub=1)
    cam = CAMERAS["ortho"]
    fw, dw, bw, pw = raycast_warp.raycast_warp(verts, faces, cam, False, "ray")
    ft, dt, bt, pt = raycast_torch.raycast_torch(verts, faces, cam, False)
    assert fw.shape == ft.shape == (48, 64) and bw.shape == bt.shape == (48, 64, 3)
    assert ((fw >= 0) != (ft >= 0)).sum() <= 3
    both = (fw >= 0) & (ft >= 0)
    assert (dw - dt)[both].abs().max() < 1e-4 and (pw - pt)[both].abs().max() < 1e-4
