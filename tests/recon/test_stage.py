"""Refinement loop, features and the full stage on a tiny synthetic clip (Anny body, low resolution)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from foundation.camera import Camera
from recon.normal_net import NormalNet, NormalNetConfig
from tests.fixtures.toy import skirt_scene

S_IMG = 96


def _scene(body, shift=(0.0, 0.0, 0.0)):
    p = body.zero_params(1)
    p.body_pose[0, 15, 2] = -0.9  # left shoulder down
    p.body_pose[0, 16, 2] = 0.9
    p.transl[0] = torch.tensor(shift)
    cam = Camera.look_at((0, 0.0, 3.2), (0, -0.1, 0), width=S_IMG, height=S_IMG, fov_deg=45)
    return p, cam


def _render(body, p, cam):
    from foundation.geometry.raycast import render_normal_maps

    with torch.no_grad():
        v = body(p).vertices[0]
    nm = render_normal_maps(v, body.faces, cam)
    mask = torch.as_tensor(nm.mask_front).float().numpy()
    img = np.zeros((S_IMG, S_IMG, 3), np.uint8)
    img[mask > 0] = (200, 120, 60)
    return img, mask, v


def test_point_features_shapes_and_visibility(anny_body):
    from recon.features import point_features
    from recon.views import prepare_view

    p, cam = _scene(anny_body)
    img, mask, v = _render(anny_body, p, cam)
    view = prepare_view(img, mask, cam, v, anny_body.faces, 64)
    m = view.maps
    assert m.body_front.shape == (3, 64, 64) and m.vert_vis.shape == (v.shape[0],)
    n = m.body_front[:, m.body_mask]
    assert torch.allclose(n.norm(dim=0), torch.ones(n.shape[1]), atol=1e-3)
    assert float(n[2].mean()) > 0.5  # front normals face the viewer (+Z view)
    # clothed maps: front = +z, back = -z constant -> features pick by visibility
    m.clothed_front = torch.zeros(3, 64, 64)
    m.clothed_front[2] = 1
    m.clothed_back = -m.clothed_front
    chest = v[v[:, 1].argmax()].clone()  # top of the head
    pts = torch.stack([torch.tensor([0.0, 0.2, 0.25]), torch.tensor([0.0, 0.2, -0.25])])  # in front / behind torso
    f, cp = point_features(pts, v, anny_body.faces, m)
    assert f.shape == (2, 7)
    assert float(f[0, 0]) > 0 and float(f[1, 0]) > 0  # outside the body, metres
    assert float(f[0, 6]) > 0.9 and float(f[1, 6]) < -0.9
    assert float(f[0, 3]) > 0.5 and float(f[1, 3]) < -0.5  # body normal z (view frame)
    del chest


def test_refinement_lowers_loss(anny_body):
    from recon.refine import RefineConfig, refine_body

    p_gt, cam = _scene(anny_body)
    img, mask, _ = _render(anny_body, p_gt, cam)
    p0 = p_gt.clone()
    p0.transl[0] += torch.tensor([0.04, -0.03, 0.0])
    net = NormalNet(NormalNetConfig(width=8, levels=2, max_width=16)).eval()
    # the untrained net returns the current body normals, so only the silhouette carries information here
    cfg = RefineConfig(iters=12, loops=1, lr=0.02, w_normal=0.0, w_transl_prior=1.0)
    p, view, st = refine_body(img, mask, cam, p0, anny_body, net, cfg, crop_size=64)
    assert st["refine_loss_last"] < 0.8 * st["refine_loss_first"]
    err0 = float((p0.transl - p_gt.transl).norm())
    err1 = float((p.transl - p_gt.transl).norm())
    assert err1 < err0
    assert view.maps.clothed_front.shape == (3, 64, 64)


@pytest.fixture(scope="module")
def tiny_tracks(anny_body):
    from tracking.artifact import Tracks

    ps, imgs, masks = [], [], []
    for k in range(2):
        p, cam = _scene(anny_body, shift=(0.03 * k, 0.0, 0.0))
        img, mask, _ = _render(anny_body, p, cam)
        ps.append(p)
        imgs.append(img)
        masks.append(mask)
    from foundation.body.params import SMPLXParams

    return Tracks(params=SMPLXParams.cat(ps), camera=cam, images=np.stack(imgs), masks=np.stack(masks),
                  keypoints=np.zeros((2, 55, 3), np.float32), crops=np.tile([[0, 0, S_IMG, S_IMG]], (2, 1)),
                  valid=np.ones(2, bool), frame_indices=np.arange(2), fps=10.0)


class _Logger:
    def __init__(self):
        self.scalars, self.images, self.meshes = [], [], []

    def log_scalars(self, d, step=None):
        self.scalars.append(d)

    def log_image(self, name, img, step=None):
        self.images.append((name, img.shape))

    def log_mesh(self, name, v, f, step=None):
        self.meshes.append((name, len(v)))


def test_run_recon_roundtrip(anny_body, tiny_tracks, tmp_path):
    from recon.artifact import Recon
    from recon.mesh import ExtractConfig
    from recon.refine import RefineConfig
    from recon.stage import ReconConfig, run_recon

    from recon.implicit import ImplicitNet
    from recon.normal_net import save_checkpoint

    # the user-checkpoint path of the config (small untrained nets: this tests the stage's plumbing)
    save_checkpoint(NormalNet(NormalNetConfig(width=8, levels=2, max_width=16)), tmp_path / "n.safetensors", {})
    save_checkpoint(ImplicitNet(), tmp_path / "i.safetensors", {})
    cfg = ReconConfig(normal_net_ckpt=str(tmp_path / "n.safetensors"), implicit_ckpt=str(tmp_path / "i.safetensors"),
                      crop_size=64, refine=RefineConfig(iters=0), extract=ExtractConfig(coarse_res=16, fine_res=64))
    log = _Logger()
    rec = run_recon(tiny_tracks, cfg, anny_body, tmp_path / "out", log)
    assert len(rec.frames) == 2 and rec.params.batch_size == 2
    for fr in rec.frames:
        assert fr.verts.dtype == np.float32 and fr.faces.dtype == np.int64 and fr.colors.dtype == np.uint8
        assert fr.verts.shape[0] > 100
        # world frame: the surface spans the body's height (metres) around its position
        assert 1.2 < float(np.ptp(fr.verts[:, 1])) < 2.2
    assert (tmp_path / "out" / "maps_0000.png").exists()
    assert log.scalars and log.images and log.meshes
    rec.save(tmp_path / "saved")
    back = Recon.load(tmp_path / "saved")
    assert [f.frame for f in back.frames] == [0, 1]
    np.testing.assert_allclose(back.frames[0].verts, rec.frames[0].verts, atol=1e-6)
    np.testing.assert_array_equal(back.frames[1].faces, rec.frames[1].faces)
    np.testing.assert_array_equal(back.frames[0].colors, rec.frames[0].colors)
    cw = rec.frames[0].color_weight
    assert cw.shape == (len(rec.frames[0].verts),) and 0.0 <= cw.min() and cw.max() <= 1.0
    assert 0.05 < float((cw > 0).mean()) < 0.95  # the camera sees some of the surface, not all
    np.testing.assert_array_equal(back.frames[0].color_weight, cw)
    assert torch.allclose(back.params.transl, rec.params.transl)


def test_run_recon_resumes_after_crash(anny_body, tiny_tracks, tmp_path, monkeypatch):
    """A crash on frame 1 keeps frame 0; the rerun computes only frame 1, gives the same result as an
    uninterrupted run, and clears the cache.  Another config never reuses the cached frames."""
    import recon.stage as stage
    from recon.implicit import ImplicitNet
    from recon.mesh import ExtractConfig
    from recon.normal_net import save_checkpoint
    from recon.refine import RefineConfig

    save_checkpoint(NormalNet(NormalNetConfig(width=8, levels=2, max_width=16)), tmp_path / "n.safetensors", {})
    save_checkpoint(ImplicitNet(), tmp_path / "i.safetensors", {})
    cfg = stage.ReconConfig(normal_net_ckpt=str(tmp_path / "n.safetensors"),
                            implicit_ckpt=str(tmp_path / "i.safetensors"), crop_size=64,
                            refine=RefineConfig(iters=0), extract=ExtractConfig(coarse_res=16, fine_res=64))
    original = stage.reconstruct_frame
    calls = []

    def crashing(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return original(*a, **k)

    cache = tmp_path / "cache"
    monkeypatch.setattr(stage, "reconstruct_frame", crashing)
    with pytest.raises(RuntimeError, match="killed"):
        stage.run_recon(tiny_tracks, cfg, anny_body, tmp_path / "a", cache_dir=cache)
    assert (cache / "frame_0000.npz").exists() and not (cache / "frame_0001.npz").exists()

    calls.clear()
    monkeypatch.setattr(stage, "reconstruct_frame", lambda *a, **k: (calls.append(1), original(*a, **k))[1])
    rec = stage.run_recon(tiny_tracks, cfg, anny_body, tmp_path / "b", cache_dir=cache)
    assert len(calls) == 1 and rec.stats["frames_computed"] == 1 and not cache.exists()
    assert (tmp_path / "b" / "maps_0000.png").exists()  # the cached frame's picture came back too
    ref = stage.run_recon(tiny_tracks, cfg, anny_body, tmp_path / "c")  # no cache, uninterrupted
    for got, want in zip(rec.frames, ref.frames):
        np.testing.assert_array_equal(got.verts, want.verts)
        np.testing.assert_array_equal(got.colors, want.colors)
        np.testing.assert_array_equal(got.color_weight, want.color_weight)
    assert torch.equal(rec.params.transl, ref.params.transl)

    # a stale cache (another config) is wiped, not reused
    calls.clear()
    monkeypatch.setattr(stage, "reconstruct_frame", crashing)
    with pytest.raises(RuntimeError):
        stage.run_recon(tiny_tracks, cfg, anny_body, tmp_path / "d", cache_dir=cache)
    calls.clear()
    monkeypatch.setattr(stage, "reconstruct_frame", lambda *a, **k: (calls.append(1), original(*a, **k))[1])
    other = stage.ReconConfig(**{**cfg.__dict__, "carve_dilate_px": 4})
    stage.run_recon(tiny_tracks, other, anny_body, tmp_path / "e", cache_dir=cache)
    assert len(calls) == 2


def test_keyframes_spread_over_the_poses():
    from foundation.body.params import SMPLXParams
    from recon.keyframes import select_keyframes

    # 30 frames: a still pose for 20 frames, then an arm raise, then a quarter turn
    p = SMPLXParams.zeros(30)
    p.body_pose[20:25, 15, 2] = torch.linspace(0.2, 1.2, 5)  # left shoulder
    p.global_orient[25:, 1] = torch.linspace(0.3, 1.5, 5)
    keys = select_keyframes(p, list(range(30)), 4)
    assert len(keys) == 4 and keys == sorted(keys)
    assert keys[0] == 0 and sum(k < 20 for k in keys) == 1  # the still frames give one keyframe
    assert any(20 <= k < 25 for k in keys) and any(k >= 25 for k in keys)
    assert select_keyframes(p, [3, 1], 5) == [1, 3]
    with pytest.raises(ValueError):
        select_keyframes(p, [0], 0)


def test_run_recon_reconstructs_keyframes_of_a_long_clip(anny_body, tiny_tracks, tmp_path, monkeypatch):
    """With more valid frames than max_frames, only the selected keyframes are reconstructed."""
    import dataclasses

    import recon.stage as stage
    from recon.stage import ReconConfig, run_recon

    calls = []
    real = stage.reconstruct_frame

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(stage, "reconstruct_frame", counting)
    monkeypatch.setattr(stage, "select_keyframes", lambda params, frames, k: frames[-k:])
    from recon.implicit import ImplicitNet
    from recon.mesh import ExtractConfig
    from recon.normal_net import save_checkpoint
    from recon.refine import RefineConfig

    save_checkpoint(NormalNet(NormalNetConfig(width=8, levels=2, max_width=16)), tmp_path / "n.safetensors", {})
    save_checkpoint(ImplicitNet(), tmp_path / "i.safetensors", {})
    cfg = ReconConfig(normal_net_ckpt=str(tmp_path / "n.safetensors"), implicit_ckpt=str(tmp_path / "i.safetensors"),
                      crop_size=64, refine=RefineConfig(iters=0), extract=ExtractConfig(coarse_res=16, fine_res=64),
                      max_frames=1, save_maps=False)
    rec = run_recon(tiny_tracks, cfg, anny_body, tmp_path / "out")
    assert rec.frame_indices == [1] and rec.params.batch_size == 1 and len(calls) == 1
    rec2 = run_recon(tiny_tracks, dataclasses.replace(cfg, frames=[0, 1]), anny_body, tmp_path / "out2")
    assert rec2.frame_indices == [0, 1]  # an explicit list is taken as it is


def test_auto_surface_follows_a_skirt_with_econ(anny_body):
    """A person mask with a flared skirt far outside the body: "auto" builds the econ surface, one closed
    component that covers the skirt (IoU with the mask far above the body's); the plain body mask takes icon."""
    import trimesh

    from foundation.geometry.raycast import raycast
    from recon.implicit import load_implicit
    from recon.refine import RefineConfig
    from recon.stage import CHECKPOINT_DIR, ReconConfig, load_models, reconstruct_frame

    p, cam, body_mask, skirt, img = skirt_scene(anny_body)
    cfg = ReconConfig(surface="auto", refine=RefineConfig(iters=0))
    net, imp = load_models(cfg)
    assert isinstance(imp, type(load_implicit(CHECKPOINT_DIR / "implicit.safetensors")))
    res = reconstruct_frame(img, skirt, cam, p, anny_body, net, imp, cfg)
    assert res.stats["surface_econ"] == 1.0 and res.stats["loose_fraction"] > 0.05
    m = trimesh.Trimesh(res.verts, res.faces, process=False)
    assert m.is_watertight and len(m.split(only_watertight=False)) == 1
    sil = torch.as_tensor(raycast(torch.as_tensor(res.verts), torch.as_tensor(res.faces), cam).mask).numpy()
    sk = skirt > 0.5
    iou = (sil & sk).sum() / (sil | sk).sum()
    body_iou = ((body_mask > 0.5) & sk).sum() / sk.sum()
    assert iou > 0.9 and iou > body_iou + 0.1
    plain = reconstruct_frame(img * (body_mask[..., None] > 0), body_mask, cam, p, anny_body, net, imp, cfg)
    assert plain.stats["surface_econ"] == 0.0


def test_crop_size_comes_from_the_checkpoint(tmp_path, caplog):
    """``crop_size = null`` takes the size the normal net was trained at (its sidecar's stats), 128 when the
    sidecar does not say; an explicit size wins, a mismatch is warned of, a size the net cannot take is an error."""
    import recon.stage as stage
    from recon.implicit import ImplicitNet
    from recon.normal_net import save_checkpoint

    save_checkpoint(ImplicitNet(), tmp_path / "i.safetensors", {})
    net = NormalNet(NormalNetConfig(width=8, levels=2, max_width=16))
    save_checkpoint(net, tmp_path / "n96.safetensors", {"stats": {"crop_size": 96}})
    save_checkpoint(net, tmp_path / "n.safetensors", {})

    def cfg(name, size=None):
        return stage.ReconConfig(normal_net_ckpt=str(tmp_path / name), implicit_ckpt=str(tmp_path / "i.safetensors"),
                                 crop_size=size)

    n96, _ = stage.load_models(cfg("n96.safetensors"))
    assert n96.train_size == 96 and stage.crop_size(cfg("n96.safetensors"), n96) == 96
    plain, _ = stage.load_models(cfg("n.safetensors"))
    assert plain.train_size is None and stage.crop_size(cfg("n.safetensors"), plain) == 128
    with caplog.at_level("WARNING", logger="recon.stage"):
        stage.load_models(cfg("n96.safetensors", 64))
    assert "differs from the normal net's training size 96" in caplog.text
    assert stage.crop_size(cfg("n96.safetensors", 64), n96) == 64
    with pytest.raises(ValueError, match="divisible by 4"):
        stage.load_models(cfg("n96.safetensors", 66))


def test_refinement_losses_do_not_depend_on_the_crop_size(anny_body):
    """With ``loss_size`` the losses of a 128 px view are those of a 64 px view of the same body: the body is
    rendered at 64 px and the 128 px predictions and mask are averaged down (unit normals, mask in [0, 1])."""
    from recon.refine import RefineConfig, _loss_maps, refine_loss
    from recon.views import prepare_view

    p_gt, cam = _scene(anny_body)
    img, mask, v = _render(anny_body, p_gt, cam)
    p = p_gt.clone()
    p.transl[0] += torch.tensor([0.03, 0.0, 0.0])
    with torch.no_grad():
        moved = anny_body(p).vertices[0]
    losses = {}
    for size, loss_size in ((64, None), (128, 64), (128, None)):
        view = prepare_view(img, mask, cam, v, anny_body.faces, size)
        view.maps.clothed_front, view.maps.clothed_back = view.maps.body_front, view.maps.body_back
        cam_l, m, (front, back) = _loss_maps(view, loss_size)
        assert cam_l.width == (loss_size or size) and m.shape == (cam_l.height, cam_l.width)
        n = front.norm(dim=0)
        assert torch.allclose(n[n > 0], torch.ones(int((n > 0).sum())), atol=1e-4) and 0 <= float(m.min()) <= float(m.max()) <= 1
        with torch.no_grad():
            _, parts = refine_loss(moved, anny_body.faces, view, RefineConfig(loss_size=loss_size))
        losses[(size, loss_size)] = parts
    a, b, c = losses[(64, None)], losses[(128, 64)], losses[(128, None)]
    assert abs(a["silhouette"] - b["silhouette"]) < 0.1 * a["silhouette"]
    assert abs(a["normal"] - b["normal"]) < 0.15 * a["normal"]
    assert abs(c["silhouette"] - a["silhouette"]) > abs(b["silhouette"] - a["silhouette"])  # 128 px differs more


def _small_recon_cfg(tmp_path, **kw):
    from recon.implicit import ImplicitNet
    from recon.mesh import ExtractConfig
    from recon.normal_net import save_checkpoint
    from recon.refine import RefineConfig
    from recon.stage import ReconConfig

    save_checkpoint(NormalNet(NormalNetConfig(width=8, levels=2, max_width=16)), tmp_path / "n.safetensors", {})
    save_checkpoint(ImplicitNet(), tmp_path / "i.safetensors", {})
    return ReconConfig(normal_net_ckpt=str(tmp_path / "n.safetensors"), implicit_ckpt=str(tmp_path / "i.safetensors"),
                       crop_size=64, refine=RefineConfig(iters=2, loops=1), extract=ExtractConfig(coarse_res=16, fine_res=64),
                       **kw)


def test_worker_processes_give_the_frames_this_process_gives(anny_body, tiny_tracks, tmp_path):
    """Two spawned workers, each on its share of the cores, reconstruct the clip's frames exactly as this process
    does on as many threads; their frames are logged, the maps copied, and no cache is left behind."""
    import dataclasses

    from foundation.threads import cpu_count, torch_threads
    from recon.stage import run_recon

    import tempfile
    from pathlib import Path

    temp_before = set(Path(tempfile.gettempdir()).glob("recon_frames_*"))
    cfg = _small_recon_cfg(tmp_path, workers=2)
    log = _Logger()
    got = run_recon(tiny_tracks, cfg, anny_body, tmp_path / "w", log)  # no cache_dir: a temporary one
    assert got.stats["workers"] == 2 and got.stats["frames_computed"] == 2
    with torch_threads(max(1, min(torch.get_num_threads(), cpu_count()) // 2)):
        ref = run_recon(tiny_tracks, dataclasses.replace(cfg, workers=1), anny_body, tmp_path / "one")
    assert ref.stats["workers"] == 1
    for a, b in zip(got.frames, ref.frames):
        np.testing.assert_array_equal(a.verts, b.verts)
        np.testing.assert_array_equal(a.colors, b.colors)
    assert torch.equal(got.params.body_pose, ref.params.body_pose)
    assert not torch.equal(got.params.body_pose, tiny_tracks.params.body_pose)  # the refinement ran in them
    assert len(log.scalars) == 2 and log.meshes
    assert (tmp_path / "w" / "maps_0000.png").exists() and (tmp_path / "w" / "maps_0001.png").exists()
    assert set(Path(tempfile.gettempdir()).glob("recon_frames_*")) == temp_before


def test_a_failing_worker_leaves_its_frames_to_this_process(anny_body, tiny_tracks, tmp_path, monkeypatch, caplog):
    """Workers that cannot build the body model exit; the stage warns and reconstructs every frame itself."""
    from foundation.body.model import BodyModelConfig
    from recon.stage import run_recon, worker_count

    cfg = _small_recon_cfg(tmp_path, workers=2, save_maps=False)
    assert worker_count(cfg, anny_body, 1) == 1 and worker_count(cfg, anny_body, 5) == 2
    monkeypatch.setattr(anny_body, "config", BodyModelConfig(backend="smplx", model_path=None))
    with caplog.at_level("WARNING", logger="recon.stage"):
        rec = run_recon(tiny_tracks, cfg, anny_body, tmp_path / "out", cache_dir=tmp_path / "cache")
    assert rec.frame_indices == [0, 1] and rec.stats["frames_computed"] == 2
    assert sum("exited with code" in r.getMessage() for r in caplog.records) == 2
    assert not (tmp_path / "cache").exists()
    monkeypatch.setattr(anny_body, "config", None)  # a body another process cannot rebuild: one process
    assert worker_count(cfg, anny_body, 5) == 1
    with pytest.raises(ValueError, match="workers"):
        _small_recon_cfg(tmp_path, workers=0)
