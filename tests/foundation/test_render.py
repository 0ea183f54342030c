"""foundation.render: the one mesh renderer (lambert / flat / normals) on a sphere in front of the camera."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from foundation.camera import Camera
from foundation.render import HEADLIGHT, normals_to_rgb, render_hits, render_mesh, shade_hits

S = 64  # image side


@pytest.fixture(scope="module")
def sphere():
    m = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    return torch.tensor(m.vertices, dtype=torch.float32), torch.tensor(m.faces, dtype=torch.long)


@pytest.fixture(scope="module")
def cam():
    """Camera on +Z looking at the sphere centre (world origin): image right = world +X, image up = +Y."""
    return Camera.look_at((0.0, 0.0, 3.0), (0.0, 0.0, 0.0), width=S, height=S, fov_deg=30.0)


def test_flat_reproduces_a_uniform_colour(sphere, cam):
    v, f = sphere
    colour, bg = (10, 120, 250), (1, 2, 3)
    img, mask = render_mesh(v, f, cam, np.tile(np.array(colour, np.uint8), (len(v), 1)), shading="flat",
                            background=bg)
    assert img.shape == (S, S, 3) and img.dtype == np.uint8 and mask.dtype == bool
    assert 0.2 < mask.mean() < 0.6  # the sphere covers the middle, not the corners
    assert mask[S // 2, S // 2] and not mask[0, 0]
    assert (img[mask] == colour).all()
    assert (img[~mask] == bg).all()


def test_normals_face_the_camera_at_the_centre(sphere, cam):
    v, f = sphere
    img, mask = render_mesh(v, f, cam, shading="normals", background=(0, 0, 0))
    c = img[S // 2 - 1 : S // 2 + 1, S // 2 - 1 : S // 2 + 1].reshape(-1, 3).astype(int)
    assert (c[:, 2] > 250).all()  # world +Z, towards the camera: blue
    assert (np.abs(c[:, :2] - 128) < 12).all()
    # world +X on the image's right: more red there; +Y up: more green at the top
    row, col = img[S // 2], img[:, S // 2]
    xs, ys = np.flatnonzero(mask[S // 2]), np.flatnonzero(mask[:, S // 2])
    assert int(row[xs[-1], 0]) - int(row[xs[0], 0]) > 150
    assert int(col[ys[0], 1]) - int(col[ys[-1], 1]) > 150


def test_lambert_is_brighter_facing_the_light(sphere, cam):
    v, f = sphere
    grey = np.full((len(v), 3), 200, np.uint8)
    img, mask = render_mesh(v, f, cam, grey, light=torch.tensor([1.0, 0.0, 0.0]), ambient=0.3)
    xs = np.flatnonzero(mask[S // 2])
    right, left = img[S // 2, xs[-3]].astype(int), img[S // 2, xs[2]].astype(int)
    assert (right > left + 60).all()
    # facing away from the light: the ambient term alone
    np.testing.assert_allclose(left, 200 * 0.3, atol=1)
    # the same light from the other side mirrors the image
    img2, _ = render_mesh(v, f, cam, grey, light=torch.tensor([-1.0, 0.0, 0.0]), ambient=0.3)
    assert img2[S // 2, xs[2]].astype(int).min() > right.min() - 10
    # a fill light lifts the shadowed side only
    img3, _ = render_mesh(v, f, cam, grey, light=torch.tensor([1.0, 0.0, 0.0]), ambient=0.3, fill=0.2)
    assert (img3[S // 2, xs[2]].astype(int) > left + 10).all()
    assert np.abs(img3[S // 2, xs[-3]].astype(int) - right).max() <= 1
    # a specular highlight adds white on the lit side
    img4, _ = render_mesh(v, f, cam, grey, light=torch.tensor([0.0, 0.0, 1.0]), specular=0.5)
    img5, _ = render_mesh(v, f, cam, grey, light=torch.tensor([0.0, 0.0, 1.0]))
    assert img4[S // 2, S // 2, 0] > img5[S // 2, S // 2, 0] + 40


def test_headlight_lights_what_the_camera_sees(sphere):
    v, f = sphere
    side = Camera.look_at((3.0, 0.0, 0.0), (0.0, 0.0, 0.0), width=S, height=S, fov_deg=30.0)  # on +X
    hits = render_hits(v, f, side)
    lit = shade_hits(v, f, hits, light=HEADLIGHT, camera=side, ambient=0.25)
    assert lit.shape == (int(hits.mask.sum()), 3)
    assert float(lit.min()) >= 0.25 - 1e-6 and float(lit.max()) <= 1 + 1e-5
    img = torch.zeros(S, S)
    img[hits.mask] = lit[:, 0]
    assert img[S // 2, S // 2] > 0.98  # the centre faces the camera
    assert img[S // 2, S // 2] > img[S // 2, np.flatnonzero(hits.mask[S // 2].numpy())[1]] + 0.3
    with pytest.raises(ValueError, match="camera"):
        shade_hits(v, f, hits, light=HEADLIGHT)


def test_faceted_shading_is_constant_per_face(sphere, cam):
    v, f = sphere
    hits = render_hits(v, f, cam)
    lit = shade_hits(v, f, hits, light=HEADLIGHT, camera=cam, ambient=0.25, two_sided=True, smooth=False)[:, 0]
    fi = hits.face_idx[hits.mask]
    for face in fi.unique()[:50]:
        vals = lit[fi == face]
        assert torch.equal(vals, vals[:1].expand_as(vals))
    # two-sided: the inside-out sphere gets the same light
    lit_flipped = shade_hits(v, f[:, [0, 2, 1]], hits, light=HEADLIGHT, camera=cam, ambient=0.25, two_sided=True,
                             smooth=False)[:, 0]
    torch.testing.assert_close(lit_flipped, lit)


def test_supersampling_coverage_and_float_colours(sphere, cam):
    v, f = sphere
    col = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (len(v), 3), dtype=np.uint8))
    img1, mask = render_mesh(v, f, cam, col)
    # float colours in [0, 1] give the same image up to rounding
    img_f, _ = render_mesh(v, f, cam, col.float() / 255.0)
    assert np.abs(img_f.astype(int) - img1).max() <= 1
    img2, cov = render_mesh(v, f, cam, col, ssaa=2, background=np.zeros((S, S, 3), np.float32))
    assert cov.dtype == np.float32 and cov.shape == (S, S)
    assert (cov[~mask] < 1).all() and (cov[mask] > 0).all()
    edge = (cov > 0) & (cov < 1)
    assert edge.any() and (cov[S // 2 - 5 : S // 2 + 5, S // 2 - 5 : S // 2 + 5] == 1).all()
    assert (img2[cov == 0] == 0).all()  # the black background image shows where nothing is hit


def test_bad_options_raise(sphere, cam):
    v, f = sphere
    with pytest.raises(ValueError, match="shading"):
        render_mesh(v, f, cam, shading="phong")
    hits = render_hits(v, f, cam)
    with pytest.raises(ValueError, match="shading"):
        shade_hits(v, f, hits, shading="toon")
    with pytest.raises(ValueError, match="two_sided"):
        shade_hits(v, f, hits, fill=0.1, two_sided=True)
    with pytest.raises(ValueError, match="light"):
        shade_hits(v, f, hits, light="sun")


def test_normals_to_rgb():
    n = np.zeros((2, 2, 3), np.float32)
    n[0, 0] = (0, 0, 1)
    n[1, 1] = (-1, 0, 0)
    rgb = normals_to_rgb(n, background=7)
    assert rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (128, 128, 255) and tuple(rgb[1, 1]) == (0, 128, 128)
    assert tuple(rgb[0, 1]) == (7, 7, 7)


def test_side_view_shows_the_depth_the_view_hides():
    """A slab thin across the view and deep along it: narrow in the view, wide from the side (the camera's up
    kept: tall in both); the side render is framed on the mesh and is normal-shaded by default."""
    box = trimesh.creation.box(extents=(0.1, 1.0, 0.6))  # x across, y up, z along the view
    v, f = torch.as_tensor(box.vertices, dtype=torch.float32), torch.as_tensor(box.faces, dtype=torch.long)
    view = Camera.look_at((0, 0, 4.0), (0, 0, 0), width=64, height=64, fov_deg=30)
    from foundation.render import side_view

    front = render_mesh(v, f, view)[1]
    side = side_view(v, f, view, 64)
    cover = (side != 255).any(-1)

    def width_height(m):
        ys, xs = np.nonzero(m)
        return xs.max() - xs.min() + 1, ys.max() - ys.min() + 1

    fw, fh = width_height(front)
    sw, sh = width_height(cover)
    assert fw < 0.3 * fh  # the view sees the slab edge-on
    assert 0.45 < sw / sh < 0.75  # the side sees its 0.6 x 1.0 face
    assert sh > 0.35 * 64  # framed on the mesh
