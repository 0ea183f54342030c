"""Video input and output: stream a clip (or a folder of images) frame by frame, read a short one
whole, write a clip frame by frame.

:func:`stream_video` is the one reader (:func:`read_video` stacks what it yields): PyAV (sequential,
frame-threaded decode; libswscale converts to RGB at the working size in one pass; ~250 frames/s for
1080p -> 1024 px on 2 cores), ``decord`` only for a container PyAV cannot open. (decord decodes ahead of
a slow reader without bound -- 1.3 GB of buffered frames while detection runs -- so it is not the
default.) A directory of ``.png`` /
``.jpg`` / ``.jpeg`` images (natural sort order: ``f2.png`` before ``f10.png``) or a single
image file is accepted as a clip too.

Sampling (:class:`VideoConfig`), applied in this order to the source frame indices
``0 .. N-1``:

1. ``start``: skip the first ``start`` frames.
2. ``fps``: keep frames at (at most) this rate, ``index = start + floor(k * source_fps / fps)``.
   A target rate at or above the source rate keeps every frame.
3. ``stride``: then keep every ``stride``-th of those.
4. ``max_frames``: then keep at most this many.
5. ``max_side``: resize so that the longest image side is at most this (area filter);
   never upsamples.

The sampled sequence's frame rate is ``min(fps, source_fps) / stride``.

Image convention: ``uint8`` RGB, ``(T, H, W, 3)``, row 0 at the top.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from tqdm.auto import tqdm

from foundation.io.atomic import atomic_path

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_BATCH = 32  # frames per decord get_batch call


class VideoError(ValueError):
    """A video (or image folder) is missing, unreadable, corrupt or empty."""


@dataclass(frozen=True)
class VideoConfig:
    """How to sample frames from a clip.

    Attributes:
        fps: target sampling rate in frames per second; ``None`` keeps the source rate.
        stride: keep every ``stride``-th frame after the ``fps`` resampling (>= 1).
        max_frames: keep at most this many frames; ``None`` for all.
        start: first source frame index to consider (>= 0).
        max_side: resize so the longest image side is at most this many pixels (the working
            resolution of every stage; 1024 by default: a 10 s 1080p clip tracks in 3.5 GB at 20 frames/s
            instead of 12.6 GB at 7 frames/s at full size, and ICON crops the person to 128 px anyway);
            ``None`` keeps the source size. Never upsamples.
        image_dir_fps: frame rate assumed for a directory of images (which has none).
    """

    fps: float | None = None
    stride: int = 1
    max_frames: int | None = None
    start: int = 0
    max_side: int | None = 1024
    image_dir_fps: float = 30.0

    def __post_init__(self):
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"VideoConfig.fps must be > 0 or None, got {self.fps}")
        if self.stride < 1:
            raise ValueError(f"VideoConfig.stride must be >= 1, got {self.stride}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"VideoConfig.max_frames must be >= 1 or None, got {self.max_frames}")
        if self.start < 0:
            raise ValueError(f"VideoConfig.start must be >= 0, got {self.start}")
        if self.max_side is not None and self.max_side < 2:
            raise ValueError(f"VideoConfig.max_side must be >= 2 or None, got {self.max_side}")
        if not self.image_dir_fps > 0:
            raise ValueError(f"VideoConfig.image_dir_fps must be > 0, got {self.image_dir_fps}")


@dataclass(frozen=True)
class Frames:
    """Sampled frames of one clip.

    Attributes:
        images: (T, H, W, 3) uint8 RGB.
        indices: (T,) int64 source frame index of each sampled frame.
        fps: frame rate of the sampled sequence (frames per second).
        source_fps: frame rate of the source clip.
        path: the clip (or image directory) the frames came from.
    """

    images: np.ndarray
    indices: np.ndarray
    fps: float
    source_fps: float
    path: Path

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return int(self.images.shape[1]), int(self.images.shape[2])


# ----------------------------------------------------------------------------- sampling
def _index_stream(source_fps: float, cfg: VideoConfig) -> Iterator[int]:
    """Yield the wanted source indices in increasing order, without an upper bound."""
    step = 1.0
    if cfg.fps is not None and source_fps > 0 and cfg.fps < source_fps:
        step = source_fps / cfg.fps
    k = 0
    while cfg.max_frames is None or k < cfg.max_frames:
        yield cfg.start + int(math.floor(k * step * cfg.stride + 1e-6))
        k += 1


def sample_indices(num_frames: int, source_fps: float, cfg: VideoConfig) -> np.ndarray:
    """Source frame indices selected by ``cfg`` from a clip of ``num_frames`` frames.

    Returns:
        (T,) int64, increasing, all in ``[cfg.start, num_frames)``; empty if ``start`` is past the end.
    """
    out = []
    for idx in _index_stream(source_fps, cfg):
        if idx >= num_frames:
            break
        out.append(idx)
    return np.asarray(out, dtype=np.int64)


def _sampled_fps(source_fps: float, cfg: VideoConfig) -> float:
    base = source_fps if cfg.fps is None else min(cfg.fps, source_fps)
    return float(base) / cfg.stride


def _working_size(h: int, w: int, max_side: int | None) -> tuple[int, int] | None:
    """(H, W) after the ``max_side`` limit, or None when the frame is small enough already."""
    if max_side is None or max(h, w) <= max_side:
        return None
    s = max_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def _resize(image: np.ndarray, max_side: int | None) -> np.ndarray:
    size = _working_size(image.shape[0], image.shape[1], max_side)
    if size is None:
        return image
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)


# ----------------------------------------------------------------------------- readers
class VideoStream:
    """An opened, sampled clip: what it is, and one pass over its frames (decoded on demand).

    Iterating yields ``(source_index, image)`` with ``image`` (H, W, 3) uint8 RGB at the working size, in
    increasing index order, one frame in memory at a time (decoding runs ``prefetch`` frames ahead on a
    background thread, so decoding overlaps the caller's work). A stream can be iterated once.

    Attributes:
        path: the clip.  source_fps: its frame rate.  fps: the sampled sequence's rate.
        size: (H, W) of the yielded frames.  planned: how many frames sampling selects, from the container's
            frame count (PyAV: an estimate from the header; the clip may hold fewer).
    """

    def __init__(self, path: Path, source_fps: float, fps: float, planned: int, frames: Iterator, prefetch: int = 8):
        self.path, self.source_fps, self.fps, self.planned = path, float(source_fps), float(fps), int(planned)
        first = next(frames, None)
        if first is None:
            raise VideoError(f"{path}: no frames to read (the clip is empty or shorter than VideoConfig.start). "
                             "Check the file plays, or lower VideoConfig.start.")
        self.size: tuple[int, int] = (int(first[1].shape[0]), int(first[1].shape[1]))
        self._first, self._rest, self._prefetch, self._used = first, frames, prefetch, False

    @property
    def first_frame(self) -> np.ndarray:
        """(H, W, 3) uint8 the first sampled frame (decoded when the stream was opened)."""
        if self._first is None:
            raise RuntimeError(f"{self.path}: the stream was iterated already")
        return self._first[1]

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        if self._used:
            raise RuntimeError(f"{self.path}: a VideoStream is iterated once; open the clip again")
        self._used = True
        first, self._first = self._first, None
        yield first
        yield from _prefetched(self._rest, self._prefetch)


def _prefetched(items: Iterator, depth: int) -> Iterator:
    """Run ``items`` on a background thread, ``depth`` items ahead (exceptions re-raised in the consumer)."""
    if depth <= 0:
        yield from items
        return
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work():
        try:
            for it in items:
                while not stop.is_set():
                    try:
                        q.put(it, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put(e)

    th = threading.Thread(target=work, name="video-decode", daemon=True)
    th.start()
    try:
        while True:
            it = q.get()
            if it is done:
                return
            if isinstance(it, BaseException):
                raise it
            yield it
    finally:
        stop.set()
        th.join(timeout=5)


def stream_video(path: str | Path, cfg: VideoConfig | None = None) -> VideoStream:
    """Open and sample a clip for one streaming pass (:class:`VideoStream`); nothing is held in memory.

    Args:
        path: a video file (anything FFmpeg decodes), a directory of images, or one image.
        cfg: sampling options (the module doc); defaults to every frame at up to 1024 px.

    Raises:
        VideoError: the path does not exist, cannot be opened by decord nor PyAV, or yields no frame;
            while iterating: a frame that cannot be decoded (the message names it).
    """
    cfg = cfg or VideoConfig()
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: no such file or directory. Check the video path.")
    if path.is_dir():
        return _stream_images(_image_files(path), path, cfg)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return _stream_images([path], path, cfg)
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: the file is empty (0 bytes). Re-export or re-download the video.")
    try:
        return _stream_pyav(path, cfg)
    except VideoError as e:
        try:  # a container PyAV cannot open: decord (its own FFmpeg build) may
            return _stream_decord(path, cfg)
        except _DecordFailed:
            raise e from None


def read_video(path: str | Path, cfg: VideoConfig | None = None) -> Frames:
    """Read and sample a whole clip into memory (short clips; long ones: :func:`stream_video`).

    Returns:
        :class:`Frames` with ``images`` (T, H, W, 3) uint8 RGB.

    Raises:
        VideoError: as :func:`stream_video`.
    """
    stream = stream_video(path, cfg)
    idx, images = [], []
    for i, im in tqdm(stream, total=stream.planned, desc=f"read {stream.path.name}", unit="frame", leave=False):
        idx.append(i)
        images.append(im)
    frames = Frames(images=np.ascontiguousarray(np.stack(images, 0), dtype=np.uint8),
                    indices=np.asarray(idx, np.int64), fps=stream.fps, source_fps=stream.source_fps, path=stream.path)
    log.info("read %d frames %dx%d from %s (source %.3g fps -> %.3g fps)", len(frames), frames.size[1],
             frames.size[0], path, frames.source_fps, frames.fps)
    return frames


class _DecordFailed(Exception):
    """decord could not open or decode the file (try PyAV next)."""


def _stream_decord(path: Path, cfg: VideoConfig) -> VideoStream:
    try:
        import decord
    except ImportError as e:  # pragma: no cover - decord is a dependency
        raise _DecordFailed(f"decord not importable: {e}") from e
    try:
        vr = decord.VideoReader(str(path), ctx=decord.cpu(0))
        n = len(vr)
        source_fps = float(vr.get_avg_fps())
        if cfg.max_side is not None and n > 0:
            h, w = vr[0].shape[:2]
            size = _working_size(h, w, cfg.max_side)
            if size is not None:  # decode straight to the working size (less memory, faster)
                del vr
                vr = decord.VideoReader(str(path), ctx=decord.cpu(0), width=size[1], height=size[0])
    except Exception as e:  # decord raises DECORDError / RuntimeError on bad input
        raise _DecordFailed(str(e)) from e
    if not source_fps > 0 or not math.isfinite(source_fps):
        log.warning("%s: decord reports fps=%s; assuming 30", path, source_fps)
        source_fps = 30.0
    idx = sample_indices(n, source_fps, cfg)

    def frames():
        done = -1
        try:
            for i in range(0, len(idx), _BATCH):
                chunk = idx[i : i + _BATCH]
                batch = vr.get_batch(chunk.tolist()).asnumpy()
                for j, im in zip(chunk, batch):
                    yield int(j), _resize(im, cfg.max_side).copy()  # a copy: no view pins the batch
                    done = int(j)
        except Exception as e:
            raise VideoError(f"{path}: corrupt video: decoding fails after source frame {done} ({e}). "
                             "Re-encode it (e.g. ffmpeg -i in.mp4 out.mp4) or re-download it.") from e

    first_try = frames()
    try:
        stream = VideoStream(path, source_fps, _sampled_fps(source_fps, cfg), len(idx), first_try)
    except VideoError as e:
        raise _DecordFailed(str(e)) from e
    return stream


def _stream_pyav(path: Path, cfg: VideoConfig) -> VideoStream:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: the file has no video stream. Pass a video file.")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            source_fps = float(rate) if rate else 30.0
            declared = int(stream.frames or 0)
            if not declared and stream.duration and stream.time_base:
                declared = int(float(stream.duration * stream.time_base) * source_fps)
    except VideoError:
        raise
    except Exception as e:
        raise VideoError(
            f"{path}: not a readable video (decord and PyAV both failed to open it: {e}). "
            "Check that the file is a complete video; re-encode or re-download it."
        ) from e
    planned = len(sample_indices(declared, source_fps, cfg)) if declared else (cfg.max_frames or 0)
    return VideoStream(path, source_fps, _sampled_fps(source_fps, cfg), planned, _pyav_frames(path, cfg))


def _pyav_frames(path: Path, cfg: VideoConfig) -> Iterator[tuple[int, np.ndarray]]:
    """Sequential PyAV decode of the sampled frames."""
    import av

    try:
        container = av.open(str(path))
    except Exception as e:
        raise VideoError(
            f"{path}: not a readable video (decord and PyAV both failed to open it: {e}). "
            "Check that the file is a complete video; re-encode or re-download it."
        ) from e
    count, last = 0, -1
    try:
        with container:
            if not container.streams.video:
                raise VideoError(f"{path}: the file has no video stream. Pass a video file.")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            declared = int(stream.frames or 0)
            rate = stream.average_rate or stream.guessed_rate
            wanted = _index_stream(float(rate) if rate else 30.0, cfg)
            nxt = next(wanted, None)
            for i, frame in enumerate(container.decode(stream)):
                if nxt is None:
                    break
                if i < nxt:
                    continue
                size = _working_size(frame.height, frame.width, cfg.max_side)
                if size is None:
                    yield i, frame.to_ndarray(format="rgb24")
                else:  # libswscale resizes while converting: one pass, no full-size RGB frame
                    yield i, frame.to_ndarray(width=size[1], height=size[0], format="rgb24", interpolation="AREA")
                count, last = count + 1, i
                nxt = next(wanted, None)
            # a header frame count well above what decodes means a cut-off file (moov at front)
            if nxt is not None and declared and nxt < 0.98 * declared - 1:
                raise VideoError(
                    f"{path}: truncated video: the header declares {declared} frames but decoding stops "
                    f"before frame {nxt}. Re-download or re-export the file."
                )
    except VideoError:
        raise
    except Exception as e:
        raise VideoError(
            f"{path}: corrupt video: decoding fails at source frame {last + 1} (after {count} sampled frames "
            f"were read: {e}). Re-encode it (e.g. ffmpeg -i in.mp4 out.mp4) or re-download it."
        ) from e


def _natural_key(p: Path):
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", p.name)]


def _image_files(path: Path) -> list[Path]:
    files = sorted(
        (p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS), key=_natural_key
    )
    if not files:
        raise VideoError(
            f"{path}: the directory holds no images ({', '.join(IMAGE_EXTENSIONS)}). "
            "Point to a video file or a folder of frames."
        )
    return files


def _stream_images(files: list[Path], path: Path, cfg: VideoConfig) -> VideoStream:
    source_fps = float(cfg.image_dir_fps)
    idx = sample_indices(len(files), source_fps, cfg)

    def frames():
        shape = None
        for i in idx:
            f = files[i]
            im = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if im is None:
                raise VideoError(f"{f}: cannot read this image (corrupt or not an image). Remove or replace it.")
            if shape is None:
                shape = im.shape
            elif im.shape != shape:
                raise VideoError(
                    f"{f}: image size {im.shape[1]}x{im.shape[0]} differs from the first frame "
                    f"{shape[1]}x{shape[0]} ({files[idx[0]].name}). All frames of a sequence must have one size."
                )
            yield int(i), _resize(cv2.cvtColor(im, cv2.COLOR_BGR2RGB), cfg.max_side)

    return VideoStream(path, source_fps, _sampled_fps(source_fps, cfg), len(idx), frames())


# ----------------------------------------------------------------------------- writer
class VideoWriter:
    """Write frames one at a time as an H.264 (libx264, yuv420p) video, atomically.

    The file appears at ``path`` only when the ``with`` block ends without an error (an existing file is
    replaced then). Odd widths/heights are padded by one pixel (edge replicated), as yuv420p needs even
    sizes; the size is set by the first frame.

    Args:
        path: output file; the container is chosen from its suffix (``.mp4``, ``.mkv``, ...).
            Parent directories are created.
        fps: frame rate (frames per second, > 0).
        crf: x264 constant rate factor (0 lossless .. 51 worst; 18 is visually lossless).
    """

    def __init__(self, path: str | Path, fps: float, crf: int = 18):
        if not fps > 0:
            raise ValueError(f"VideoWriter({path}): fps must be > 0, got {fps}")
        self.path, self.fps, self.crf = Path(path), float(fps), int(crf)
        self.count = 0
        self._size: tuple[int, int] | None = None

    def __enter__(self) -> "VideoWriter":
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        import av

        self._out = av.open(str(tmp), mode="w", format=_container_format(self.path))
        self._stream = None
        return self

    def write(self, image: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame (every frame has the first one's size)."""
        import av

        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"VideoWriter({self.path}): frames must be (H, W, 3), got {image.shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"VideoWriter({self.path}): frames must be uint8, got {image.dtype}; "
                             "convert with (x*255).astype(np.uint8)")
        h, w = image.shape[:2]
        if self._stream is None:
            self._size = (h, w)
            self._stream = self._out.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
            self._stream.width, self._stream.height = w + w % 2, h + h % 2
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": str(self.crf)}
        elif (h, w) != self._size:
            raise ValueError(f"VideoWriter({self.path}): frame {self.count} is {w}x{h}, the video is "
                             f"{self._size[1]}x{self._size[0]}")
        if h % 2 or w % 2:
            image = np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        for packet in self._stream.encode(frame):
            self._out.mux(packet)
        self.count += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        err = None
        if exc_type is None:
            try:
                if self._stream is None:
                    raise ValueError(f"VideoWriter({self.path}): no frame was written")
                for packet in self._stream.encode():
                    self._out.mux(packet)
            except BaseException as e:  # noqa: BLE001 - re-raised below, after the clean-up
                err = e
        try:
            self._out.close()
        except Exception as e:  # noqa: BLE001
            err = err or e
        if err is not None:
            self._atomic.__exit__(type(err), err, err.__traceback__)  # removes the temporary file
            raise err
        self._atomic.__exit__(exc_type, exc, tb)
        if exc_type is None:
            h, w = self._size
            log.info("wrote %d frames %dx%d at %.3g fps to %s", self.count, w, h, self.fps, self.path)


