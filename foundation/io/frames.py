"""A clip's frames on disk, one image file per frame, decoded only when a stage asks for them.

Long clips do not fit in memory (5 min of 1024 x 576 RGB is 16 GB), so the tracking stage streams
decoded frames and their person masks into two stores in its stage directory and every later stage
reads the frames it needs. Layout of a store::

    images/            (or masks/)
      index.json       {"kind", "count", "height", "width", "ext", "digest"}
      000000.jpg       frame 0 (row 0 at the top)
      000001.jpg ...

Kinds: ``"rgb"``: (H, W, 3) uint8 RGB frames, stored as JPEG (quality 95, 4:4:4 chroma: ~45 dB
against the decoded video, ~0.15 MB a frame) or PNG (lossless); ``"mask"``: (H, W) float32 in
[0, 1], stored as 8-bit PNG (1/255 steps) and returned as float32.

:class:`FrameStore` reads like a read-only array: ``len``, ``shape``, ``dtype``, ``store[i]`` (one
frame), ``store[a:b]`` / ``store[[i, j]]`` (stacked), iteration; ``np.asarray(store)`` decodes the
whole clip (avoid on long clips). A plain ``np.ndarray`` is accepted wherever a store is, so small
in-memory clips (tests, synthetic data) need no files: :func:`content_digest` and
:func:`save_frames` take either.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from foundation.io.atomic import atomic_write_json

__all__ = ["FrameStore", "FrameWriter", "FrameSeq", "save_frames", "content_digest", "frame_bytes_estimate"]

KINDS = ("rgb", "mask")
RGB_FORMATS = ("jpg", "png")
JPEG_QUALITY = 95
_INDEX = "index.json"


def _encode(image: np.ndarray, kind: str, ext: str) -> bytes:
    if kind == "mask":
        m = np.asarray(image)
        if m.dtype != np.uint8:
            m = np.round(np.clip(m, 0.0, 1.0) * 255.0).astype(np.uint8)
        ok, buf = cv2.imencode(".png", m, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    else:
        bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
        if ext == "jpg":
            params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
            if hasattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR"):
                params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
            ok, buf = cv2.imencode(".jpg", bgr, params)
        else:
            ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:  # pragma: no cover - cv2 encodes any uint8 image
        raise OSError(f"cannot encode a {image.shape} {kind} frame as .{ext}")
    return buf.tobytes()


class FrameWriter:
    """Append a clip's frames to a new store, encoding and writing them on a background thread.

    Use as a context manager; :meth:`close` (or leaving the ``with``) waits for the writes and writes
    ``index.json``; a store without it is incomplete and :class:`FrameStore` refuses to open it.

    Args:
        directory: the store directory (created; must not hold a store already).
        kind: ``"rgb"`` or ``"mask"``.
        ext: ``"jpg"`` or ``"png"`` for ``"rgb"`` (masks are always PNG).
    """

    def __init__(self, directory: str | Path, kind: str = "rgb", ext: str = "jpg"):
        if kind not in KINDS:
            raise ValueError(f"FrameWriter: kind must be one of {KINDS}, got {kind!r}")
        if kind == "rgb" and ext not in RGB_FORMATS:
            raise ValueError(f"FrameWriter: rgb frames are stored as one of {RGB_FORMATS}, got {ext!r}")
        self.dir = Path(directory)
        if (self.dir / _INDEX).exists():
            raise FileExistsError(f"{self.dir}: a frame store is already there")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.kind, self.ext = kind, ("png" if kind == "mask" else ext)
        self.count = 0
        self.size: tuple[int, int] | None = None
        self.bytes = 0
        self._hash = hashlib.sha1()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="frame-writer")
        self._pending: list[Future] = []
        self._closed: FrameStore | None = None

    def append(self, image: np.ndarray) -> None:
        """Add the next frame: (H, W, 3) uint8 RGB, or an (H, W) mask (float in [0, 1] or uint8 0-255)."""
        image = np.asarray(image)
        shape = image.shape[:2]
        want = 3 if self.kind == "rgb" else 2
        if image.ndim != want or (self.kind == "rgb" and (image.shape[2] != 3 or image.dtype != np.uint8)):
            raise ValueError(f"FrameWriter({self.dir}): a {self.kind} frame must be "
                             f"{'(H, W, 3) uint8' if self.kind == 'rgb' else '(H, W)'}, got {image.shape} {image.dtype}")
        if self.size is None:
            self.size = (int(shape[0]), int(shape[1]))
        elif tuple(shape) != self.size:
            raise ValueError(f"FrameWriter({self.dir}): frame {self.count} is {shape[1]}x{shape[0]}, "
                             f"the store's frames are {self.size[1]}x{self.size[0]}")
        path = self.dir / f"{self.count:06d}.{self.ext}"
        self.count += 1
        self._drain(4)
        self._pending.append(self._pool.submit(self._write, path, image.copy()))

    def _write(self, path: Path, image: np.ndarray) -> bytes:
        data = _encode(image, self.kind, self.ext)
        path.write_bytes(data)
        return data

    def _drain(self, keep: int) -> None:
        """Wait for all but the newest ``keep`` writes (bounded memory), hashing in frame order."""
        while len(self._pending) > keep:
            data = self._pending.pop(0).result()
            self._hash.update(data)
            self.bytes += len(data)

    def close(self) -> "FrameStore":
        """Finish the writes, write ``index.json``; returns the store (again on a second call)."""
        if self._closed is not None:
            return self._closed
        try:
            self._drain(0)
        finally:
            self._pool.shutdown(wait=True)
        h, w = self.size or (0, 0)
        atomic_write_json(self.dir / _INDEX, {"kind": self.kind, "count": self.count, "height": h, "width": w,
                                              "ext": self.ext, "digest": self._hash.hexdigest()[:16]})
        self._closed = FrameStore(self.dir)
        return self._closed

    def __enter__(self) -> "FrameWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._closed is None:  # leave no index: the store stays incomplete (its stage directory is thrown away)
            for f in self._pending:
                f.cancel()
            self._pool.shutdown(wait=True)


class FrameStore:
    """Read-only, array-like view of a store written by :class:`FrameWriter` (see the module doc).

    Attributes:
        dir: the store directory.  kind: ``"rgb"`` or ``"mask"``.  shape: (T, H, W, 3) or (T, H, W).
        dtype: uint8 (rgb) or float32 (mask).  digest: hash of the encoded frames (content identity).
    """

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        index = self.dir / _INDEX
        if not index.exists():
            raise FileNotFoundError(f"{self.dir}: not a complete frame store (no {_INDEX}); re-run the stage "
                                    "that wrote it")
        meta = json.loads(index.read_text())
        self.kind: str = meta["kind"]
        self.ext: str = meta["ext"]
        self.digest: str = meta["digest"]
        n, h, w = int(meta["count"]), int(meta["height"]), int(meta["width"])
        self.shape: tuple[int, ...] = (n, h, w, 3) if self.kind == "rgb" else (n, h, w)
        self.dtype = np.dtype(np.uint8 if self.kind == "rgb" else np.float32)

    ndim = property(lambda self: len(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"FrameStore({str(self.dir)!r}, kind={self.kind!r}, shape={self.shape})"

    def path(self, t: int) -> Path:
        return self.dir / f"{t:06d}.{self.ext}"

    def frame(self, t: int) -> np.ndarray:
        """Frame ``t`` (negative counts from the end): (H, W, 3) uint8 or (H, W) float32."""
        n = len(self)
        if not -n <= t < n:
            raise IndexError(f"{self.dir}: frame {t} outside the store's {n} frames")
        t %= n
        flag = cv2.IMREAD_UNCHANGED if self.kind == "mask" else cv2.IMREAD_COLOR
        im = cv2.imread(str(self.path(t)), flag)
        if im is None:
            raise OSError(f"{self.path(t)}: missing or unreadable frame file; re-run the stage that wrote {self.dir}")
        if self.kind == "mask":
            out = im.astype(np.float32)
            out *= 1.0 / 255.0
            return out
        return cv2.cvtColor(im, cv2.COLOR_BGR2RGB)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):  # store[t, ...] / store[:, ::8, ::8]: frames first, then the rest
            return self[key[0]][(slice(None),) * (0 if np.isscalar(key[0]) else 1) + key[1:]]
        if isinstance(key, (int, np.integer)):
            return self.frame(int(key))
        if isinstance(key, slice):
            idx = range(*key.indices(len(self)))
        else:
            idx = np.asarray(key)
            if idx.dtype == bool:
                idx = np.nonzero(idx)[0]
            idx = idx.astype(np.int64).reshape(-1)
        out = np.empty((len(idx),) + self.shape[1:], self.dtype)
        for k, t in enumerate(idx):
            out[k] = self.frame(int(t))
        return out

    def __iter__(self) -> Iterator[np.ndarray]:
        for t in range(len(self)):
            yield self.frame(t)

    def __array__(self, dtype=None, copy=None):
        a = self[:]
        return a if dtype is None else a.astype(dtype)

    def nbytes_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self.dir.iterdir() if p.is_file())


FrameSeq = np.ndarray | FrameStore
"""Frames in memory or on disk: both index, iterate and report ``shape`` alike."""


def save_frames(directory: str | Path, frames: FrameSeq, kind: str, ext: str = "png") -> FrameStore:
    """Store ``frames`` in ``directory``: a store already there is kept, another store is copied, an array
    is encoded (``ext``: PNG by default, so in-memory frames round-trip exactly)."""
    directory = Path(directory)
    if isinstance(frames, FrameStore):
        if frames.dir.resolve() == directory.resolve():
            return frames
        shutil.copytree(frames.dir, directory, dirs_exist_ok=False)
        return FrameStore(directory)
    with FrameWriter(directory, kind, ext) as w:
        for im in frames:
            w.append(im)
    return FrameStore(directory)


def content_digest(frames: FrameSeq) -> str:
    """A digest of the frames' content: the store's recorded one, or a hash of the array's bytes."""
    if isinstance(frames, FrameStore):
        return frames.digest
    h = hashlib.sha1()
    for im in frames:  # frame by frame: no contiguous copy of the whole clip
        h.update(np.ascontiguousarray(im).tobytes())
    return h.hexdigest()[:16]


def frame_bytes_estimate(image: np.ndarray, kind: str = "rgb", ext: str = "jpg") -> int:
    """Bytes one frame like ``image`` takes in a store (encodes it once)."""
    return len(_encode(image, kind, ext))
