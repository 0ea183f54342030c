"""Pose-space deformation: per-frame residuals as a function of the pose."""

import math

import numpy as np
import pytest
import torch

from avatar.pose_space import REGION_JOINTS, PoseSpaceDeformation, PoseTexture, body_regions, pose_space_features


def _poses(n: int, seed: int, scale: float = 0.4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, 55, 3, generator=g)


def test_training_poses_get_their_own_residuals_and_far_poses_none():
    """At full rank and a narrow kernel each training pose gets its own residual back; a pose far from every
    training one gets (almost) nothing, so a motion unlike the video plays the static avatar."""
    g = torch.Generator().manual_seed(1)
    res = 0.01 * torch.randn(6, 50, 3, generator=g)
    rot = _poses(6, 2)
    psd = PoseSpaceDeformation.from_residuals(res, rot, rank=6, bandwidth=0.05, falloff=1e-6)
    assert psd.rank == 6 and psd.explained(res) == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(psd.offsets(rot), res, atol=1e-5, rtol=1e-4)
    near = _poses(6, 2, scale=0.1)  # a cluster of training poses; every joint bent 90 degrees is far from it
    far = near[:1].clone()
    far[:, 1:22] = torch.tensor([0.0, 0.0, math.pi / 2])
    psd_far = PoseSpaceDeformation.from_residuals(res, near, rank=6)
    assert float(psd_far.offsets(near[:1]).abs().max()) > 0.1 * float(res.abs().max())
    assert float(psd_far.offsets(far).abs().max()) < 1e-3 * float(res.abs().max())
    # the global orientation does not count: the same body pose facing elsewhere gets the same offsets
    turned = near[:2].clone()
    turned[:, 0] += torch.tensor([0.0, 1.5, 0.0])
    torch.testing.assert_close(psd_far.offsets(turned), psd_far.offsets(near[:2]))


def test_rank_and_bandwidth():
    """A lower rank keeps less of the residuals' energy; the default bandwidth is the median nearest-pose distance;
    the weights between training poses blend their residuals and are differentiable in the pose."""
    g = torch.Generator().manual_seed(3)
    res = torch.randn(8, 40, 3, generator=g)
    rot = _poses(8, 4)
    low = PoseSpaceDeformation.from_residuals(res, rot, rank=2)
    assert low.rank == 2 and 0.0 < low.explained(res) < 0.7
    f = pose_space_features(rot)
    d = torch.cdist(f, f) + torch.eye(8) * 1e9
    assert low.bandwidth == pytest.approx(float(d.min(1).values.median()), rel=1e-5)
    half = PoseSpaceDeformation.from_residuals(res, rot, rank=2, bandwidth_scale=0.5)
    assert half.bandwidth == pytest.approx(0.5 * low.bandwidth)
    assert low.falloff == pytest.approx(math.exp(-2.0))
    mid = (0.5 * (rot[0] + rot[1]))[None].requires_grad_(True)
    w = low.frame_weights(mid)
    assert w.shape == (1, 8, 1) and float(w.detach().sum()) < 1.0 and float(w.detach()[0, :2].sum()) > 0.0
    low.offsets(mid).square().sum().backward()
    assert mid.grad is not None and float(mid.grad[0, 1:22].abs().sum()) > 0 and float(mid.grad[0, 22:].abs().sum()) == 0


def test_tensors_round_trip_and_bad_input():
    res = torch.randn(3, 10, 3)
    psd = PoseSpaceDeformation.from_residuals(res, _poses(3, 5), rank=8)
    assert psd.rank == 3  # no more components than frames
    back = PoseSpaceDeformation.from_tensors(psd.tensors())
    assert back.bandwidth == psd.bandwidth and back.falloff == psd.falloff
    torch.testing.assert_close(back.offsets(_poses(2, 6)), psd.offsets(_poses(2, 6)))
    # a file written before the regions (one width in "params", no region tensors) loads as one region
    old = {k: v for k, v in psd.tensors().items() if k.split(".")[1] in ("features", "codes", "basis")}
    old["pose_space.params"] = torch.tensor([psd.bandwidth, psd.falloff], dtype=torch.float64)
    torch.testing.assert_close(PoseSpaceDeformation.from_tensors(old).offsets(_poses(2, 6)), psd.offsets(_poses(2, 6)))
    assert PoseSpaceDeformation.from_tensors({}) is None
    with pytest.raises(ValueError, match="3 residuals but 2 poses"):
        PoseSpaceDeformation.from_residuals(res, _poses(2, 5))


