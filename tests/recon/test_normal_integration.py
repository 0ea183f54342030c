"""d-BiNI normal integration and the front/back stitching of the ``econ`` surface, on shapes whose depth is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from foundation.camera import Camera
from recon.normal_integration import (IntegrationConfig, boundary_pixels, conjugate_gradient, integrate_normals,
                                      normal_gradients)


def _sphere_maps(camera: Camera, radius: float = 0.5):
    """Exact front / back depth and view-frame normals of a sphere at the world origin."""
    o, d = camera.rays()
    b = (o * d).sum(-1)
    disc = b * b - ((o * o).sum(-1) - radius**2)
    mask = disc > 0
    s = disc.clamp(min=0).sqrt()
    p1, p2 = o + (-b - s)[..., None] * d, o + (-b + s)[..., None] * d
    Rv = camera.view_rotation()
    n1, n2 = (p1 / radius) @ Rv.T, (p2 / radius) @ Rv.T
    z1, z2 = camera.to_camera(p1)[..., 2], camera.to_camera(p2)[..., 2]
    m = mask[..., None]
    return mask, (n1 * m).permute(2, 0, 1), (n2 * m).permute(2, 0, 1), z1 * mask, z2 * mask, disc


CAMERAS = {
    "ortho": Camera.look_at((0, 0, 3.0), (0, 0, 0), width=128, height=128, ortho_scale=1.2),
    "perspective": Camera.look_at((0, 0, 3.0), (0, 0, 0), width=128, height=128, fov_deg=25),
}


@pytest.mark.parametrize("kind", list(CAMERAS))
def test_sphere_integrates_to_its_depth(kind):
    """Front and back of a sphere from their normals: the right shape, and the right thickness even from a
    prior 10 cm too thin (the silhouette gap term sets it)."""
    cam = CAMERAS[kind]
    mask, nf, nb, z1, z2, disc = _sphere_maps(cam)
    dm = integrate_normals(nf, nb, mask, cam, z1 + 0.05, z2 - 0.05, mask, IntegrationConfig(prior_weight=1e-4))
    inner = mask & (disc > 0.05)
    ef, eb = (dm.front - z1)[inner], (dm.back - z2)[inner]
    assert float((ef - ef.mean()).abs().mean()) < 0.003  # shape, metres
    assert float((eb - eb.mean()).abs().mean()) < 0.003
    assert abs(float(ef.mean())) < 0.02 and abs(float(eb.mean())) < 0.02  # thickness (the prior was off by 5 cm)
    assert bool((dm.front[~mask] == 0).all()) and bool((dm.back[mask] > dm.front[mask]).all())


def test_without_the_gap_term_the_prior_sets_the_thickness():
    cam = CAMERAS["ortho"]
    mask, nf, nb, z1, z2, disc = _sphere_maps(cam)
    dm = integrate_normals(nf, nb, mask, cam, z1 + 0.05, z2 - 0.05, mask,
                           IntegrationConfig(prior_weight=1e-4, boundary_weight=0.0))
    inner = mask & (disc > 0.05)
    assert float((dm.front - z1)[inner].mean()) > 0.04  # follows the (wrong) prior


def test_tilted_plane_is_linear():
    """A constant normal integrates to a plane with the slope it implies (orthographic: -n_x / n_z per pixel)."""
    cam = Camera.look_at((0, 0, 3.0), (0, 0, 0), width=40, height=30, ortho_scale=1.0)
    n_view = torch.tensor([0.3, -0.2, 0.0])
    n_view[2] = (1 - (n_view[:2] ** 2).sum()).sqrt()
    normals = n_view[:, None, None].expand(3, 30, 40).clone()
    mask = torch.zeros(30, 40, dtype=torch.bool)
    mask[5:25, 5:35] = True
    prior = torch.full((30, 40), 3.0)
    dm = integrate_normals(normals, -normals, mask, cam, prior, prior + 0.2, mask,
                           IntegrationConfig(boundary_weight=0.0, k=0.0, prior_weight=1e-6, cg_tol=1e-8, cg_iters=3000))
    z = dm.front[5:25, 5:35]
    # d = fx z: dz/du = d_u / fx, dz/dv = d_v / fx (d_v already carries fx / fy)
    gu, gv, _ = normal_gradients(normals, cam)
    np.testing.assert_allclose((z[:, 1:] - z[:, :-1]).numpy(), float(gu[0, 0]) / cam.fx, atol=1e-4)
    np.testing.assert_allclose((z[1:] - z[:-1]).numpy(), float(gv[0, 0]) / cam.fx, atol=1e-4)
    assert float(gu[0, 0]) * float(n_view[0]) > 0  # a surface turned to +x recedes towards +u (a sphere's right side)


def test_depth_steps_of_the_prior_are_kept():
    """Two fronto-parallel planes 20 cm apart side by side (an arm in front of the torso): where the prior
    (the body) has the step, the integration keeps it; without that (prior_jump huge) the weak prior lets
    the normals smear it into a ramp."""
    cam = Camera.look_at((0, 0, 3.0), (0, 0, 0), width=48, height=32, ortho_scale=1.0)
    normals = torch.zeros(3, 32, 48)
    normals[2] = 1.0
    mask = torch.zeros(32, 48, dtype=torch.bool)
    mask[4:28, 4:44] = True
    truth = torch.full((32, 48), 3.0)
    truth[:, 24:] = 3.2
    errs = {}
    for jump in (3.0, 1e9):
        dm = integrate_normals(normals, -normals, mask, cam, truth, truth + 0.3, mask,
                               IntegrationConfig(prior_jump=jump, prior_weight=1e-3, boundary_weight=0.0))
        errs[jump] = float((dm.front - truth)[mask].abs().mean())
    assert errs[3.0] < 0.2 * errs[1e9]
    assert errs[3.0] < 0.01


def test_conjugate_gradient_solves_spd_system():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(30, 30, generator=g, dtype=torch.float64)
    A = a @ a.T + 30 * torch.eye(30, dtype=torch.float64)
    b = torch.randn(30, generator=g, dtype=torch.float64)
    x, it, res = conjugate_gradient(lambda v: A @ v, b, torch.zeros(30, dtype=torch.float64), A.diagonal(), 200, 1e-12)
    np.testing.assert_allclose(x.numpy(), np.linalg.solve(A.numpy(), b.numpy()), atol=1e-8)
    assert res < 1e-10 and 0 < it < 200


def test_boundary_pixels():
    m = torch.zeros(6, 6, dtype=torch.bool)
    m[1:5, 1:5] = True
    b = boundary_pixels(m)
    assert int(b.sum()) == 12 and not bool(b[2:4, 2:4].any()) and not bool(b[~m].any())


def test_empty_inputs_raise():
    cam = CAMERAS["ortho"]
    n = torch.zeros(3, 128, 128)
    z = torch.zeros(128, 128)
    with pytest.raises(ValueError, match="mask is empty"):
        integrate_normals(n, n, torch.zeros(128, 128, dtype=torch.bool), cam, z, z, torch.ones(128, 128, dtype=torch.bool))
    with pytest.raises(ValueError, match="no depth prior"):
        integrate_normals(n, n, torch.ones(128, 128, dtype=torch.bool), cam, z, z, torch.zeros(128, 128, dtype=torch.bool))


def test_stitched_sphere_is_one_closed_surface():
    """Front + back depth of a sphere stitched into the volume: one watertight component whose silhouette is
    the mask and whose radius is right (no body under the maps: the maps alone decide)."""
    import trimesh

    from recon.mesh import mesh_from_volume
    from recon.surface import depth_volume

    cam = CAMERAS["perspective"]
    mask, nf, nb, z1, z2, _ = _sphere_maps(cam, 0.4)
    dm = integrate_normals(nf, nb, mask, cam, z1, z2, mask, IntegrationConfig())
    # a tiny "body" far inside the sphere (the stitching needs one; it must not matter here)
    body = trimesh.creation.icosphere(2, radius=0.05)
    bv, bf = torch.as_tensor(body.vertices, dtype=torch.float32), torch.as_tensor(body.faces, dtype=torch.long)
    from foundation.geometry.raycast import render_normal_maps

    bn = render_normal_maps(bv, bf, cam)
    vol, lo, st = depth_volume(dm, mask.float(), torch.as_tensor(bn.depth_front), torch.as_tensor(bn.depth_back),
                               torch.as_tensor(bn.mask_front).bool(), bv, bf, 0.01)
    v, f = mesh_from_volume(vol, lo, 0.01, smooth_sigma=0.005, smooth_iters=5)
    m = trimesh.Trimesh(v, f, process=False)
    assert m.is_watertight and len(m.split(only_watertight=False)) == 1
    r = np.linalg.norm(v, axis=1)
    assert abs(float(r.mean()) - 0.4) < 0.015
    from foundation.geometry.raycast import raycast

    sil = torch.as_tensor(raycast(torch.as_tensor(v), torch.as_tensor(f), cam).mask).bool()
    iou = float((sil & mask).sum() / (sil | mask).sum())
    assert iou > 0.95


def test_blur_normals_denoises_inside_the_mask_only():
    """The masked blur brings noisy sphere normals closer to the true ones, keeps a constant field, stays unit
    length, and leaves pixels outside the mask as they were (sigma 0: the input itself)."""
    from recon.surface import blur_normals

    cam = CAMERAS["ortho"]
    mask, nf, _, _, _, _ = _sphere_maps(cam, 0.5)
    g = torch.Generator().manual_seed(0)
    noisy = nf + 0.15 * torch.randn(nf.shape, generator=g) * mask
    noisy = torch.where(mask, noisy / noisy.norm(dim=0, keepdim=True).clamp(min=1e-6), noisy)
    out = blur_normals(noisy, mask, 1.5)
    inner = mask & ~boundary_pixels(mask)

    def err(n):
        return float(torch.rad2deg(torch.acos((n * nf).sum(0).clamp(-1, 1)))[inner].mean())

    assert err(out) < 0.6 * err(noisy)
    assert torch.allclose(out.norm(dim=0)[mask], torch.ones(int(mask.sum())), atol=1e-5)
    assert torch.equal(out[:, ~mask], noisy[:, ~mask])
    assert blur_normals(noisy, mask, 0.0) is noisy
    const = torch.zeros_like(nf)
    const[2] = 1.0
    assert torch.allclose(blur_normals(const, mask, 2.0), const, atol=1e-6)


def test_body_slack_cuts_a_body_part_far_behind_the_clothed_back():
    """A mis-posed body part poking 15 cm out of the back of the clothed surface: kept with the default
    (the body is always inside within the mask), cut with a 3 cm slack."""
    import trimesh

    from foundation.geometry.raycast import render_normal_maps
    from recon.mesh import mesh_from_volume
    from recon.surface import depth_volume

    cam = CAMERAS["perspective"]
    mask, nf, nb, z1, z2, _ = _sphere_maps(cam, 0.4)
    dm = integrate_normals(nf, nb, mask, cam, z1, z2, mask, IntegrationConfig())
    body = trimesh.creation.icosphere(2, radius=0.1)
    bv = torch.as_tensor(body.vertices, dtype=torch.float32) + torch.tensor([0.0, 0.0, -0.45])  # behind: camera on +z
    bf = torch.as_tensor(body.faces, dtype=torch.long)
    bn = render_normal_maps(bv, bf, cam)
    args = (dm, mask.float(), torch.as_tensor(bn.depth_front), torch.as_tensor(bn.depth_back),
            torch.as_tensor(bn.mask_front).bool(), bv, bf, 0.01)
    depths = {}
    for slack in (float("inf"), 0.03):
        v, f = mesh_from_volume(*depth_volume(*args, body_slack=slack)[:2], 0.01, smooth_sigma=0.005, smooth_iters=5)
        depths[slack] = float(-v[:, 2].min())
    assert depths[float("inf")] > 0.5  # the body's part reaches 0.55 m behind the centre
    assert depths[0.03] < 0.46  # the sphere's back (0.4 m) + the slack + a voxel


def test_a_hand_inside_the_garment_is_not_replaced():
    """The body's hand replaces the maps' volume where the maps put it on the surface, but a hand the maps
    hold inside the garment (under a skirt) is left alone: no hole of the hand's shape is cut into the cloth."""
    import trimesh

    from foundation.geometry.raycast import render_normal_maps
    from recon.surface import depth_volume

    cam = CAMERAS["perspective"]
    mask, nf, nb, z1, z2, _ = _sphere_maps(cam, 0.4)
    dm = integrate_normals(nf, nb, mask, cam, z1, z2, mask, IntegrationConfig())
    ball = trimesh.creation.icosphere(2, radius=0.05)
    bf = torch.as_tensor(ball.faces, dtype=torch.long)
    for centre, hidden in (((0.0, 0.0, 0.0), 1), ((0.0, 0.0, 0.4), 0)):  # deep inside / on the front surface
        bv = torch.as_tensor(ball.vertices, dtype=torch.float32) + torch.tensor(centre)
        bn = render_normal_maps(bv, bf, cam)
        vol, lo, st = depth_volume(dm, mask.float(), torch.as_tensor(bn.depth_front), torch.as_tensor(bn.depth_back),
                                   torch.as_tensor(bn.mask_front).bool(), bv, bf, 0.02, hand_verts=[bv],
                                   hand_radius=0.03)
        assert st["hands_hidden"] == hidden and (st["hand_cells"] == 0) == bool(hidden)
        if hidden:  # the cloth around the hand stays filled
            c = np.round((np.asarray(centre) + 0.07 - lo) / 0.02).astype(int)
            assert vol[c[0], c[1], c[2]] > 0.99


def test_points_within_a_radius_of_a_hand():
    """recon.surface._within (a k-d tree) marks the points the dense distance matrix marks."""
    from recon.surface import _within

    g = torch.Generator().manual_seed(0)
    hand = torch.rand(300, 3, generator=g) * 0.1
    pts = torch.rand(4000, 3, generator=g) * 0.2 - 0.05
    near = _within(pts, hand, 0.03)
    ref = torch.cdist(pts.double(), hand.double()).min(1).values < 0.03
    assert near.dtype == torch.bool and torch.equal(near, ref) and 0 < int(near.sum()) < len(pts)
