"""Video input and output: read a clip (or a folder of images) into RGB frames, write a clip.

Reading tries ``decord`` first (fast random access with ``get_batch``) and falls back to
PyAV (sequential decode) when decord cannot open the file. A directory of ``.png`` /
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


def _resize(image: np.ndarray, max_side: int | None) -> np.ndarray:
    if max_side is None:
        return image
    h, w = image.shape[:2]
    s = max_side / max(h, w)
    if s >= 1.0:
        return image
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


# ----------------------------------------------------------------------------- readers
def read_video(path: str | Path, cfg: VideoConfig | None = None) -> Frames:
    """Read and sample a clip.

    Args:
        path: a video file (anything FFmpeg decodes), a directory of images, or one image.
        cfg: sampling options; defaults to every frame at source size.

    Returns:
        :class:`Frames` with ``images`` (T, H, W, 3) uint8 RGB.

    Raises:
        VideoError: the path does not exist, cannot be decoded by decord nor PyAV, or
            yields no frame (empty clip, or ``cfg.start`` past the end).
    """
    cfg = cfg or VideoConfig()
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: no such file or directory. Check the video path.")
    if path.is_dir():
        frames = _read_image_dir(path, cfg)
    elif path.suffix.lower() in IMAGE_EXTENSIONS:
        frames = _read_images([path], path, cfg)
    else:
        if path.stat().st_size == 0:
            raise VideoError(f"{path}: the file is empty (0 bytes). Re-export or re-download the video.")
        try:
            frames = _read_decord(path, cfg)
        except _DecordFailed as e:
            log.info("decord cannot read %s (%s); falling back to PyAV", path, e)
            frames = _read_pyav(path, cfg)
    if len(frames) == 0:
        raise VideoError(
            f"{path}: no frames to read (start={cfg.start}; the clip is empty or shorter than that). "
            "Check the file plays, or lower VideoConfig.start."
        )
    log.info(
        "read %d frames %dx%d from %s (source %.3g fps -> %.3g fps)",
        len(frames), frames.size[1], frames.size[0], path, frames.source_fps, frames.fps,
    )
    return frames


class _DecordFailed(Exception):
    """decord could not open or decode the file (try PyAV next)."""


def _read_decord(path: Path, cfg: VideoConfig) -> Frames:
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
            if max(h, w) > cfg.max_side:  # decode straight to the working size (less memory, faster)
                s = cfg.max_side / max(h, w)
                del vr
                vr = decord.VideoReader(str(path), ctx=decord.cpu(0), width=max(1, round(w * s)),
                                        height=max(1, round(h * s)))
    except Exception as e:  # decord raises DECORDError / RuntimeError on bad input
        raise _DecordFailed(str(e)) from e
    if not source_fps > 0 or not math.isfinite(source_fps):
        log.warning("%s: decord reports fps=%s; assuming 30", path, source_fps)
        source_fps = 30.0
    idx = sample_indices(n, source_fps, cfg)
    images = []
    try:
        with tqdm(total=len(idx), desc=f"read {path.name}", unit="frame", leave=False) as bar:
            for i in range(0, len(idx), _BATCH):
                chunk = idx[i : i + _BATCH]
                batch = vr.get_batch(chunk.tolist()).asnumpy()
                images.extend(_resize(im, cfg.max_side) for im in batch)
                bar.update(len(chunk))
    except Exception as e:
        raise _DecordFailed(f"decode failed after {len(images)} of {len(idx)} frames: {e}") from e
    return _frames(images, idx, source_fps, cfg, path)


def _read_pyav(path: Path, cfg: VideoConfig) -> Frames:
    import av

    try:
        container = av.open(str(path))
    except Exception as e:
        raise VideoError(
            f"{path}: not a readable video (decord and PyAV both failed to open it: {e}). "
            "Check that the file is a complete video; re-encode or re-download it."
        ) from e
    images: list[np.ndarray] = []
    indices: list[int] = []
    try:
        with container:
            if not container.streams.video:
                raise VideoError(f"{path}: the file has no video stream. Pass a video file.")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            declared = int(stream.frames or 0)
            rate = stream.average_rate or stream.guessed_rate
            source_fps = float(rate) if rate else 30.0
            wanted = _index_stream(source_fps, cfg)
            nxt = next(wanted, None)
            total = cfg.max_frames if cfg.max_frames is not None else None
            with tqdm(total=total, desc=f"read {path.name}", unit="frame", leave=False) as bar:
                for i, frame in enumerate(container.decode(stream)):
                    if nxt is None:
                        break
                    if i < nxt:
                        continue
                    images.append(_resize(frame.to_ndarray(format="rgb24"), cfg.max_side))
                    indices.append(i)
                    bar.update(1)
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
            f"{path}: corrupt video: PyAV failed to decode it after {len(images)} sampled frames ({e}). "
            "Re-encode it (e.g. ffmpeg -i in.mp4 out.mp4) or re-download it."
        ) from e
    return _frames(images, np.asarray(indices, np.int64), source_fps, cfg, path)


def _natural_key(p: Path):
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", p.name)]


def _read_image_dir(path: Path, cfg: VideoConfig) -> Frames:
    files = sorted(
        (p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS), key=_natural_key
    )
    if not files:
        raise VideoError(
            f"{path}: the directory holds no images ({', '.join(IMAGE_EXTENSIONS)}). "
            "Point to a video file or a folder of frames."
        )
    return _read_images(files, path, cfg)


def _read_images(files: list[Path], path: Path, cfg: VideoConfig) -> Frames:
    source_fps = float(cfg.image_dir_fps)
    idx = sample_indices(len(files), source_fps, cfg)
    images = []
    shape = None
    for i in tqdm(idx, desc=f"read {path.name}", unit="frame", leave=False):
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
        images.append(_resize(cv2.cvtColor(im, cv2.COLOR_BGR2RGB), cfg.max_side))
    return _frames(images, idx, source_fps, cfg, path)


def _frames(images: list[np.ndarray], idx: np.ndarray, source_fps: float, cfg: VideoConfig, path: Path) -> Frames:
    if images:
        arr = np.ascontiguousarray(np.stack(images, 0), dtype=np.uint8)
    else:
        arr = np.zeros((0, 0, 0, 3), np.uint8)
    return Frames(
        images=arr,
        indices=np.asarray(idx, np.int64)[: len(images)],
        fps=_sampled_fps(source_fps, cfg),
        source_fps=float(source_fps),
        path=path,
    )


# ----------------------------------------------------------------------------- writer
def write_video(path: str | Path, frames: np.ndarray, fps: float, crf: int = 18) -> Path:
    """Write frames as an H.264 (libx264, yuv420p) video, atomically.

    Odd widths/heights are padded by one pixel (edge replicated), as yuv420p needs even sizes.

    Args:
        path: output file; the container is chosen from its suffix (``.mp4``, ``.mkv``, ...).
            Parent directories are created. An existing file is replaced only on success.
        frames: (T, H, W, 3) uint8 RGB, T >= 1.
        fps: frame rate (frames per second, > 0).
        crf: x264 constant rate factor (0 lossless .. 51 worst; 18 is visually lossless).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    import av

    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"write_video({path}): frames must be (T, H, W, 3) with T >= 1, got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"write_video({path}): frames must be uint8, got {frames.dtype}; convert with (x*255).astype(np.uint8)")
    if not fps > 0:
        raise ValueError(f"write_video({path}): fps must be > 0, got {fps}")
    _, h, w, _ = frames.shape
    ph, pw = h % 2, w % 2
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format=_container_format(path)) as out:
            stream = out.add_stream("libx264", rate=rate)
            stream.width, stream.height = w + pw, h + ph
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf)}
            for im in tqdm(frames, desc=f"write {path.name}", unit="frame", leave=False):
                if ph or pw:
                    im = np.pad(im, ((0, ph), (0, pw), (0, 0)), mode="edge")
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(im), format="rgb24")
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
    log.info("wrote %d frames %dx%d at %.3g fps to %s", len(frames), w, h, fps, path)
    return path


def _container_format(path: Path) -> str | None:
    """FFmpeg muxer name from the suffix (the temp file's suffix may differ in case)."""
    return {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}.get(path.suffix.lower())
