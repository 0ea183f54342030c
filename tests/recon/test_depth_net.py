"""The learned depth prior of the econ surface: reference, network, training and its use as the integration prior."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.depth_net import DEPTH_UNIT, DepthNet, DepthNetConfig, depth_reference, predict_depth


def test_depth_reference_copies_the_nearest_body_pixel():
    d = torch.zeros(2, 6, 8)
    d[0, :, :3] = torch.arange(1.0, 4.0)  # the body covers the left three columns, depth 1, 2, 3
    d[1, :, :3] = torch.arange(1.0, 4.0) + 0.5
    r = depth_reference(d)
    assert torch.equal(r[:, :, :3], d[:, :, :3])  # kept where the body is
    assert bool((r[0, :, 3:] == 3.0).all()) and bool((r[1, :, 3:] == 3.5).all())  # the nearest column elsewhere
    assert torch.equal(depth_reference(d[None])[0], r)  # batched alike
    assert torch.equal(depth_reference(torch.zeros(2, 4, 4)), torch.zeros(2, 4, 4))  # no body: unchanged


def test_untrained_net_returns_the_body_reference_at_the_crop_size():
    """The head starts at zero: the prediction is the body's (filled) depth, at the crop's size, whatever the
    net's own size."""
    net = DepthNet(DepthNetConfig(width=4, levels=2, max_width=8, size=32)).eval()
    S = 64
    bd = torch.zeros(2, S, S)
    bd[0, 16:48, 20:44], bd[1, 16:48, 20:44] = 2.0, 2.3
    mask = torch.zeros(1, S, S)
    mask[:, 10:54, 10:54] = 1
    out = predict_depth(net, torch.rand(3, S, S), mask, torch.zeros(3, S, S), torch.zeros(3, S, S), bd)
    assert out.shape == (2, S, S)
    assert torch.allclose(out, depth_reference(bd), atol=1e-6)


def _record(rng: np.random.Generator, loose: bool):
    """A fake training view: a box-shaped body at 2 m (front) / 2.3 m (back), clothes 2 cm off it, and for
    ``loose`` a skirt to the right of the body whose front lies 12 cm before the nearest body pixel."""
    from recon.data import TrainRecord

    S = 64
    bd = torch.zeros(2, S, S)
    bd[0, 8:56, 16:40], bd[1, 8:56, 16:40] = 2.0, 2.3
    gt = bd.clone()
    gt[0, 8:56, 16:40] -= 0.02
    gt[1, 8:56, 16:40] += 0.02
    mask = (bd[0] > 0).float()[None]
    if loose:
        gt[0, 30:56, 40:58], gt[1, 30:56, 40:58] = 2.0 - 0.12, 2.3 + 0.12
        mask[:, 30:56, 40:58] = 1
    img = torch.rand(3, S, S, generator=torch.Generator().manual_seed(int(rng.integers(1 << 30)))) * 0.1
    img[2] += 0.8 * mask[0]  # blue clothes
    nf = torch.zeros(3, S, S)
    nf[2] = (bd[0] > 0).float()
    gm = (gt[0] > 0).float()[None]
    z = torch.zeros(0)
    return TrainRecord(img, mask, nf, -nf, nf, -nf, gm, gm, None, z, z, z, z, bd, gt)


def test_depth_net_learns_the_clothes_depth_beyond_the_body():
    """Trained briefly on fake views, the net's held-out depth error falls well below the body reference's (the
    reference misses the skirt by 12 cm); the dataset needs records with depth maps."""
    from recon.train import DepthTrainConfig, depth_dataset, train_depth_net

    rng = np.random.default_rng(0)
    recs = [_record(rng, loose=i % 2 == 1) for i in range(8)]
    net, stats = train_depth_net(recs[2:], DepthNetConfig(width=8, levels=2, max_width=16, size=32),
                                 DepthTrainConfig(iters=150, batch=4, lr=3e-3), val=recs[:2])
    assert stats["val_depth_cm_body"] > 3.0
    assert stats["val_depth_cm_net"] < 0.5 * stats["val_depth_cm_body"]
    d = depth_dataset(recs[:1], 32)
    assert d["target"].shape == (1, 2, 32, 32) and bool(d["valid"].any())
    old = recs[0]
    old.gt_depth = None  # a record cached before the depth maps existed
    with pytest.raises(ValueError, match="no depth maps"):
        depth_dataset([old], 32)


def test_learned_prior_moves_the_econ_surface(anny_body, tmp_path):
    """The econ surface follows the depth net: two nets whose output is the body's depth 5 or 15 cm nearer
    (front; 15 cm farther at the back) put the skirt's front apart by most of those 10 cm, one closed component
    each; with the prior's weight at 0 the net is not run."""
    import trimesh

    from foundation.geometry.raycast import raycast
    from recon.normal_net import save_checkpoint
    from recon.refine import RefineConfig
    from recon.stage import ReconConfig, load_models, reconstruct_frame
    from recon.surface import SurfaceConfig
    from tests.fixtures.toy import skirt_scene

    p, cam, body_mask, skirt, img = skirt_scene(anny_body)

    def front_depth(front_units: float, w: float = 0.02):
        net = DepthNet(DepthNetConfig(width=4, levels=2, max_width=8, size=64))
        with torch.no_grad():
            net.head.bias.copy_(torch.tensor([front_units, 1.5]))
        path = tmp_path / f"d{front_units}.safetensors"
        save_checkpoint(net, path, {})
        cfg = ReconConfig(surface="econ", refine=RefineConfig(iters=0), depth_net_ckpt=str(path),
                          econ=SurfaceConfig(depth_prior_weight=w))
        nnet, imp = load_models(cfg)
        res = reconstruct_frame(img, skirt, cam, p, anny_body, nnet, imp, cfg)
        m = trimesh.Trimesh(res.verts, res.faces, process=False)
        assert m.is_watertight and len(m.split(only_watertight=False)) == 1
        hits = raycast(torch.as_tensor(res.verts), torch.as_tensor(res.faces), cam)
        return torch.as_tensor(hits.depth), torch.as_tensor(hits.mask).bool(), res

    near, m_near, r_near = front_depth(-1.5)
    far, m_far, _ = front_depth(-0.5)
    off_body = torch.as_tensor((skirt > 0.5) & (body_mask < 0.5)) & m_near & m_far
    assert int(off_body.sum()) > 100
    assert r_near.view.maps.clothed_depth is not None
    assert float((far - near)[off_body].mean()) > 0.6 * DEPTH_UNIT  # > 6 cm of the 10 the nets differ by
    _, _, r_off = front_depth(-1.5, w=0.0)
    assert r_off.view.maps.clothed_depth is None
