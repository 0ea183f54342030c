"""foundation.io.video: write a tiny clip, read it back with every sampling option, bad inputs."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from foundation.io.video import Frames, VideoConfig, VideoError, read_video, sample_indices, write_video

T, H, W, FPS = 24, 48, 64, 30.0


def _clip(n=T, h=H, w=W) -> np.ndarray:
    """(n, h, w, 3) uint8: frame t is flat grey level 8 * t + 20 (readable after compression)."""
    levels = (8 * np.arange(n) + 20).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (n, h, w, 3)).copy()


def _levels(images: np.ndarray) -> np.ndarray:
    """Frame index encoded by :func:`_clip`, recovered from the mean grey level."""
    return np.round((images.reshape(len(images), -1).mean(1) - 20) / 8).astype(int)


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    write_video(path, _clip(), FPS)
    return path


def test_roundtrip(clip_path):
    f = read_video(clip_path)
    assert isinstance(f, Frames)
    assert f.images.shape == (T, H, W, 3) and f.images.dtype == np.uint8
    np.testing.assert_array_equal(f.indices, np.arange(T))
    np.testing.assert_array_equal(_levels(f.images), np.arange(T))
    assert f.fps == pytest.approx(FPS) and f.source_fps == pytest.approx(FPS)
    assert f.path == clip_path and len(f) == T and f.size == (H, W)


@pytest.mark.parametrize(
    "cfg, expected, fps",
    [
        (VideoConfig(stride=3), np.arange(0, T, 3), FPS / 3),
        (VideoConfig(fps=10), np.arange(0, T, 3), 10.0),
        (VideoConfig(fps=12), [0, 2, 5, 7, 10, 12, 15, 17, 20, 22], 12.0),  # 2.5 source frames per step
        (VideoConfig(fps=10, stride=2, start=1), [1, 7, 13, 19], 5.0),
        (VideoConfig(max_frames=5, start=4), [4, 5, 6, 7, 8], FPS),
        (VideoConfig(fps=60), np.arange(T), FPS),  # no upsampling
    ],
)
def test_sampling(clip_path, cfg, expected, fps):
    f = read_video(clip_path, cfg)
    np.testing.assert_array_equal(f.indices, expected)
    np.testing.assert_array_equal(_levels(f.images), expected)  # the right frames, not just labels
    assert f.fps == pytest.approx(fps)


def test_sample_indices_past_end():
    assert len(sample_indices(10, 30.0, VideoConfig(start=10))) == 0
    np.testing.assert_array_equal(sample_indices(10, 30.0, VideoConfig(start=8, stride=5)), [8])


def test_start_past_end_raises(clip_path):
    with pytest.raises(VideoError, match="no frames"):
        read_video(clip_path, VideoConfig(start=T + 5))


def test_max_side(clip_path):
    f = read_video(clip_path, VideoConfig(max_side=32, max_frames=2))
    assert f.images.shape == (2, 24, 32, 3)
    f = read_video(clip_path, VideoConfig(max_side=500, max_frames=1))  # never upsamples
    assert f.images.shape == (1, H, W, 3)


def test_odd_size_is_padded(tmp_path):
    path = write_video(tmp_path / "odd.mp4", _clip(3, 31, 45), 24.0)
    f = read_video(path)
    assert f.images.shape == (3, 32, 46, 3)
    assert f.source_fps == pytest.approx(24.0)


def test_pyav_fallback(clip_path, monkeypatch):
    decord = pytest.importorskip("decord")

    def broken(*a, **k):
        raise RuntimeError("simulated decord failure")

    monkeypatch.setattr(decord, "VideoReader", broken)
    f = read_video(clip_path, VideoConfig(fps=10, max_frames=4, start=1))
    np.testing.assert_array_equal(f.indices, [1, 4, 7, 10])
    np.testing.assert_array_equal(_levels(f.images), [1, 4, 7, 10])
    assert f.fps == pytest.approx(10.0) and f.source_fps == pytest.approx(FPS)


def test_missing_file(tmp_path):
    with pytest.raises(VideoError, match="no such file"):
        read_video(tmp_path / "nope.mp4")
    assert issubclass(VideoError, ValueError)


@pytest.mark.parametrize("kind", ["random", "truncated", "empty", "no_frames"])
def test_corrupt_file(tmp_path, clip_path, kind):
    bad = tmp_path / f"{kind}.mp4"
    if kind == "random":
        bad.write_bytes(np.random.default_rng(0).bytes(20000))
    elif kind == "truncated":
        data = clip_path.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        bad.write_bytes(b"")
    else:  # a valid container holding zero frames
        av = pytest.importorskip("av")
        out = av.open(str(bad), "w")
        s = out.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        for p in s.encode():
            out.mux(p)
        out.close()
    with pytest.raises(VideoError) as e:
        read_video(bad)
    assert str(bad) in str(e.value)


def test_truncated_faststart(tmp_path):
    """moov atom first: the header survives the cut, the frames do not."""
    from tests.fixtures.clips import cut_faststart_clip

    path = cut_faststart_clip(tmp_path / "fs.mp4", 40, keep=1 / 3)
    with pytest.raises(VideoError, match="truncated"):
        read_video(path)


def test_image_directory(tmp_path):
    clip = _clip(12)
    d = tmp_path / "frames"
    d.mkdir()
    for t, im in enumerate(clip):  # f1 .. f12: natural order, not f1, f10, f11, f12, f2
        cv2.imwrite(str(d / f"f{t + 1}.{'png' if t % 2 else 'jpg'}"), im[..., ::-1])
    (d / "notes.txt").write_text("ignored")
    f = read_video(d)
    assert f.images.shape == (12, H, W, 3)
    np.testing.assert_array_equal(_levels(f.images), np.arange(12))
    f = read_video(d, VideoConfig(stride=4, image_dir_fps=24))
    np.testing.assert_array_equal(f.indices, [0, 4, 8])
    assert f.fps == pytest.approx(6.0)
    one = read_video(d / "f3.jpg")
    assert one.images.shape == (1, H, W, 3) and _levels(one.images)[0] == 2


def test_image_directory_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoError, match="no images"):
        read_video(empty)
    d = tmp_path / "bad"
    d.mkdir()
    cv2.imwrite(str(d / "a.png"), np.zeros((8, 8, 3), np.uint8))
    (d / "b.png").write_bytes(b"not a png")
    with pytest.raises(VideoError, match="b.png"):
        read_video(d)
    (d / "b.png").unlink()
    cv2.imwrite(str(d / "b.png"), np.zeros((8, 9, 3), np.uint8))
    with pytest.raises(VideoError, match="size"):
        read_video(d)


def test_write_atomic_and_checks(tmp_path):
    path = tmp_path / "sub" / "out.mp4"
    write_video(path, _clip(2), 25.0)
    assert os.listdir(path.parent) == ["out.mp4"]  # no temp file left behind
    with pytest.raises(ValueError, match="uint8"):
        write_video(path, _clip(2).astype(np.float32), 25.0)
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        write_video(path, _clip(2)[..., 0], 25.0)
    assert read_video(path).images.shape[0] == 2  # the failed writes left the old file alone


def test_config_checks():
    with pytest.raises(ValueError, match="stride"):
        VideoConfig(stride=0)
    with pytest.raises(ValueError, match="fps"):
        VideoConfig(fps=0)
