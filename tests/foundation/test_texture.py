"""UV atlases, texture lookups, texel surface points, hole filling, textured OBJ."""

from __future__ import annotations

import numpy as np
import torch
import trimesh

from foundation.texture import push_pull_fill, sample_texture, texel_surface, uv_atlas, write_textured_obj


def test_bilinear_lookup_is_exact_on_a_linear_ramp():
    R = 16
    xs = (np.arange(R) + 0.5) / R
    img = torch.from_numpy(np.stack(np.meshgrid(xs, xs), -1)).float()  # (R, R, 2): value = texel centre (u, v)
    uv = torch.tensor([[0.3, 0.7], [0.5, 0.5], [0.12, 0.91]])
    np.testing.assert_allclose(sample_texture(img, uv).numpy(), uv.numpy(), atol=1e-6)


def test_texel_surface_of_a_quad():
    face_uvs = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [1.0, 1.0], [0.0, 1.0]]])
    fi, bary = texel_surface(face_uvs, 32)
    assert (fi >= 0).all()  # the quad covers every texel
    uv = (face_uvs[fi] * bary[..., None]).sum(-2)  # back to uv: the texel centres
    c = (torch.arange(32) + 0.5) / 32
    np.testing.assert_allclose(uv[..., 0].numpy(), c.expand(32, 32).numpy(), atol=1e-4)
    np.testing.assert_allclose(uv[..., 1].numpy(), c[:, None].expand(32, 32).numpy(), atol=1e-4)


def test_atlas_unwraps_a_sphere_without_overlap():
    m = trimesh.creation.icosphere(3)
    at = uv_atlas(m.vertices, m.faces, 256)
    assert at.faces.shape == (len(m.faces), 3) and int(at.vmap.max()) == len(m.vertices) - 1
    np.testing.assert_allclose(at.uvs.min().item() >= 0, True)
    np.testing.assert_array_equal(at.vmap[at.faces].numpy(), m.faces)  # same faces, seams split
    fi, _ = texel_surface(at.face_uvs, 256)
    area = np.zeros(len(m.faces))
    np.add.at(area, fi[fi >= 0].numpy(), 1)
    assert (area > 0).mean() > 0.95  # charts hold almost every face's texels (and none overlap: one face a texel)


def test_push_pull_fills_holes_and_keeps_known_texels():
    img = np.full((32, 32, 3), 0.25, np.float32)
    w = np.zeros((32, 32), np.float32)
    w[::5, ::3] = 1
    img[w == 0] = 7.0  # garbage where unknown
    out = push_pull_fill(img, w)
    np.testing.assert_allclose(out, 0.25, atol=1e-5)


def test_textured_obj_opens_with_its_texture(tmp_path):
    m = trimesh.creation.icosphere(2)
    at = uv_atlas(m.vertices, m.faces, 64)
    tex = np.zeros((64, 64, 3), np.uint8)
    tex[..., 0] = 200
    p = write_textured_obj(tmp_path / "a.obj", m.vertices, m.faces, at.face_uvs.numpy(), tex)
    assert (tmp_path / "a.mtl").exists() and (tmp_path / "a_albedo.png").exists()
    back = trimesh.load(p, process=False)
    assert back.visual.kind == "texture" and back.visual.uv is not None
    assert np.asarray(back.visual.material.image).shape[:2] == (64, 64)
