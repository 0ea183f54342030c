"""Frame stores (frames on disk, read lazily) and the streaming video reader/writer."""

from __future__ import annotations

import numpy as np
import pytest

from foundation.io.frames import FrameStore, FrameWriter, content_digest, save_frames
from foundation.io.video import VideoConfig, VideoError, VideoWriter, read_video, stream_video, write_video


def _clip(T=5, H=24, W=40):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (1, H, W, 3), np.uint8)
    return np.clip(base.astype(int) + 10 * np.arange(T)[:, None, None, None], 0, 255).astype(np.uint8)


def test_png_store_round_trips_exactly_and_indexes_like_an_array(tmp_path):
    clip = _clip()
    store = save_frames(tmp_path / "images", clip, "rgb")
    assert isinstance(store, FrameStore) and store.shape == clip.shape and store.dtype == np.uint8 and len(store) == 5
    np.testing.assert_array_equal(store[2], clip[2])
    np.testing.assert_array_equal(store[-1], clip[-1])
    np.testing.assert_array_equal(store[1:4], clip[1:4])
    np.testing.assert_array_equal(store[[4, 0]], clip[[4, 0]])
    np.testing.assert_array_equal(store[:, ::8, ::8], clip[:, ::8, ::8])
    np.testing.assert_array_equal(store[3, 5], clip[3, 5])
    np.testing.assert_array_equal(np.asarray(store), clip)
    np.testing.assert_array_equal(np.stack(list(store)), clip)
    with pytest.raises(IndexError, match="outside"):
        store[5]
    # reopened from disk: the same frames and the same digest
    again = FrameStore(tmp_path / "images")
    assert again.digest == store.digest
    np.testing.assert_array_equal(again[0], clip[0])


def test_jpeg_store_is_near_lossless(tmp_path):
    rng = np.random.default_rng(1)
    smooth = np.stack([np.full((64, 96, 3), (40 * t, 120, 200), np.uint8) for t in range(3)])
    smooth[:, 20:40, 30:60] = rng.integers(100, 140, (20, 30, 3), np.uint8)
    with FrameWriter(tmp_path / "j", "rgb", "jpg") as w:
        for im in smooth:
            w.append(im)
    back = FrameStore(tmp_path / "j")
    mse = np.mean((back[:].astype(float) - smooth) ** 2)
    assert 10 * np.log10(255 ** 2 / max(mse, 1e-9)) > 35


def test_mask_store_quantises_to_1_over_255(tmp_path):
    m = np.linspace(0, 1, 30 * 20, dtype=np.float32).reshape(1, 30, 20).repeat(2, 0)
    store = save_frames(tmp_path / "masks", m, "mask")
    assert store.dtype == np.float32 and store.shape == m.shape
    assert np.abs(store[1] - m[1]).max() <= 0.5 / 255 + 1e-6


def test_digest_follows_content_not_storage(tmp_path):
    a, b = _clip(), _clip()
    b[3, 0, 0, 0] ^= 1
    assert content_digest(a) == content_digest(a.copy()) != content_digest(b)
    sa, sb = save_frames(tmp_path / "a", a, "rgb"), save_frames(tmp_path / "b", b, "rgb")
    assert sa.digest != sb.digest
    assert save_frames(tmp_path / "a", sa, "rgb") is sa  # already there: kept
    copy = save_frames(tmp_path / "c", sa, "rgb")  # another place: copied
    assert copy.digest == sa.digest and copy.dir != sa.dir


def test_writer_checks_and_incomplete_store(tmp_path):
    w = FrameWriter(tmp_path / "s", "rgb", "jpg")
    w.append(_clip(1)[0])
    with pytest.raises(ValueError, match="the store's frames are"):
        w.append(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        w.append(np.zeros((24, 40, 3), np.float32))
    with pytest.raises(FileNotFoundError, match="not a complete frame store"):
        FrameStore(tmp_path / "s")  # not closed yet: no index
    w.close()
    assert len(FrameStore(tmp_path / "s")) == 1
    with pytest.raises(FileExistsError):
        FrameWriter(tmp_path / "s")
    with pytest.raises(ValueError, match="kind"):
        FrameWriter(tmp_path / "x", "depth")
    with pytest.raises(RuntimeError):  # a failure inside the block leaves the store incomplete
        with FrameWriter(tmp_path / "f", "mask") as fw:
            fw.append(np.zeros((4, 4), np.float32))
            raise RuntimeError("boom")
    with pytest.raises(FileNotFoundError):
        FrameStore(tmp_path / "f")
    (tmp_path / "s" / "000000.jpg").unlink()
    with pytest.raises(OSError, match="missing or unreadable"):
        FrameStore(tmp_path / "s")[0]


def test_stream_matches_read_and_is_one_pass(tmp_path):
    clip = _clip(12, 32, 48)
    path = write_video(tmp_path / "c.mp4", clip, fps=12)
    cfg = VideoConfig(fps=6, max_side=24)
    stream = stream_video(path, cfg)
    assert stream.size == (16, 24) and stream.planned == 6 and stream.fps == pytest.approx(6)
    assert stream.first_frame.shape == (16, 24, 3)
    got = list(stream)
    frames = read_video(path, cfg)
    assert [i for i, _ in got] == frames.indices.tolist() == [0, 2, 4, 6, 8, 10]
    np.testing.assert_array_equal(np.stack([im for _, im in got]), frames.images)
    with pytest.raises(RuntimeError, match="once"):
        list(stream)


def test_video_writer_streams_and_is_atomic(tmp_path):
    path = tmp_path / "o.mp4"
    with VideoWriter(path, fps=10) as out:
        for im in _clip(4, 23, 41):  # odd sizes are padded
            out.write(im)
    assert read_video(path).images.shape == (4, 24, 42, 3)
    import os

    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask  # not the 0600 of a temporary file
    with pytest.raises(ValueError, match="frame 1 is"):
        with VideoWriter(path, fps=10) as out:
            out.write(_clip(1)[0])
            out.write(np.zeros((8, 8, 3), np.uint8))
    assert read_video(path).images.shape[0] == 4  # the failed write left the old file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4"]


def test_decode_failure_midway_names_the_frame(tmp_path):
    """Frames that stop decoding partway: an error naming where, never a silently shorter clip."""
    from tests.fixtures.clips import cut_faststart_clip

    path = cut_faststart_clip(tmp_path / "cut.mp4", 60, keep=0.5)
    stream = stream_video(path)
    with pytest.raises(VideoError, match=r"frame \d+") as e:
        for _ in stream:
            pass
    assert str(path) in str(e.value)
