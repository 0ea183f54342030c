"""Implicit helpers (MeshSDF, narrow-band marching cubes) and the canonical clothed mesh."""

import numpy as np
import pytest
import torch
import trimesh

from foundation.geometry.sdf import signed_distance
from synthetic.clothing import SKIN_LABEL
from synthetic.garments import Outfit, random_outfit
from synthetic.implicit import MeshSDF, component_labels, extract_narrow_band


def _mesh(m):
    return torch.tensor(m.vertices, dtype=torch.float32), torch.tensor(m.faces, dtype=torch.long)


@pytest.mark.parametrize("make", [lambda: trimesh.creation.icosphere(2, 0.5),
                                  lambda: trimesh.creation.box(extents=(0.6, 0.4, 0.8)),
                                  lambda: trimesh.creation.torus(0.5, 0.2, major_sections=24, minor_sections=12)],
                         ids=["sphere", "box", "torus"])
def test_mesh_sdf_matches_reference(make):
    verts, faces = _mesh(make())
    pts = torch.rand(1000, 3, generator=torch.Generator().manual_seed(0)) * 1.8 - 0.9
    q = MeshSDF(verts, faces).query(pts)
    ref = signed_distance(pts, verts, faces, backend="torch")
    assert (q.sdf - ref.sdf).abs().max() < 1e-4  # same distances and signs (pseudo-normal sign is exact here)
    assert torch.allclose((pts - q.closest).norm(dim=-1), q.sdf.abs(), atol=1e-5)
    assert torch.allclose(q.interpolate(faces, verts), q.closest, atol=1e-5)


def test_narrow_band_sphere_is_watertight_and_accurate():
    r = 0.3
    v, f = extract_narrow_band(lambda p: p.norm(dim=-1) - r, np.full(3, -0.4), np.full(3, 0.4), 0.01, levels=2)
    m = trimesh.Trimesh(v, f, process=False)
    assert m.is_watertight and m.is_winding_consistent
    assert m.volume > 0  # outward orientation
    assert abs(np.linalg.norm(v, axis=1) - r).max() < 2e-3
    assert abs(m.volume - 4 / 3 * np.pi * r**3) / m.volume < 0.02


def test_narrow_band_rejects_a_surface_touching_the_box():
    with pytest.raises(ValueError, match="touches the box"):
        extract_narrow_band(lambda p: p.norm(dim=-1) - 0.5, np.full(3, -0.4), np.full(3, 0.4), 0.02, levels=1)


def test_clothed_mesh_is_watertight_and_encloses_the_body(clothed, rest_body, anny_body):
    m = trimesh.Trimesh(clothed.verts.numpy(), clothed.faces.numpy(), process=False)
    assert m.is_watertight and m.is_winding_consistent and m.volume > 0
    body = trimesh.Trimesh(rest_body.rest_vertices[0].numpy(), anny_body.faces.numpy(), process=False)
    assert m.volume > body.volume * 1.5  # garments + a flared skirt add volume
    # every vertex of the body proper (Anny's eyeballs / teeth are separate parts) lies inside the clothed
    # surface or within 2 mm of it (marching cubes at 5 mm on thin ears)
    flab = component_labels(anny_body.faces.numpy(), anny_body.num_verts)
    main = np.unique(anny_body.faces.numpy()[flab == np.bincount(flab).argmax()])
    d = signed_distance(rest_body.rest_vertices[0][main], clothed.verts, clothed.faces).sdf
    assert (d < 0.002).float().mean() > 0.999
    assert d.max() < 0.005


def test_clothed_attributes(clothed, subject):
    V = clothed.verts.shape[0]
    assert clothed.colors.shape == (V, 3) and clothed.colors.dtype == torch.uint8
    assert clothed.weights.shape == (V, 55)
    assert torch.allclose(clothed.weights.sum(1), torch.ones(V), atol=1e-4)
    labels = set(clothed.labels.unique().tolist())
    kinds = [g.kind for g in subject.outfit.garments]
    for k in ("skirt", "jacket", "hair", "shoes"):
        assert kinds.index(k) in labels, k
    assert SKIN_LABEL in labels
    # skirt points below the hips follow both legs
    from foundation.body.skeleton import JOINT_INDEX

    skirt = (clothed.labels == kinds.index("skirt")) & (clothed.verts[:, 1] < -0.25)
    w = clothed.weights[skirt]
    legs = w[:, [JOINT_INDEX[n] for n in ("left_hip", "right_hip", "left_knee", "right_knee")]].sum(1)
    assert skirt.sum() > 100 and legs.mean() > 0.5


