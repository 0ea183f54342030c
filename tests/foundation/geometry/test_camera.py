import numpy as np
import torch

from foundation.camera import Camera


def test_look_at_is_upright_and_unmirrored():
    cam = Camera.look_at((0, 0, 3), (0, 0, 0), width=100, height=80, fov_deg=40)
    R = np.asarray(cam.R)
    assert np.allclose(R @ R.T, np.eye(3), atol=1e-6) and np.isclose(np.linalg.det(R), 1.0)
    uv, z = cam.project(torch.tensor([[0.0, 0.5, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    assert torch.allclose(uv[2], torch.tensor([50.0, 40.0]))
    assert uv[0, 1] < 40  # world up is up in the image
    assert uv[1, 0] > 50  # a person facing the camera (+Z) has their left (+X) on the image's right
    assert torch.allclose(z, torch.full((3,), 3.0))


def test_rays_hit_projected_points_and_roundtrip():
    for kw in ({"fov_deg": 50.0}, {"ortho_scale": 2.0}):
        cam = Camera.look_at((0.4, 0.3, 2.5), (0, 0.1, 0), width=32, height=24, **kw)
        o, d = cam.rays()
        p = o[5, 7] + 2.0 * d[5, 7]
        uv, _ = cam.project(p[None])
        assert torch.allclose(uv[0], torch.tensor([7.5, 5.5]), atol=1e-3)
        assert Camera.from_dict(cam.to_dict()) == cam


def test_crop_keeps_projection():
    cam = Camera.look_at((0, 0, 3), (0, 0, 0), width=200, height=200, fov_deg=40)
    crop = cam.cropped(50, 40, 100, 100, out_size=64)
    pt = torch.tensor([[0.1, -0.2, 0.3]])
    uv, _ = cam.project(pt)
    uv2, _ = crop.project(pt)
    assert torch.allclose((uv[0] - torch.tensor([50.0, 40.0])) * 0.64, uv2[0], atol=1e-4)
