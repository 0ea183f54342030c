"""Shapes / units of the recon modules, checkpoint loading, and surface extraction on a known field."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from foundation.camera import Camera
from recon.crop import body_crop, crop_image, sample_map
from recon.implicit import ImplicitConfig, ImplicitNet, load_implicit, occupancy_loss
from recon.mesh import ExtractConfig, color_confidence, extract_surface, largest_component, vertex_colors
from recon.normal_net import NormalNet, NormalNetConfig, load_normal_net, normal_loss, save_checkpoint


def _sphere(radius=0.3, subdiv=3):
    s = trimesh.creation.icosphere(subdivisions=subdiv, radius=radius)
    return torch.tensor(s.vertices, dtype=torch.float32), torch.tensor(s.faces, dtype=torch.long)


def test_normal_net_shapes_and_unit_length():
    torch.manual_seed(0)
    net = NormalNet(NormalNetConfig(width=8, levels=3, max_width=16))
    S = 32
    img, mask = torch.rand(2, 3, S, S), torch.ones(2, 1, S, S)
    body = torch.nn.functional.normalize(torch.randn(2, 3, S, S), dim=1)
    front, back = net(img, mask, body, body)
    assert front.shape == back.shape == (2, 3, S, S)
    assert torch.allclose(front.norm(dim=1), torch.ones(2, S, S), atol=1e-4)
    # untrained (zero head): returns the body normals
    assert torch.allclose(front, body, atol=1e-5)
    with pytest.raises(ValueError, match="divisible"):
        net(img[..., :30, :30], mask[..., :30, :30], body[..., :30, :30], body[..., :30, :30])


def test_normal_loss_zero_on_match_and_trains():
    torch.manual_seed(0)
    S = 16
    tgt = torch.nn.functional.normalize(torch.randn(1, 3, S, S), dim=1)
    m = torch.ones(1, 1, S, S)
    assert float(normal_loss(tgt, tgt, m)) < 1e-6
    assert float(normal_loss(-tgt, tgt, m)) > 2.0
    net = NormalNet(NormalNetConfig(width=8, levels=2, max_width=16))
    body = torch.zeros(1, 3, S, S)
    body[:, 2] = 1
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    img = torch.rand(1, 3, S, S)
    tgt = torch.nn.functional.normalize(body + img - 0.5, dim=1)  # "clothing" = a function of the image
    losses = []
    for _ in range(60):
        f, b = net(img, m, body, body)
        loss = normal_loss(f, tgt, m)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_checkpoint_roundtrip_and_errors(tmp_path):
    net = NormalNet(NormalNetConfig(width=8, levels=2, max_width=16))
    torch.nn.init.normal_(net.head.weight)
    path = tmp_path / "n.safetensors"
    save_checkpoint(net, path, {"command": "test"})
    net2 = load_normal_net(path)
    for k, v in net.state_dict().items():
        assert torch.equal(v, net2.state_dict()[k])
    assert net2.cfg == net.cfg
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_normal_net(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        load_normal_net(tmp_path / "junk.safetensors")
    # tensors that do not match the architecture named in the sidecar
    imp = ImplicitNet(ImplicitConfig(hidden=(16, 16)))
    save_checkpoint(imp, tmp_path / "i.safetensors", {})
    (tmp_path / "i.json").write_text('{"config": {"hidden": [32, 16]}}')
    with pytest.raises(ValueError, match="shape mismatch"):
        load_implicit(tmp_path / "i.safetensors")


def test_committed_checkpoints_load():
    from recon.stage import ReconConfig, load_models

    net, imp = load_models(ReconConfig())
    assert isinstance(net, NormalNet) and isinstance(imp, ImplicitNet)
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_models(ReconConfig(implicit_ckpt="nope.safetensors"))


def test_implicit_untrained_is_body_occupancy():
    net = ImplicitNet()
    f = torch.zeros(4, 7)
    f[:, 0] = torch.tensor([-0.05, -0.01, 0.01, 0.05])
    occ = net.occupancy(f)
    assert occ.shape == (4,)
    assert bool((occ[:2] > 0.5).all()) and bool((occ[2:] < 0.5).all())
    assert occupancy_loss(net(f), (f[:, 0] < 0).float()).item() < 0.5
    with pytest.raises(ValueError, match=r"\(N, 7\)"):
        net(torch.zeros(3, 5))


def test_extract_known_occupancy_watertight_at_offset():
    """Analytic 'body sdf - 2 cm' occupancy -> closed mesh 2 cm outside the body."""
    verts, faces = _sphere(0.3)
    occ = lambda p, cp: torch.sigmoid(-(cp.sdf - 0.02) / 0.004)  # noqa: E731
    v, f, st = extract_surface(occ, verts, faces, ExtractConfig(coarse_res=16, fine_res=64, band=0.08))
    m = trimesh.Trimesh(v, f, process=False)
    assert m.is_watertight
    assert m.volume > 0  # outward orientation
    # icosphere is inscribed: its faces sit slightly inside the 0.3 sphere
    from foundation.geometry.sdf import signed_distance

    d = signed_distance(torch.as_tensor(v), verts, faces).sdf
    assert abs(float(d.mean()) - 0.02) < 2e-3 and float(d.abs().max()) < 0.03
    assert st["points_evaluated"] < st["dense_equivalent"] / 2  # coarse-to-fine saved work


def test_lipschitz_prepass_changes_nothing_but_work():
    """The pre-pass only skips queries it can prove are outside the band: identical surface."""
    a = trimesh.creation.icosphere(subdivisions=3, radius=0.25)
    b = trimesh.creation.capsule(height=0.6, radius=0.08)
    b.apply_translation([0.3, 0.0, 0.0])
    m = trimesh.util.concatenate([a, b])
    verts = torch.as_tensor(np.asarray(m.vertices), dtype=torch.float32)
    faces = torch.as_tensor(np.asarray(m.faces), dtype=torch.long)

    def occ(p, cp):  # a wavy offset surface, deterministic per point
        return torch.sigmoid(-(cp.sdf - 0.03 - 0.01 * torch.sin(40 * p[:, 1])) / 0.004)

    out = {k: extract_surface(occ, verts, faces, ExtractConfig(coarse_res=32, fine_res=128, band=0.08, prepass=k))
           for k in (1, 4)}
    np.testing.assert_array_equal(out[1][0], out[4][0])
    np.testing.assert_array_equal(out[1][1], out[4][1])
    assert out[4][2]["points_evaluated"] < out[1][2]["points_evaluated"] - 0.5 * 33**3  # half the first grid saved
    assert out[4][2]["network_points"] == out[1][2]["network_points"]


def test_volume_smoothing_removes_pointwise_noise():
    """A noisy occupancy (random flips near the level set) gives a rough surface; the Gaussian volume
    filter brings its normals back to the analytic sphere's and keeps it at the right offset."""
    verts, faces = _sphere(0.3)
    g = torch.Generator().manual_seed(0)

    def occ(p, cp):
        return torch.sigmoid(-(cp.sdf - 0.02) / 0.004 + 3.0 * torch.randn(len(p), generator=g))

    def normal_error(sigma):
        cfg = ExtractConfig(coarse_res=32, fine_res=128, band=0.08, smooth_iters=0, smooth_sigma=sigma)
        v, f, _ = extract_surface(occ, verts, faces, cfg)
        m = trimesh.Trimesh(v, f, process=False)
        radial = m.triangles_center / np.linalg.norm(m.triangles_center, axis=1, keepdims=True)
        r = np.linalg.norm(v, axis=1)
        return float(1 - np.abs((m.face_normals * radial).sum(1)).mean()), float(np.median(r))

    rough, r_rough = normal_error(0.0)
    smooth, r_smooth = normal_error(0.016)
    assert smooth < 0.5 * rough
    assert abs(r_smooth - 0.32) < 5e-3