def write_video(path: str | Path, frames, fps: float, crf: int = 18) -> Path:
    """Write frames as an H.264 (libx264, yuv420p) video, atomically (see :class:`VideoWriter`).

    Args:
        path: output file (``.mp4``, ``.mkv``, ...); an existing file is replaced only on success.
        frames: (T, H, W, 3) uint8 RGB, T >= 1 (an array, or a frame store: :mod:`foundation.io.frames`).
        fps: frame rate (frames per second, > 0).
        crf: x264 constant rate factor (0 lossless .. 51 worst; 18 is visually lossless).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    shape, dtype = tuple(frames.shape), frames.dtype
    if len(shape) != 4 or shape[-1] != 3 or shape[0] < 1:
        raise ValueError(f"write_video({path}): frames must be (T, H, W, 3) with T >= 1, got {shape}")
    if dtype != np.uint8:
        raise ValueError(f"write_video({path}): frames must be uint8, got {dtype}; convert with (x*255).astype(np.uint8)")
    if not fps > 0:
        raise ValueError(f"write_video({path}): fps must be > 0, got {fps}")
    with VideoWriter(path, fps, crf) as out:
        for im in tqdm(frames, desc=f"write {path.name}", unit="frame", leave=False):
            out.write(im)
    return path


def _container_format(path: Path) -> str | None:
    """FFmpeg muxer name from the suffix (the temp file's suffix may differ in case)."""
    return {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}.get(path.suffix.lower())