def _regions(V: int) -> tuple[torch.Tensor, list]:
    """Skinning weights of ``V`` vertices split between the left arm's shoulder (first half) and the right
    leg's knee (second half), and their regions."""
    W = torch.zeros(V, 55)
    W[: V // 2, 16] = 1.0
    W[V // 2 :, 5] = 1.0
    return W, body_regions(W)


def test_regions_blend_each_part_from_the_frames_whose_joints_match():
    """Region weights come from the region's own joints: a new pose with frame 0's left arm and frame 1's right
    leg gets frame 0's residual on the arm and frame 1's on the leg (one global kernel blends both frames
    everywhere); the masks add up to one; the regional deformation saves and loads."""
    V = 40
    W, regs = _regions(V)
    assert len(regs) == len(REGION_JOINTS)
    torch.testing.assert_close(sum(m for m, _ in regs), torch.ones(V))
    rot = torch.zeros(4, 55, 3)
    rot[:, 16] = torch.tensor([[0.0, 0.0, 1.2], [0.0, 0.0, -0.4], [0.0, 0.0, 0.3], [0.0, 0.0, -1.0]])
    rot[:, 5] = torch.tensor([[1.1, 0.0, 0.0], [0.1, 0.0, 0.0], [-0.6, 0.0, 0.0], [0.6, 0.0, 0.0]])
    g = torch.Generator().manual_seed(7)
    res = 0.01 * torch.randn(4, V, 3, generator=g)
    psd = PoseSpaceDeformation.from_residuals(res, rot, rank=4, bandwidth=0.05, falloff=1e-6, regions=regs)
    assert psd.regions == len(REGION_JOINTS) and psd.rank == 4 * psd.regions
    torch.testing.assert_close(psd.offsets(rot), res, atol=1e-5, rtol=1e-4)  # each frame its own, everywhere
    mixed = rot[:1].clone()
    mixed[:, 5] = rot[1, 5]  # frame 0's arm, frame 1's knee
    out = psd.offsets(mixed)[0]
    torch.testing.assert_close(out[: V // 2], res[0, : V // 2], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out[V // 2 :], res[1, V // 2 :], atol=1e-5, rtol=1e-4)
    glob = PoseSpaceDeformation.from_residuals(res, rot, rank=4, bandwidth=0.05, falloff=1e-6)
    assert float((glob.offsets(mixed)[0] - out).abs().max()) > 1e-3
    back = PoseSpaceDeformation.from_tensors(psd.tensors())
    torch.testing.assert_close(back.offsets(mixed), psd.offsets(mixed))
    with pytest.raises(ValueError, match="55 joints"):
        body_regions(W[:, :24])


def test_pose_texture_pools_cells_and_blends_the_frames_by_weight():
    """An 8 x 8 texture on 4 x 4 cells (2 x 2 texels each): frame 0 saw +0.2 everywhere, frame 1 -0.2 on the left
    half only; a pose weighted to one frame gets that frame's correction (shrunk by the prior), none gets nothing."""
    R = 8
    texels = torch.arange(R * R)
    col = texels % R
    res = [torch.full((R * R, 3), 0.2), torch.full((R * R, 3), -0.2)]
    wts = [torch.ones(R * R), (col < R // 2).float()]
    pt = PoseTexture.from_observations(texels, R, 4, res, wts, torch.ones(R * R, 1), prior=0.01)
    assert pt.frames == 2 and len(pt.cells) == 16
    shrink = 4 / (4 + 0.01 * 4)
    c0 = pt.correction(torch.tensor([[1.0], [0.0]]), R)
    assert c0.shape == (R, R, 3) and np.allclose(c0, 0.2 * shrink, atol=2e-3)
    c1 = pt.correction(torch.tensor([[0.0], [1.0]]), R)
    assert np.allclose(c1[:, :3], -0.2 * shrink, atol=2e-3)  # the left cells (bilinear up-sampling blurs the middle)
    assert np.allclose(c1[:, -3:], 0.0, atol=1e-6)  # frame 1 never saw the right half
    assert np.allclose(pt.correction(torch.zeros(2, 1), R), 0.0)
    tex = np.full((R, R, 3), 100, np.uint8)
    assert int(pt.apply(tex, torch.tensor([[1.0], [0.0]])).min()) == 100 + round(0.2 * shrink * 255)
    back = PoseTexture.from_tensors(pt.tensors())
    assert back.size == 4 and back.prior == pytest.approx(0.01)
    mix = torch.tensor([[0.3], [0.7]])
    np.testing.assert_allclose(back.correction(mix, R), pt.correction(mix, R))
    assert PoseTexture.from_tensors({}) is None
    with pytest.raises(ValueError, match="do not divide"):
        PoseTexture.from_observations(texels, R, 3, res, wts, torch.ones(R * R, 1))
    with pytest.raises(ValueError, match="expected"):
        pt.correction(torch.ones(3, 1), R)
