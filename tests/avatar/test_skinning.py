import numpy as np
import torch

from foundation.body.lbs import invert_skinning, skin_points
from avatar.canonicalize import Samples, canonicalize, sample_colored_surface, skin, train_skinning, unskin
from avatar.fields import BodySkinPrior, SkinningField, pose_features, spread_matrix
from tests.fixtures.toy import random_poses


def test_skin_unskin_round_trip(anny_body):
    body = anny_body
    params = random_poses(body, 3, seed=1)
    params.transl = torch.tensor([[0.2, 0.9, -0.1], [0.0, 1.0, 0.5], [-0.3, 0.8, 0.0]])
    with torch.no_grad():
        out = body(params)
    x = out.rest_vertices[0]
    W = body.lbs_weights
    posed = skin_points(x.expand(3, -1, -1), W, out.joint_transforms)
    np.testing.assert_allclose(posed.numpy(), out.vertices.numpy(), atol=1e-5)  # same LBS as the body model
    back = invert_skinning(posed, W, out.joint_transforms)
    assert (back - x).norm(dim=-1).max() < 1e-4
    # per-point helpers (each point with its own frame)
    fr = torch.randint(3, (500,))
    idx = torch.randint(len(x), (500,))
    xp = skin(x[idx], W[idx], out.joint_transforms[fr])
    assert (unskin(xp, W[idx], out.joint_transforms[fr]) - x[idx]).norm(dim=-1).max() < 1e-4


def test_body_skin_prior(anny_body):
    W = anny_body.lbs_weights
    rest = anny_body(anny_body.zero_params(1)).rest_vertices[0]
    prior = BodySkinPrior(rest, W, k=8, sigma=0.005)
    idx = torch.arange(0, len(rest), 37)
    w = prior(rest[idx])
    assert torch.allclose(w.sum(1), torch.ones(len(idx)), atol=1e-5)
    assert (w - W[idx]).abs().sum(1).median() < 0.05  # on the body: the body's own weights
    far = prior(rest[idx] + torch.tensor([0.0, 0.0, 0.3]))  # 30 cm in front: smooth blend, still normalised
    assert torch.allclose(far.sum(1), torch.ones(len(idx)), atol=1e-5)


def test_pose_features_masked_by_weights():
    W = torch.zeros(2, 55)
    W[0, 18] = 1.0  # left elbow
    W[1, 0] = 1.0  # pelvis
    theta = torch.randn(55, 3)
    f = pose_features(W, theta, spread_matrix()).reshape(2, 21, 3)
    active0 = set(torch.nonzero(f[0].abs().sum(-1))[:, 0].tolist())
    assert active0 == {15, 17, 19}  # shoulder, elbow, wrist (joints 16, 18, 20 -> indices minus 1)
    active1 = set(torch.nonzero(f[1].abs().sum(-1))[:, 0].tolist())
    assert active1 == {0, 1, 2}  # hips and spine1


def _samples(recon, n=600, seed=0):
    rng = np.random.default_rng(seed)
    pts, nrm, col, fid = [], [], [], []
    for k, fr in enumerate(recon.frames):
        p, nn, c, _ = sample_colored_surface(fr.verts, fr.faces, fr.colors, n, rng)
        pts.append(p), nrm.append(nn), col.append(c), fid.append(np.full(n, k))
    cat = lambda a: torch.from_numpy(np.concatenate(a))  # noqa: E731
    return Samples(cat(pts), cat(nrm), cat(col), cat(fid).long())


def test_canonicalize_recovers_canonical_surface(anny_body, toy):
    """Toy posed surfaces un-skinned with the (trained) fields land on the known canonical surface."""
    from foundation.geometry.sdf import signed_distance

    subject, recon = toy
    body = anny_body
    with torch.no_grad():
        out = body(recon.params)
    rest = out.rest_vertices[0]
    W = body.lbs_weights
    s = _samples(recon)
    prior_c = BodySkinPrior(rest, W)
    priors_p = [BodySkinPrior(out.vertices[t], W) for t in range(len(recon.frames))]
    center, scale = rest.mean(0), 1.0
    fc, fp = train_skinning(s, out.joint_transforms, prior_c, priors_p, rest, out.vertices, W,
                            _cfg(), center, scale)
    xc, nc, wc, err = canonicalize(s, out.joint_transforms, fc, fp, prior_c, priors_p, refine_iters=2)
    assert err.median() < 1e-3  # cycle: skinning the canonical points returns the posed ones
    d = signed_distance(xc, subject.canonical_verts, subject.faces).sdf.abs()
    assert d.median() < 0.005, d.median()  # on the true canonical clothed surface
    assert torch.allclose(nc.norm(dim=-1), torch.ones(len(nc)), atol=1e-4)


def _cfg():
    from avatar.canonicalize import SkinningConfig

    return SkinningConfig(iters=10, batch=512, hidden=32, layers=2, latent_dim=4)


def test_skinning_field_starts_at_prior():
    f = SkinningField(torch.zeros(3), 1.0, 55, 16, 2, 2)
    prior = torch.softmax(torch.randn(10, 55), -1)
    w = f(torch.randn(10, 3), prior)
    assert torch.allclose(w, (prior + 1e-3) / (prior + 1e-3).sum(1, keepdim=True), atol=1e-5)
