"""Rendered samples: maps agree with the mesh, occupancy labels, save/load; poses and motions."""

import numpy as np
import pytest
import torch

from foundation.geometry.normals import face_normals
from foundation.geometry.sdf import winding_number
from synthetic.poses import ARCHETYPES, keyframe_motion, random_pose
from synthetic.render import render_hits
from synthetic.sample import SampleConfig, SyntheticSample, make_synthetic_sample

CFG = SampleConfig(image_size=128, n_surface=600, n_uniform=200, ssaa=2)


@pytest.fixture(scope="module")
def sample(anny_body, subject, clothed):
    with torch.no_grad():
        return make_synthetic_sample(7, CFG, anny_body, subject=subject, clothed=clothed)


def test_sample_fields(sample):
    S = CFG.image_size
    assert sample.image.shape == (S, S, 3) and sample.image.dtype == np.uint8
    assert sample.mask.shape == (S, S) and sample.mask.dtype == bool and 0.05 < sample.mask.mean() < 0.8
    for n in (sample.normal_front, sample.normal_back, sample.body_normal_front, sample.body_normal_back):
        assert n.shape == (S, S, 3)
    hit = np.abs(sample.normal_front).sum(-1) > 0
    assert (hit == sample.mask).all()
    assert np.allclose(np.linalg.norm(sample.normal_front[hit], axis=-1), 1, atol=1e-4)
    body_hit = np.abs(sample.body_normal_front).sum(-1) > 0
    assert body_hit.sum() < hit.sum() and (body_hit & ~hit).mean() < 0.002  # clothes cover the body
    assert sample.camera.ortho and sample.camera.width == S
    assert sample.occ_points.shape == (800, 3) and sample.occ_labels.dtype == bool
    assert 0.05 < sample.occ_labels.mean() < 0.95
    assert sample.params.batch_size == 1


def test_normal_maps_agree_with_the_mesh(sample):
    """Front normals face the viewer and match the normals of the hit triangles; back maps face away."""
    v = torch.from_numpy(sample.clothed_verts)
    f = torch.from_numpy(sample.clothed_faces)
    hits = render_hits(v, f, sample.camera)
    assert (hits.mask.numpy() == sample.mask).all()
    fn = face_normals(v, f)[hits.face_idx[hits.mask]] @ sample.camera.view_rotation().T
    n = torch.from_numpy(sample.normal_front[sample.mask])
    cos = (fn * n).sum(-1)
    assert (cos > 0.9).float().mean() > 0.95
    assert (n[:, 2] > 0).float().mean() > 0.97
    nb = sample.normal_back[sample.mask]
    assert (nb[:, 2] < 0).mean() > 0.97
    # the body maps likewise (the posed body mesh)
    bm = np.abs(sample.body_normal_front).sum(-1) > 0
    assert (sample.body_normal_front[bm][:, 2] > 0).mean() > 0.97


def test_image_shows_the_person_on_the_background(sample):
    img = sample.image.astype(float)
    inner = sample.mask.copy()
    for ax in (0, 1):  # erode by one pixel (anti-aliased edges)
        inner &= np.roll(sample.mask, 1, ax) & np.roll(sample.mask, -1, ax)
    assert img[inner].std() > 5 and img[~sample.mask].std() >= 0


def test_occupancy_labels_match_the_exact_winding_number(sample):
    pts = torch.from_numpy(sample.occ_points[::20])
    w = winding_number(pts, torch.from_numpy(sample.clothed_verts), torch.from_numpy(sample.clothed_faces), chunk=2**22)
    assert ((w > 0.5).numpy() == sample.occ_labels[::20]).mean() > 0.97


def test_save_load_roundtrip(sample, tmp_path):
    sample.save(tmp_path / "s.npz")
    s2 = SyntheticSample.load(tmp_path / "s.npz")
    assert (s2.image == sample.image).all() and (s2.mask == sample.mask).all()
    assert np.allclose(s2.normal_back, sample.normal_back, atol=1e-3)
    assert np.array_equal(s2.clothed_faces, sample.clothed_faces)
    assert s2.camera == sample.camera and s2.subject == sample.subject and s2.archetype == sample.archetype
    assert torch.equal(s2.params.body_pose, sample.params.body_pose)
    with pytest.raises(FileNotFoundError):
        SyntheticSample.load(tmp_path / "missing.npz")


def test_random_poses_are_plausible():
    rng = np.random.default_rng(0)
    names = set()
    for _ in range(60):
        orient, pose, lh, rh, name = random_pose(rng)
        names.add(name)
        assert pose.shape == (21, 3) and lh.shape == (15, 3) and np.isfinite(pose).all()
        assert np.linalg.norm(pose, axis=-1).max() < 3.0
    assert len(names) > 8 and names <= set(ARCHETYPES)


@pytest.mark.parametrize("motion", ["walk_turn", "arms_squat"])
def test_keyframe_motion_is_smooth(motion):
    orient, pose = keyframe_motion(motion, 60)
    assert orient.shape == (60, 3) and pose.shape == (60, 21, 3)
    step = np.linalg.norm(np.diff(pose, axis=0), axis=-1).max()
    assert step < 0.25  # radians per frame at 60 frames