def test_largest_component_drops_islands():
    a = trimesh.creation.icosphere(subdivisions=2)
    b = trimesh.creation.box(extents=(0.1, 0.1, 0.1))
    b.apply_translation([3, 0, 0])
    m = trimesh.util.concatenate([a, b])
    v, f = largest_component(np.asarray(m.vertices), np.asarray(m.faces))
    assert len(f) == len(a.faces) and len(v) == len(a.vertices)


def test_crop_and_colors_consistent():
    cam = Camera.look_at((0, 0, 3), (0, 0, 0), width=160, height=120, fov_deg=40)
    verts, faces = _sphere(0.3)
    box = body_crop(cam, verts, 64)
    assert box.camera.width == box.camera.height == 64
    uv_c, _ = box.camera.project(verts)
    assert float(uv_c.min()) > 0 and float(uv_c.max()) < 64  # the body fits in the crop
    # an image whose red channel encodes u: crop then sample equals projecting into the crop camera
    u = torch.arange(160).float()[None, :, None].expand(120, 160, 1) + 0.5
    img = torch.cat([u, torch.zeros(120, 160, 2)], -1)
    crop = crop_image(img, box)
    uv_full, _ = cam.project(verts)
    got = sample_map(crop.permute(2, 0, 1), uv_c)[:, 0]
    assert torch.allclose(got, uv_full[:, 0], atol=0.6)
    col = vertex_colors(verts.numpy(), np.clip(img.numpy(), 0, 255).astype(np.uint8), cam)
    assert col.dtype == np.uint8 and col.shape == (len(verts), 3)
    assert np.abs(col[:, 0].astype(float) - uv_full[:, 0].numpy()).max() < 1.0


