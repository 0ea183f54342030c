"""The tracking stage end to end on a tiny rendered clip (Anny body, known camera and pose)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from foundation.body import JOINT_INDEX as JI
from foundation.body import SMPLXParams
from tracking.artifact import Tracks
from tracking.detect import NoPersonError
from tracking.fit import FitConfig, default_camera
from tracking.overlay import render_body
from foundation.config import build
from tracking.stage import DiskBudgetError, TrackingConfig, run_tracking
from foundation.io.frames import FrameStore
from foundation.io.video import VideoError, read_video, write_video

H, W, T = 384, 288, 6
SKIN = np.array([235, 195, 165], np.float32)


class RecordingLogger:
    def __init__(self):
        self.images, self.scalars = [], {}

    def log_scalars(self, d, step=None):
        self.scalars.update(d)

    def log_image(self, name, image, step=None):
        self.images.append((name, image))

    def log_mesh(self, name, verts, faces, step=None):
        pass


def clip_params(T: int) -> SMPLXParams:
    p = SMPLXParams.zeros(T)
    a = torch.linspace(0, 1, T)
    p.body_pose[:, JI["left_shoulder"] - 1, 2] = -1.1 + 0.3 * a
    p.body_pose[:, JI["right_shoulder"] - 1, 2] = 1.1
    p.body_pose[:, JI["right_elbow"] - 1, 1] = 0.4 + 0.5 * a
    p.body_pose[:, JI["left_knee"] - 1, 0] = 0.3 * a
    p.global_orient[:, 1] = 0.3 * a
    p.transl[:, 2] = -2.4
    p.transl[:, 1] = 0.05
    return p


@pytest.fixture(scope="module")
def clip(anny_body, tmp_path_factory):
    """(path, params, camera) of a rendered 6-frame clip."""
    cam = default_camera((H, W), FitConfig())
    params = clip_params(T)
    with torch.no_grad():
        verts = anny_body(params).vertices
    frames = []
    for t in range(T):
        shade, mask = render_body(verts[t], anny_body.faces, cam)
        img = np.full((H, W, 3), 110, np.float32)
        img[mask] = shade[mask, None] * SKIN
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    path = write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", np.stack(frames), fps=10)
    return path, params, cam


def small_cfg(**kw) -> TrackingConfig:
    return build(TrackingConfig, {
        "fit": {"iters_global": 30, "iters_pose": 100, "iters_silhouette": 15, "progress": False},
        "overlay": {"max_side": 256}, "log_frames": 2, **kw,
    })


def test_run_tracking_roundtrip_and_overlay(clip, anny_body, tmp_path):
    path, gt, cam = clip
    log = RecordingLogger()
    tracks = run_tracking(path, small_cfg(), anny_body, tmp_path / "tracking", log)
    assert len(tracks) == T and tracks.valid.all()
    assert tracks.params.batch_size == T and tracks.keypoints.shape == (T, 55, 3)
    # the fit explains the video: projected fitted joints near the true ones (pixels)
    with torch.no_grad():
        j_fit = anny_body(tracks.params).joints
        j_gt = anny_body(gt).joints
    limbs = [JI[f"{s}_{j}"] for s in ("left", "right") for j in ("shoulder", "elbow", "wrist", "knee", "ankle")]
    uv_fit, _ = tracks.camera.project(j_fit[:, limbs])
    uv_gt, _ = cam.project(j_gt[:, limbs])
    err = (uv_fit - uv_gt).norm(dim=-1)
    assert float(err.median()) < 12.0, f"median 2D joint error {float(err.median()):.1f} px"
    # artifact round trip
    tracks.save(tmp_path / "saved")
    back = Tracks.load(tmp_path / "saved")
    assert back.camera == tracks.camera and len(back) == T
    assert torch.allclose(back.params.body_pose, tracks.params.body_pose)
    assert np.array_equal(back.images, tracks.images)
    # the frames live on disk in the stage directory, read a frame at a time
    assert isinstance(tracks.images, FrameStore) and tracks.images.dir == tmp_path / "tracking" / "images"
    assert isinstance(back.masks, FrameStore) and back.masks.shape == (T, H, W)
    assert back.masks.digest == tracks.masks.digest
    # overlay video and logged frames
    over = read_video(tmp_path / "tracking" / "overlay.mp4")
    assert len(over) == T and max(over.size) == 256
    assert (tmp_path / "tracking" / "detections.npz").exists()
    assert len(log.images) == 2 and log.images[0][1].dtype == np.uint8
    assert log.scalars["tracking/fps"] > 0


def test_disk_budget_fails_up_front(clip, anny_body, tmp_path):
    path, _, _ = clip
    with pytest.raises(DiskBudgetError, match=r"needs about .* GB .*disk_budget_gb") as e:
        run_tracking(path, small_cfg(disk_budget_gb=1e-6), anny_body, tmp_path / "out")
    assert str(path) in str(e.value)
    assert list((tmp_path / "out").iterdir()) == []  # nothing written


def test_bad_inputs(anny_body, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    with pytest.raises(VideoError):
        run_tracking(bad, small_cfg(), anny_body, tmp_path / "out1")
    empty = write_video(tmp_path / "empty.mp4", np.full((4, 128, 96, 3), 90, np.uint8), fps=10)
    with pytest.raises(NoPersonError):
        run_tracking(empty, small_cfg(), anny_body, tmp_path / "out2")
