"""Synthetic video: files, ground-truth consistency, reload."""

import numpy as np
import pytest
import torch

from synthetic.render import render_hits
from synthetic.video import SyntheticVideo, VideoSpec, make_synthetic_video

SPEC = VideoSpec(width=96, height=128, ssaa=1)
T = 4


@pytest.fixture(scope="module")
def video(tmp_path_factory, anny_body, subject, clothed):
    out = tmp_path_factory.mktemp("video")
    with torch.no_grad():
        return make_synthetic_video(out, T, seed=3, spec=SPEC, body=anny_body, subject=subject, canonical=clothed,
                                    progress=False)


def test_video_files_and_fields(video):
    d = video.path.parent
    assert video.path.name == "clip.mp4" and video.path.exists()
    assert (d / "gt.npz").exists() and (d / "gt.json").exists()
    assert video.num_frames == T and video.params.batch_size == T
    assert video.masks.shape == (T, SPEC.height, SPEC.width) and video.masks.any(axis=(1, 2)).all()
    assert not video.camera.ortho and video.camera.width == SPEC.width
    frames = video.frames()
    assert frames.shape == (T, SPEC.height, SPEC.width, 3)


def test_posed_ground_truth_is_lbs_of_the_canonical_mesh(video, anny_body):
    with torch.no_grad():
        out = anny_body(video.params)
    for t in (0, T - 1):
        gt = video.posed_clothed(t)[0]
        ref = video.canonical.pose(out.joint_transforms[t: t + 1])[0]
        assert torch.allclose(gt, ref, atol=1e-5)
        # the GT mask is the silhouette of that mesh
        hits = render_hits(gt, video.canonical.faces, video.camera)
        assert (hits.mask.numpy() == video.masks[t]).mean() > 0.999
    # the feet stand on the floor (y = 0) and the person is in view at ~3 m
    v0 = video.posed_clothed(0)[0]
    assert abs(float(v0[:, 1].min())) < 0.02
    uv, z = video.camera.project(v0)
    assert (uv[:, 0] > 0).all() and (uv[:, 0] < SPEC.width).all() and (uv[:, 1] > 0).all()
    assert 2.5 < float(z.mean()) < 3.6


def test_video_reload(video):
    v2 = SyntheticVideo.load(video.path.parent)
    assert torch.equal(v2.params.global_orient, video.params.global_orient)
    assert (v2.masks == video.masks).all()
    assert v2.camera == video.camera and v2.motion == video.motion
    assert torch.allclose(v2.posed_clothed(1), video.posed_clothed(1), atol=2e-3)  # float16 weights
    assert torch.equal(v2.canonical.faces, video.canonical.faces)


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="motion"):
        make_synthetic_video(tmp_path, 2, spec=VideoSpec(motion="moonwalk"))
    with pytest.raises(ValueError, match="num_frames"):
        make_synthetic_video(tmp_path, 0)


@pytest.mark.slow
def test_mediapipe_detects_the_video_person(tmp_path, anny_body):
    mp = pytest.importorskip("mediapipe")
    v = make_synthetic_video(tmp_path, 6, seed=0, body=anny_body, progress=False)
    with mp.solutions.holistic.Holistic(static_image_mode=True, model_complexity=1) as h:
        res = [h.process(f) for f in v.frames()]
    assert np.mean([r.pose_landmarks is not None for r in res]) == 1.0
    assert np.mean([r.face_landmarks is not None for r in res]) >= 0.8


@pytest.mark.slow
def test_benchmark_set_builds_and_reloads(tmp_path, anny_body):
    from synthetic.benchmark import BenchmarkSpec, load_or_make_benchmark

    spec = BenchmarkSpec(num_samples=1, image_size=96, num_frames=3, heldout_frames=2, width=64, height=96)
    b = load_or_make_benchmark(tmp_path / "bench", spec, anny_body)
    assert len(b.samples) == 1 and b.video.num_frames == 3 and b.heldout.num_frames == 2
    assert b.heldout.motion == "arms_squat" and b.heldout.subject == b.video.subject
    assert (tmp_path / "bench" / "DONE.json").exists()
    b2 = load_or_make_benchmark(tmp_path / "bench", spec)  # cached: no body model needed
    assert torch.equal(b2.video.params.body_pose, b.video.params.body_pose)
