"""Fast pose correction (avatar/posing.py) against the per-vertex reference."""

import pytest
import torch
import trimesh

from foundation.body.lbs import skin_points
from foundation.geometry.normals import vertex_normals
from avatar.extract import CanonicalMesh, pose_canonical_mesh, pose_corrections
from avatar.fields import CanonicalSDF, body_sdf_grid, spread_matrix
from avatar.posing import PoseCorrector, anchor_interpolation, select_anchors, skin_vertices


@pytest.fixture(scope="module")
def sphere_avatar():
    """A sphere 'avatar': canonical SDF with a random (non-zero) pose-conditioned residual."""
    ico = trimesh.creation.icosphere(4, radius=0.3)
    v = torch.tensor(ico.vertices, dtype=torch.float32)
    f = torch.tensor(ico.faces, dtype=torch.long)
    grid, lo, hi = body_sdf_grid(v, f, voxel=0.05, margin=0.2)
    torch.manual_seed(0)
    sdf = CanonicalSDF(grid, lo, hi, torch.zeros(3), 0.6, hidden=32, layers=3, freqs=3, pose_dim=8)
    torch.nn.init.normal_(sdf.mlp[-1].weight, std=0.3)
    sdf.eval()
    centres = 0.3 * torch.nn.functional.normalize(torch.randn(55, 3), dim=-1)
    w = torch.softmax(-torch.cdist(v, centres) / 0.05, -1)  # smooth weights, like a body's
    n = vertex_normals(v, f)
    sdf0 = sdf(v, torch.zeros(len(v), 63))
    mesh = CanonicalMesh(v, f, torch.zeros(len(v), 3, dtype=torch.uint8), w, n, sdf0.detach())
    return sdf, mesh


def test_exact_corrector_matches_reference(sphere_avatar):
    sdf, mesh = sphere_avatar
    spread = spread_matrix()
    rv = 0.4 * torch.randn(3, 55, 3)
    ref = pose_corrections(sdf, mesh, rv, spread, max_offset=0.05)
    assert ref.abs().max() > 1e-3  # the residual really depends on the pose
    pc = PoseCorrector(sdf, mesh.verts, mesh.normals, mesh.weights, spread, spacing=0.0, max_offset=0.05)
    assert pc.num_anchors == len(mesh.verts)
    torch.testing.assert_close(pc.offsets(rv), ref, atol=1e-5, rtol=1e-4)
    # zero pose -> zero correction
    assert pc.offsets(torch.zeros(1, 55, 3)).abs().max() < 1e-5


def test_anchor_corrector_close_to_reference(sphere_avatar):
    sdf, mesh = sphere_avatar
    spread = spread_matrix()
    rv = 0.4 * torch.randn(2, 55, 3)
    ref = pose_corrections(sdf, mesh, rv, spread)
    pc = PoseCorrector(sdf, mesh.verts, mesh.normals, mesh.weights, spread, spacing=0.06)
    assert 50 < pc.num_anchors < len(mesh.verts) // 4
    err = (pc.offsets(rv) - ref).norm(dim=-1)
    assert err.mean() < 0.35 * ref.norm(dim=-1).mean()  # a random MLP: rougher than a trained one


def test_select_anchors_and_interpolation():
    g = torch.stack(torch.meshgrid(torch.arange(10.0), torch.arange(10.0), indexing="ij"), -1).reshape(-1, 2)
    verts = torch.cat([g * 0.01, torch.zeros(100, 1)], 1)  # a 10 x 10 grid, 1 cm apart, in z = 0
    a = select_anchors(verts, 0.025)
    assert len(a) == 16 and len(torch.unique(a)) == 16  # 4 x 4 cells
    assert torch.equal(select_anchors(verts, 0.0), torch.arange(100))
    normals = torch.tensor([0.0, 0.0, 1.0]).expand(100, 3)
    def dense(idx, w):
        return torch.zeros(100, 16).scatter_add_(1, idx, w)

    M = dense(*anchor_interpolation(verts, normals, a, 0.025))
    torch.testing.assert_close(M.sum(1), torch.ones(100))
    torch.testing.assert_close(M[a, torch.arange(16)], M.max(1).values[a])  # an anchor is its own largest weight
    # opposite-facing anchors do not contribute
    flip = normals.clone()
    flip[a[::2]] *= -1
    M2 = dense(*anchor_interpolation(verts, flip, a, 0.025))
    up = flip[:, 2] > 0
    assert M2[up][:, 0::2].abs().max() == 0


def test_skin_vertices_matches_lbs():
    torch.manual_seed(1)
    v = torch.randn(200, 3)
    w = torch.softmax(torch.randn(200, 55), -1)
    T = torch.eye(4).repeat(4, 55, 1, 1)
    T[:, :, :3, :] += 0.3 * torch.randn(4, 55, 3, 4)
    ref = skin_points(v.expand(4, -1, -1), w, T)
    torch.testing.assert_close(skin_vertices(v, w, T), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(skin_vertices(v.expand(4, -1, -1), w, T), ref, atol=1e-5, rtol=1e-5)


def test_pose_canonical_mesh_fast_path(sphere_avatar):
    sdf, mesh = sphere_avatar
    spread = spread_matrix()
    rv = 0.3 * torch.randn(2, 55, 3)
    T = torch.eye(4).repeat(2, 55, 1, 1)
    T[:, :, :3, 3] = torch.randn(2, 1, 3)
    pc = PoseCorrector(sdf, mesh.verts, mesh.normals, mesh.weights, spread, spacing=0.0)
    slow = pose_canonical_mesh(sdf, mesh, rv, T, spread)
    fast = pose_canonical_mesh(sdf, mesh, rv, T, spread, corrector=pc)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)
    lbs = pose_canonical_mesh(sdf, mesh, rv, T, spread, correct=False, corrector=pc)
    torch.testing.assert_close(lbs, mesh.verts[None] + T[:, :1, :3, 3])


def test_pose_transforms_match_body(anny_body):
    from avatar.posing import pose_transforms
    from tests.fixtures.toy import random_poses

    p = random_poses(anny_body, 3, seed=4)
    p.betas = 0.5 * torch.randn(1, anny_body.num_betas).expand(3, -1).clone()
    p.transl = torch.randn(3, 3)
    with torch.no_grad():
        ref = anny_body(p).joint_transforms
        rest_j = anny_body.rest(p.betas[:1])[1][0]
    torch.testing.assert_close(pose_transforms(anny_body, p, rest_j), ref, atol=1e-5, rtol=1e-5)