def test_pose_is_lbs(clothed, anny_body, subject):
    from foundation.body.lbs import skin_points

    p = anny_body.zero_params(2)
    p.betas = subject.betas_tensor().expand(2, -1)
    p.body_pose[1, 15] = torch.tensor([0.0, 0.0, 1.0])
    with torch.no_grad():
        out = anny_body(p)
    posed = clothed.pose(out.joint_transforms)
    assert torch.allclose(posed[0], clothed.verts, atol=1e-5)  # zero pose = canonical
    ref = skin_points(clothed.verts[None], clothed.weights, out.joint_transforms[1:])
    assert torch.allclose(posed[1:], ref, atol=1e-6)


def test_outfit_json_roundtrip_and_determinism():
    a = random_outfit(np.random.default_rng(3))
    assert random_outfit(np.random.default_rng(3)) == a
    assert Outfit.from_json(a.to_json()) == a


def test_loose_outfits_have_their_garments():
    from synthetic.garments import LOOSE_STYLES, random_loose_outfit

    kinds = {}
    for i, style in enumerate(LOOSE_STYLES):
        o = random_loose_outfit(np.random.default_rng(i), style)
        kinds[style] = [g.kind for g in o.garments]
        assert o.to_json() == random_loose_outfit(np.random.default_rng(i), style).to_json()  # deterministic
    long_skirts = [g for s in ("long_skirt", "dress") for g in random_loose_outfit(np.random.default_rng(3), s).garments
                   if g.kind == "skirt"]
    assert all(g.extent >= 0.8 and g.flare >= 0.25 for g in long_skirts)
    assert "jacket" in kinds["closed_coat"] and "skirt" in kinds["closed_coat"] and "trousers" in kinds["closed_coat"]
    coat = [g for g in random_loose_outfit(np.random.default_rng(0), "open_coat").garments if g.kind == "skirt"][0]
    assert coat.neck_depth > 0  # the open front
    wide = [g for g in random_loose_outfit(np.random.default_rng(0), "wide_trousers").garments if g.kind == "trousers"][0]
    assert wide.flare > 0.04
    with pytest.raises(ValueError, match="style must be one of"):
        random_loose_outfit(np.random.default_rng(0), "kilt")


def test_open_coat_hull_leaves_the_front_open(anny_body, rest_body):
    """The open coat's hull below the waist has no surface in a slot at the front centre; closed, it has."""
    from synthetic.clothing import ClothedField
    from synthetic.garments import Garment, Outfit

    rv, rj = rest_body.rest_vertices[0], rest_body.rest_joints[0]
    fields = {}
    for w in (0.0, 0.08):
        coat = Garment("skirt", thickness=0.01, extent=0.7, hem=0.02, flare=0.3, neck_depth=w, seed=7)
        fields[w] = ClothedField(rv, anny_body.faces, anny_body.lbs_weights, rj, Outfit((coat,)))
    hull_c, hull_o = fields[0.0].skirt, fields[0.08].skirt
    y = hull_c.hem_y + 0.1  # near the hem, in the gap between the legs
    # in front of the legs' centre, just inside the closed hull's front wall
    z_front = torch.linspace(hull_c.cz, hull_c.cz + 0.6, 200)
    p = torch.stack([torch.zeros(200), torch.full((200,), y), z_front], -1)
    dc, do = hull_c(p), hull_o(p)
    assert bool((dc < 0).any())  # the closed coat is there in front
    assert bool((do[z_front > hull_c.cz + 0.02] > 0).all())  # the open one is not
    back = torch.stack([torch.full((200,), 0.0), torch.full((200,), y), torch.linspace(hull_c.cz - 0.6, hull_c.cz, 200)], -1)
    assert bool((hull_o(back) < 0).any())  # its back is still closed