def test_color_confidence_front_back_occlusion_and_mask():
    """Seen vertices get cos(view angle); the back side and a sphere hidden behind another get 0."""
    a = trimesh.creation.icosphere(subdivisions=3, radius=0.2)
    b = trimesh.creation.icosphere(subdivisions=3, radius=0.1)
    b.apply_translation([0, 0, -0.6])  # straight behind a, seen from +z
    m = trimesh.util.concatenate([a, b])
    v, f = np.asarray(m.vertices, np.float32), np.asarray(m.faces)
    cam = Camera.look_at((0, 0, 2.0), (0, 0, 0), width=200, height=200, fov_deg=30)
    w = color_confidence(v, f, cam)
    na = len(a.vertices)
    va, wa = v[:na], w[:na]
    assert w.shape == (len(v),) and w.dtype == np.float32
    assert np.all(w[na:] == 0)  # occluded
    assert np.all(wa[va[:, 2] < -0.02] == 0)  # back side
    facing = va[:, 2] > 0.19  # within ~18 deg of the pole pointing at the camera
    assert wa[facing].min() > 0.9
    assert 0.2 < wa[(va[:, 2] > 0.05) & (va[:, 2] < 0.1)].mean() < 0.9  # oblique: cosine
    # a person mask covering only the left half keeps the weights there and zeroes the right half
    mask = np.zeros((200, 200), np.float32)
    mask[:, :100] = 1.0
    wm = color_confidence(v, f, cam, mask)
    uv, _ = cam.project(torch.as_tensor(v))
    right = uv[:, 0].numpy() > 101
    assert np.all(wm[right] == 0) and np.allclose(wm[~right & (uv[:, 0].numpy() < 99)], w[~right & (uv[:, 0].numpy() < 99)])


def test_surface_metrics_units():
    from foundation.metrics import surface_metrics

    a = trimesh.creation.icosphere(subdivisions=3, radius=0.3)
    b = trimesh.creation.icosphere(subdivisions=3, radius=0.32)
    m = surface_metrics(a.vertices, a.faces, b.vertices, b.faces, n=4000)
    assert abs(m["chamfer_cm"] - 2.0) < 0.15 and abs(m["p2s_cm"] - 2.0) < 0.15  # 2 cm apart
    assert m["normal_consistency"] > 0.99
    same = surface_metrics(a.vertices, a.faces, a.vertices, a.faces, n=4000)
    assert same["chamfer_cm"] < 1e-3


def test_record_from_sample_matches_inference_crop(anny_body):
    """A generator-like sample (body inflated by 2 cm as the 'clothing') -> a training record whose crop,
    body maps and GT maps agree with the inference-time view of the same fitted body."""
    from types import SimpleNamespace

    from foundation.geometry.normals import vertex_normals
    from foundation.geometry.raycast import render_normal_maps
    from foundation.geometry.sdf import signed_distance
    from recon.data import NoiseConfig, record_from_sample
    from recon.train import implicit_dataset
    from recon.views import prepare_view

    body = anny_body
    p = body.zero_params(1)
    with torch.no_grad():
        v = body(p).vertices[0]
    cv = v + 0.02 * vertex_normals(v, body.faces)
    cam = Camera.look_at((0, 0.3, 4.0), (0, 0.3, 0), width=128, height=128, ortho_scale=2.4)
    nm = render_normal_maps(cv, body.faces, cam)
    mask = nm.mask_front.numpy()
    img = np.zeros((128, 128, 3), np.uint8)
    img[mask] = (180, 90, 40)
    pts = torch.randn(500, 3) * 0.3 + torch.tensor([0.0, 0.3, 0.0])
    lab = signed_distance(pts, cv, body.faces).sdf < 0
    s = SimpleNamespace(image=img, mask=mask, camera=cam, params=p, clothed_verts=cv.numpy(),
                        clothed_faces=body.faces.numpy(), occ_points=pts.numpy(), occ_labels=lab.numpy())
    zero = NoiseConfig(0.0, 0.0, 0.0, 0.0)
    r = record_from_sample(s, body, 64, np.random.default_rng(0), zero, n_fine=300)
    assert r.image.shape == (3, 64, 64) and r.gt_front.shape == (3, 64, 64) and r.points.shape == (800, 3)
    assert torch.allclose(r.body_verts, v, atol=1e-5)  # zero noise: the fitted body is the GT body
    view = prepare_view(img, mask.astype(np.float32), cam, v, body.faces, 64)
    assert view.box.camera == r.camera  # same crop rule as inference
    # GT clothed silhouette contains the body's; GT normals are unit length inside it
    body_m, gt_m = r.view().maps.body_mask, r.gt_mask_front[0] > 0
    assert bool(gt_m[body_m].float().mean() > 0.99) and gt_m.sum() > body_m.sum()
    assert torch.allclose(r.gt_front[:, gt_m].norm(dim=0), torch.ones(int(gt_m.sum())), atol=1e-3)
    # fine samples hug the clothed surface, labels = inside the clothed mesh
    d = signed_distance(r.points[500:], cv, body.faces).sdf
    assert float(d.abs().median()) < 0.01
    assert torch.equal(r.labels[500:] > 0.5, d < 0)
    feats, labels = implicit_dataset([r], None, body.faces, band=0.1)
    assert feats.shape[1] == 7 and len(feats) == len(labels) and bool((feats[:, 0].abs() < 0.1).all())
    assert len(feats) < len(r.points)  # far uniform points dropped
