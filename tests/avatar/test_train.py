import dataclasses
import logging

import numpy as np
import pytest
import torch
import trimesh

from avatar.artifact import Avatar
from avatar.fields import CanonicalSDF, ColorField, body_sdf_grid
from avatar.stage import AvatarConfig, train_avatar
from tests.fixtures.toy import tiny_avatar_config
from avatar.train import SDFConfig, sdf_losses, train_sdf


def test_sdf_training_lowers_loss():
    """A sphere prior (r = 0.3) learns an inflated sphere (r = 0.34) with IGR losses."""
    ico = trimesh.creation.icosphere(3, radius=0.3)
    v, f = torch.tensor(ico.vertices, dtype=torch.float32), torch.tensor(ico.faces)
    grid, lo, hi = body_sdf_grid(v, f, voxel=0.04, margin=0.2)
    torch.manual_seed(0)
    sdf = CanonicalSDF(grid, lo, hi, torch.zeros(3), 0.6, hidden=32, layers=2, freqs=2, pose_dim=4)
    color = ColorField(torch.zeros(3), 0.6, hidden=16, layers=1, freqs=2)
    n = torch.nn.functional.normalize(torch.randn(2000, 3), dim=-1)
    x = 0.34 * n
    feat = torch.zeros(2000, 63)
    col = (n * 0.5 + 0.5).clamp(0, 1)
    before = sdf_losses(x, n, feat, sdf)
    assert before["surface"] == pytest.approx(0.04, abs=0.01)  # prior alone: 4 cm off
    losses = train_sdf(x, n, feat, col, sdf, color, SDFConfig(iters=150, batch=512, lr=3e-3))
    after = sdf_losses(x, n, feat, sdf)
    assert after["surface"] < 0.25 * before["surface"], (before, after)
    assert losses["color"] < 0.2


def test_avatar_train_save_load_reproduces(anny_body, toy, tmp_path):
    subject, recon = toy
    av = train_avatar(recon, tiny_avatar_config(), anny_body, frames=[0, 2, 4])
    assert len(av.mesh.verts) > 500 and av.mesh.weights.shape == (len(av.mesh.verts), 55)
    assert trimesh.Trimesh(av.mesh.verts.numpy(), av.mesh.faces.numpy()).volume > 0.02  # a closed body, outward
    held = recon.params[torch.tensor([1, 3])]
    verts = av.pose(held, anny_body)
    av.save(tmp_path / "avatar")
    assert (tmp_path / "avatar" / "avatar.safetensors").exists() and (tmp_path / "avatar" / "canonical.ply").exists()
    back = Avatar.load(tmp_path / "avatar")
    assert torch.equal(back.mesh.faces, av.mesh.faces)
    torch.testing.assert_close(back.pose(held, anny_body), verts)
    assert back.color is None and torch.equal(back.mesh.colors, av.mesh.colors)  # colours baked from samples
    assert back.stats["train_frames"] == [0, 2, 4]
    # the baked colours are the subject's: compare with the nearest canonical toy vertex
    from scipy.spatial import cKDTree

    _, j = cKDTree(subject.canonical_verts.numpy()).query(av.mesh.verts.numpy())
    err = np.abs(av.mesh.colors.numpy().astype(float) - subject.colors[j].astype(float)).mean()
    assert err < 20.0, err
    # held-out poses: the avatar is near the true clothed surface (coarse settings)
    from foundation.metrics import chamfer_cm

    gt = subject.posed(anny_body, held)
    assert chamfer_cm(verts[0].numpy(), av.mesh.faces.numpy(), gt[0].numpy(), subject.faces.numpy(), n=5000) < 2.5


def test_avatar_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an avatar directory"):
        Avatar.load(tmp_path)


def test_resume_after_crash(anny_body, toy, tmp_path, caplog):
    """Resume (with the colour *field* trained alongside the SDF, color_mode="field")."""
    from avatar.train import Checkpointer

    _, recon = toy
    cfg = tiny_avatar_config(color_mode="field")
    cfg = dataclasses.replace(cfg, sdf=dataclasses.replace(cfg.sdf, iters=30, checkpoint_every=10))

    class Crash(RuntimeError):
        pass

    class CrashingLogger:
        def log_scalars(self, d, step=None):
            if "avatar/sdf_total" in d and step is not None and step >= 20:
                raise Crash()

    ck = tmp_path / "ckpt"
    with pytest.raises(Crash):
        train_avatar(recon, cfg, anny_body, CrashingLogger(), ck, frames=[0, 3])
    assert (ck / "train_state.pt").exists()
    with caplog.at_level(logging.INFO, logger="avatar.train"):
        av = train_avatar(recon, cfg, anny_body, None, ck, frames=[0, 3])
    assert "resuming" in caplog.text and "sdf, iteration 20" in caplog.text
    assert not (ck / "train_state.pt").exists()  # cleared when the stage finished
    assert len(av.mesh.verts) > 0
    av.save(tmp_path / "av")
    back = Avatar.load(tmp_path / "av")
    x = av.mesh.verts[:50]
    torch.testing.assert_close(back.color(x), av.color(x))
    # a checkpoint of another config / input is never resumed
    Checkpointer(ck, "some-other-run").save("sdf", 5, {})
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="avatar.train"):
        train_avatar(recon, cfg, anny_body, None, ck, frames=[0, 3])
    assert "another config or input" in caplog.text


def test_avatar_config_builds_from_a_dict():
    from omegaconf.errors import ConfigKeyError

    from foundation.config import build

    c = build(AvatarConfig, {"fast": True, "skinning": {"iters": 5}, "sdf": {"iters": 7}})
    assert c.skinning.iters == 5 and c.sdf.iters == 7 and c.effective().samples_per_frame == 1500
    with pytest.raises(ConfigKeyError, match="bogus"):
        build(AvatarConfig, {"bogus": 1})
    with pytest.raises(ConfigKeyError, match="nope"):
        build(AvatarConfig, {"sdf": {"nope": 1}})
    with pytest.raises(ValueError, match="color_mode"):
        train_avatar(None, AvatarConfig(color_mode="paint"), None)


def test_bake_colors_trusts_seen_samples():
    """Samples the camera did not see (weight 0) lose to seen ones; unseen-only spots keep their colours."""
    from avatar.extract import bake_colors

    g = torch.Generator().manual_seed(0)
    pts = torch.randn(400, 3, generator=g) * torch.tensor([0.004, 0.004, 0.0])
    nrm = torch.tensor([[0.0, 0.0, 1.0]]).expand(400, 3)
    red, blue = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])
    cols = torch.where((torch.arange(400) % 2 == 0)[:, None], red, blue)  # interleaved: same neighbourhood
    v, vn = torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 1.0]])
    seen_red = (torch.arange(400) % 2 == 0).float()
    got = bake_colors(v, vn, pts, nrm, cols, radius=0.015, weights=seen_red)[0].float()
    assert got[0] > 240 and got[2] < 15
    got_blue = bake_colors(v, vn, pts, nrm, cols, radius=0.015, weights=1 - seen_red)[0].float()
    assert got_blue[2] > 240 and got_blue[0] < 15
    # no weights, or nothing seen: the plain estimate (which the blue weights overrode)
    plain = bake_colors(v, vn, pts, nrm, cols, radius=0.015)[0]
    assert float((plain.float() - got_blue).abs().max()) > 100
    assert torch.equal(bake_colors(v, vn, pts, nrm, cols, radius=0.015, weights=torch.zeros(400))[0], plain)
